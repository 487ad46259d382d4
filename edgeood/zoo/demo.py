"""`edgeood demo`: the main job on the embedded defaults.

1. Digits benchmark: the shipped digits CNN (or, with retrain, one trained here), exported with
   every method (each with the demo parameters its Presentation declares), calibrated on the ID
   val split, evaluated on ID test vs near-OOD (digits 6-9) and far-OOD (photo patches, noise),
   plus the variants the methods declare; the report as a Markdown table in digits_table.md
   (the README's table is this file's content).
2. EfficientNet-Lite0 (ImageNet weights): export with the methods whose Presentation says
   lite0, calibrate on crops of bundled photographs, profile plain classifier vs detector.
The method lists come from the registry (edgeood.methods.registry), in its listing order.
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
from edgeood.methods.presentation import presentation
from edgeood.methods.registry import registry

# OOD set name in the report -> its column prefix in the Markdown table
DIGITS_OOD = {"near (digits 6-9)": "near", "far (photos+noise)": "far"}


def digits_methods() -> list[str]:
    """The methods of the digits detector: every registered one its Presentation keeps in
    the demo."""
    return [n for n, cls in registry().items() if presentation(cls).demo]


def digits_params() -> dict[str, dict]:
    """The digits detector's parameters, as each method's Presentation declares them."""
    return {n: dict(p) for n in digits_methods() if (p := presentation(n).demo_params)}


def lite0_methods() -> list[str]:
    """The methods of the EfficientNet-Lite0 detector."""
    return [n for n, cls in registry().items() if presentation(cls).lite0]


_LISTS = {"DIGITS_METHODS": digits_methods, "DIGITS_PARAMS": digits_params,
          "LITE0_METHODS": lite0_methods}


def __getattr__(name):
    """DIGITS_METHODS, DIGITS_PARAMS, LITE0_METHODS: the lists above, computed on use."""
    if name in _LISTS:
        return _LISTS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    res = export(model, data=val, methods=digits_methods(), recipe="digits_cnn",
                 params=digits_params(), out=out / "digits.detector.onnx", progress=progress)
    echo(f"wrote {res.path}")
    oods = {name: out / f"digits_{short}_ood.npz" for name, short in DIGITS_OOD.items()}
    report = evaluate(res.path, out / "digits_id_test.npz", oods, progress=progress,
                      id_name="digits 0-5 test")
    variants = [(v.label, method, v.model, {method: v.params} if v.params else {})
                for method, entry in res.metadata["methods"].items()
                for v in presentation(method).demo_variants(entry)]
    for label, method, kind, params in variants:
        source = digits.shipped_model(regularised=True) if kind == "regularised" else model
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
    res = export(model, data=calib, methods=lite0_methods(), recipe=lite0.RECIPE,
                 out=out / "efficientnet_lite0.detector.onnx", progress=progress)
    notes, fields = [], {}
    for method, entry in res.metadata["methods"].items():
        note, more = presentation(method).lite0_report(entry)
        notes += [note] if note else []
        fields.update(more)
    echo(f"wrote {res.path}" + "".join(f"; {n}" for n in notes))
    prof = {}
    for name, path in (("classifier", model), ("detector", res.path)):
        # 100 timed runs: the fewest that put one run above p99 (tools/profile.samples_for)
        prof[name] = profile(path, batch=1, warmup=5, iterations=100)
        lat = prof[name]["latency_ms"]
        echo(f"EfficientNet-Lite0 {name}: p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, "
             f"p99 {lat['p99']:.2f} ms (batch 1, ONNX Runtime CPU)")
    ratio = prof["detector"]["latency_ms"]["p50"] / prof["classifier"]["latency_ms"]["p50"]
    echo(f"detector / classifier p50 latency: {ratio:.3f}")
    return {"detector": str(res.path), **fields, "profile": prof, "p50_ratio": ratio,
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
