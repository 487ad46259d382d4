"""`edgeood demo`: the main job on the embedded defaults.

1. Digits benchmark: the shipped digits CNN (or, with retrain, one trained here), exported with
   every method (AdaSCALE with p_max tuned against jigsaw images), calibrated on the ID val split,
   evaluated on ID test vs near-OOD (digits 6-9) and far-OOD (photo patches, noise); the report
   as a Markdown table in digits_table.md (the README's table is this file's content).
2. EfficientNet-Lite0 (ImageNet weights): export with the logit methods and FeatureNorm,
   calibrate on crops of bundled photographs, profile plain classifier vs detector.
Writes the detectors, the data as .npz (for trying the CLI on them), digits_table.md and
demo_result.json.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgeood.api import export
from edgeood.tools.evaluate import evaluate
from edgeood.artifact.metadata import dumps

DIGITS_METHODS = ["energy", "msp", "maxlogit", "react", "scale", "featurenorm", "adascale_a",
                  "adascale_l", "weiper_msp", "weiper_kld", "grood", "layer_energy"]
BANK_FRACTION = 0.1  # GROOD's reduced banks in the demo: 10% of the full bank's rows
# AdaSCALE's p_max chosen against jigsaw pseudo-OOD (its defaults invert on this small CNN)
DIGITS_PARAMS = {"adascale_a": {"tune": True}, "adascale_l": {"tune": True}}
LITE0_METHODS = ["energy", "msp", "maxlogit", "featurenorm"]
# OOD set name in the report -> its column prefix in the Markdown table
DIGITS_OOD = {"near (digits 6-9)": "near", "far (photos+noise)": "far"}


def digits_table(report: dict) -> str:
    """The digits report as the README's Markdown table: per method (in report order; primary
    marked, AdaSCALE's tuned p_max noted) AUROC and FPR@95 per OOD set and the ID false-alarm
    rate at the stored threshold, all percent with 2 decimals."""
    sets = list(dict.fromkeys(r["ood"] for r in report["results"]))
    cells = {(r["method"], r["ood"]): r for r in report["results"]}
    methods = list(dict.fromkeys(r["method"] for r in report["results"]))
    notes = report.get("notes", {})
    head = ["method"] + [f"{DIGITS_OOD.get(s, s)} {k}" for s in sets for k in ("AUROC", "FPR@95")]
    head.append("ID false alarms")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        label = m + "".join(f" ({n})" for n in
                            (["primary"] if m == report.get("primary") else []) + notes.get(m, []))
        row = [label] + [f"{100 * cells[m, s][k]:.2f}" for s in sets for k in ("auroc", "fpr95")]
        fa = report.get("false_alarm", {}).get(m)
        row.append("-" if fa is None else f"{100 * fa:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def run_digits(out: Path, progress: bool, echo, retrain: bool = False) -> dict:
    from edgeood.zoo import digits
    t0 = time.perf_counter()
    data = digits.load_data(seed=0)
    model = digits.model_path(seed=0, data=data, retrain=retrain)
    if retrain:
        echo(f"digits CNN: using a model retrained on this machine, {model} "
             f"({time.perf_counter() - t0:.1f} s incl. data); its numbers will differ from the "
             "README's, which come from the shipped model")
    else:
        echo(f"digits CNN: shipped model {model}")
    arrays = {"id_val": data.val, "id_test": data.test}
    for name, (x, y) in arrays.items():
        np.savez(out / f"digits_{name}.npz", images=x, labels=y)
    np.savez(out / "digits_near_ood.npz", images=data.near)
    np.savez(out / "digits_far_ood.npz", images=data.far)
    val = out / "digits_id_val.npz"  # with labels (GROOD's class prototypes)
    res = export(model, data=val, methods=DIGITS_METHODS, recipe="digits_cnn",
                 params=DIGITS_PARAMS, out=out / "digits.detector.onnx", progress=progress)
    echo(f"wrote {res.path}")
    oods = {name: out / f"digits_{short}_ood.npz" for name, short in DIGITS_OOD.items()}
    report = evaluate(res.path, out / "digits_id_test.npz", oods, progress=progress,
                      id_name="digits 0-5 test")
    rows = max(1, round(BANK_FRACTION * res.metadata["methods"]["grood"]["bank_entries"]))
    variants = [(f"grood ({BANK_FRACTION:.0%} {how} bank, {rows} rows)", "grood", model,
                 {"grood": {"bank_size": rows, "bank_reduce": how}})
                for how in ("random", "kmeans")]
    variants.append(("layer_energy (regularised CNN)", "layer_energy",
                     digits.shipped_model(regularised=True), {}))
    for label, method, source, params in variants:
        extra = export(source, data=val, methods=[method], recipe="digits_cnn", params=params,
                       out=out / f"digits.{label.split()[0]}.{len(report['results'])}.onnx",
                       progress=progress)
        part = evaluate(extra.path, out / "digits_id_test.npz", oods, progress=progress)
        report["results"] += [{**r, "method": label} for r in part["results"]]
        report["false_alarm"][label] = part["false_alarm"][method]
    report["primary"] = res.metadata["primary"]
    report["notes"] = {m: [f"`--tune`: p_max {d['tuning']['p_max']:g}"]
                       for m, d in res.metadata["methods"].items() if "tuning" in d}
    report["model"] = {"path": str(model), "retrained": retrain}
    table = out / "digits_table.md"
    table.write_text(digits_table(report), encoding="utf-8")
    report["table"] = str(table)
    echo(f"wrote {table} (" + ("retrained model: not the README's numbers)" if retrain
                               else "the README's digits table)"))
    report["plots"] = write_demo_plots(res.path, out, oods, echo, progress)
    report["seconds"] = time.perf_counter() - t0
    return report


def write_demo_plots(detector: Path, out: Path, oods: dict, echo, progress: bool) -> list[str]:
    """Score histograms and ROC curves of the digits detector (edgeood.tools.report) in out/plots;
    skipped with a line when matplotlib is missing (the plot extra)."""
    from edgeood.errors import EdgeoodError
    from edgeood.tools.evaluate import evaluate_many
    try:
        from edgeood.tools.report import _pyplot, write_plots
        _pyplot()
    except EdgeoodError as exc:
        echo(f"plots skipped: {exc}")
        return []
    res = evaluate_many([detector], out / "digits_id_test.npz", oods, progress=progress,
                        keep_scores=True)
    written = [str(p) for p in write_plots(res, out / "plots")]
    echo(f"wrote {len(written)} plots in {out / 'plots'}")
    return written


def run_lite0(out: Path, progress: bool, echo) -> dict:
    from edgeood.tools.profile import profile
    from edgeood.zoo import efficientnet_lite0 as lite0
    t0 = time.perf_counter()
    model = lite0.model_path()
    calib = lite0.photos(120, seed=0)
    res = export(model, data=calib, methods=LITE0_METHODS, recipe=lite0.RECIPE,
                 out=out / "efficientnet_lite0.detector.onnx", progress=progress)
    fn = res.metadata["methods"]["featurenorm"]
    echo(f"wrote {res.path}; FeatureNorm selected {fn['selected_block']}")
    prof = {}
    for name, path in (("classifier", model), ("detector", res.path)):
        prof[name] = profile(path, batch=1, warmup=5, iterations=30)
        lat = prof[name]["latency_ms"]
        echo(f"EfficientNet-Lite0 {name}: p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, "
             f"p99 {lat['p99']:.2f} ms (batch 1, ONNX Runtime CPU)")
    ratio = prof["detector"]["latency_ms"]["p50"] / prof["classifier"]["latency_ms"]["p50"]
    echo(f"detector / classifier p50 latency: {ratio:.3f}")
    return {"detector": str(res.path), "norm_ratios": fn["norm_ratios"],
            "selected_block": fn["selected_block"], "profile": prof, "p50_ratio": ratio,
            "seconds": time.perf_counter() - t0}


def run_demo(out: Path, lite0: bool = True, progress: bool = True, echo=print, show=None,
             retrain: bool = False) -> dict:
    """retrain: train the digits CNN here (cached) instead of using the shipped one."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"digits": run_digits(out, progress, echo, retrain)}
    if show:
        show(result["digits"])
    if lite0:
        result["efficientnet_lite0"] = run_lite0(out, progress, echo)
    path = out / "demo_result.json"
    path.write_text(dumps(result))
    echo(f"wrote {path}")
    echo(f"next: edgeood run {out / 'digits.detector.onnx'} {out / 'digits_far_ood.npz'}")
    return result
