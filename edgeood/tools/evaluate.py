"""Evaluate a detector on ID vs OOD sets: metrics per method and OOD set, and the measured ID
false-alarm rate at the stored thresholds."""
from __future__ import annotations

from contextlib import nullcontext

from edgeood.data import open_source
from edgeood.stats.metrics import false_alarm_rate, summary
from edgeood.runtime import Detector, load


def evaluate(detector, id_data, ood: dict, batch: int = 32, progress: bool = False,
             id_name: str | None = None, strict: bool = False) -> dict:
    """detector: a path or a Detector; id_data / ood values: anything open_source accepts
    (strict: stop at the first unreadable image instead of skipping it)."""
    with _opened(detector) as det:
        return _evaluate(det, id_data, ood, batch, progress, id_name, strict)


def _opened(detector):
    """A Detector given is the caller's to close; one loaded from a path here is closed here."""
    return nullcontext(detector) if isinstance(detector, Detector) else load(detector)


def _evaluate(det: Detector, id_data, ood: dict, batch: int, progress: bool,
              id_name: str | None, strict: bool = False) -> dict:
    id_src = open_source(id_data, id_name, strict=strict)
    res_id = det.run_source(id_src, batch, progress)
    report = {"detector": str(det.path), "id": id_src.name, "id_count": len(id_src),
              "tpr": det.metadata.get("tpr", 0.95), "results": [], "false_alarm": {}}
    for name, data in ood.items():
        src = open_source(data, name, strict=strict)
        res = det.run_source(src, batch, progress)
        for m in det.methods:
            report["results"].append({"method": m, "ood": name, "ood_count": len(src),
                                      **summary(res_id.scores[m], res.scores[m], report["tpr"])})
    for m, thr in det.thresholds.items():
        report["false_alarm"][m] = false_alarm_rate(res_id.scores[m], thr)
    if res_id.labels is not None and id_src.labels is not None:
        report["id_accuracy"] = float((res_id.labels == id_src.labels).mean())
    report["below_chance"] = below_chance(report["results"])
    return report


def below_chance(results: list[dict]) -> list[dict]:
    """The (method, OOD set) pairs whose AUROC is below 0.5: there the score ranks the OOD
    images as more in-distribution than the ID images (worse than a coin)."""
    return [{"method": r["method"], "ood": r["ood"], "auroc": r["auroc"]} for r in results
            if r["auroc"] < 0.5]


def below_chance_hint(pairs: list[dict]) -> str | None:
    """One line naming every below-chance pair, or None."""
    if not pairs:
        return None
    where = ", ".join(f"{p['method']} on {p['ood']} ({100 * p['auroc']:.2f})" for p in pairs)
    return (f"hint: AUROC below 50 for {where}: here the score ranks OOD above ID (OOD images "
            "look more in-distribution than the ID images); pick another method for this "
            "data (--primary) or check that --id and --ood are not swapped")


def evaluate_many(detectors: list, id_data, ood: dict, batch: int = 32, progress: bool = False,
                  id_name: str | None = None, keep_scores: bool = False,
                  strict: bool = False) -> dict:
    """Several detectors (e.g. one model at float32 / float16 / int8) on the same ID and OOD
    sets: each one's report (as evaluate), and per method and OOD set the side-by-side
    AUROC / FPR@95 with the drift against the first detector, and each detector's measured
    ID false-alarm rate at its own threshold. keep_scores: the raw scores too (for plots)."""
    id_src = open_source(id_data, id_name, strict=strict)
    oods = {name: open_source(data, name, strict=strict) for name, data in ood.items()}
    labels, reports, scores = [], [], []
    for d in detectors:
        with _opened(d) as det:
            res_id = det.run_source(id_src, batch, progress)
            res = {name: det.run_source(src, batch, progress) for name, src in oods.items()}
        tpr = det.metadata.get("tpr", 0.95)
        rep = {"detector": str(det.path), "precision": det.metadata.get("precision", "float32"),
               "source_sha256": (det.metadata.get("source") or {}).get("sha256"),
               "id": id_src.name, "id_count": len(id_src), "tpr": tpr, "results": [],
               "false_alarm": {m: false_alarm_rate(res_id.scores[m], thr)
                               for m, thr in det.thresholds.items()},
               "thresholds": det.thresholds}
        for name, r in res.items():
            for m in det.methods:
                rep["results"].append({"method": m, "ood": name, "ood_count": len(oods[name]),
                                       **summary(res_id.scores[m], r.scores[m], tpr)})
        if id_src.labels is not None:
            rep["id_accuracy"] = float((res_id.labels == id_src.labels).mean())
        rep["below_chance"] = below_chance(rep["results"])
        reports.append(rep)
        labels.append(_label(rep, labels))
        scores.append({"id": res_id.scores, **{n: r.scores for n, r in res.items()}})
    rows = []
    # drift only between variants of one model (same source sha256: float32 / float16 / int8)
    same = len({r["source_sha256"] for r in reports}) == 1 and reports[0]["source_sha256"]
    first = {(r["method"], r["ood"]): r for r in reports[0]["results"]}
    for (m, o), r0 in first.items():
        row = {"method": m, "ood": o, "auroc": [], "fpr95": [], "false_alarm": [],
               "auroc_drift": []}
        for rep in reports:
            r = next((x for x in rep["results"] if x["method"] == m and x["ood"] == o), None)
            row["auroc"].append(None if r is None else r["auroc"])
            row["fpr95"].append(None if r is None else r["fpr95"])
            row["false_alarm"].append(rep["false_alarm"].get(m))
            row["auroc_drift"].append(None if r is None or not same else
                                      r["auroc"] - r0["auroc"])
        rows.append(row)
    out = {"detectors": labels, "same_source": bool(same), "id": id_src.name,
           "id_count": len(id_src),
           "reports": reports, "comparison": rows}
    if keep_scores:
        out["scores"] = scores
    return out


def _label(report: dict, taken: list[str]) -> str:
    """A short column label: the precision, made unique with the file name when needed."""
    from pathlib import Path
    label = report["precision"]
    if label in taken:
        label = f"{label} ({Path(report['detector']).name})"
    return label
