"""Reduced precision: drift and latency of float32 / float16 / int8 detectors (ONNX Runtime CPU).

drift: every method exported at each precision (statistics, thresholds and p-value references
fitted on that precision's graph), evaluated side by side (edgeood.tools.evaluate.evaluate_many):
AUROC / FPR@95 per OOD set, the AUROC drift against float32 and the ID false-alarm rate at each
detector's own threshold.
- digits: the shipped CNN, calibrated on the ID val split (216, labels), ID test (217) vs
  near (digits 6-9) and far (photo patches + noise); AdaSCALE with p_max tuned (as the demo).
- lite0: EfficientNet-Lite0 calibrated on 300 crops of the bundled photographs (seed 0; int8
  activation ranges from the same 300), ID = 200 other crops (seed 1), OOD = their jigsaws
  and 200 texture crops.
latency: EfficientNet-Lite0, the plain classifier and a detector (energy, msp, maxlogit,
featurenorm) at each precision, batch 1 and 16, one thread, timed round-robin; the ratio that
matters is detector / classifier at the same precision (this CPU is not the target: ORT's CPU
provider runs most float16 ops in float32 between Casts).

    python benchmarks/bench_precision.py [--part drift|latency|all] [--models digits,lite0]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import edgeood
from common import save_result  # noqa: E402 (benchmarks/common.py)
from edgeood.tools.evaluate import evaluate_many

ALL = ["energy", "msp", "maxlogit", "react", "scale", "featurenorm", "adascale_a", "adascale_l",
       "weiper_msp", "weiper_kld", "grood", "layer_energy"]
PRECISIONS = {"float32": {}, "float16": {"half": True}, "int8": {"int8": True}}
LATENCY_METHODS = ["energy", "msp", "maxlogit", "featurenorm"]


def print_comparison(rows) -> None:
    """One line per method and OOD set: AUROC per precision, drift against the first, FA."""
    for r in rows:
        print(f"  {r['method']:12s} {r['ood']:9s} AUROC " +
              " / ".join(f"{100 * a:.2f}" for a in r["auroc"]) + "  drift " +
              " / ".join(f"{100 * d:+.2f}" for d in r["auroc_drift"][1:]) + "  FA " +
              " / ".join(f"{100 * f:.1f}" for f in r["false_alarm"]), flush=True)


def digits_setup(tmp: Path):
    from edgeood.zoo import digits
    data = digits.load_data(0)
    np.savez(tmp / "val.npz", images=data.val[0], labels=data.val[1])
    kw = {"recipe": "digits_cnn", "params": {"adascale_a": {"tune": True},
                                            "adascale_l": {"tune": True}}}
    return digits.shipped_model(), tmp / "val.npz", data.test[0], \
        {"near": data.near, "far": data.far}, kw


def lite0_setup(tmp: Path):
    from edgeood.zoo import efficientnet_lite0 as lite0
    test = lite0.photos(200, seed=1)
    kw = {"recipe": lite0.RECIPE, "batch": 16}
    return lite0.model_path(), lite0.photos(300, seed=0), test, \
        {"jigsaw": lite0.jigsaws(test, seed=2), "textures": lite0.textures(200, seed=3)}, kw


def drift(model_name: str, tmp: Path, methods: list[str], precisions=tuple(PRECISIONS),
          int8_method: str = "minmax") -> dict:
    model, calib, test, oods, kw = (digits_setup if model_name == "digits" else lite0_setup)(tmp)
    paths, seconds, details = [], {}, {}
    for prec in precisions:
        flags = {**PRECISIONS[prec], **({"int8_method": int8_method} if prec == "int8" else {})}
        t0 = time.perf_counter()
        res = edgeood.export(model, data=calib, methods=methods, out=tmp / f"{prec}.onnx",
                             **kw, **flags)
        seconds[prec] = time.perf_counter() - t0
        details[prec] = res.metadata.get("precision_detail", {})
        paths.append(res.path)
        print(f"{model_name} {prec}: exported in {seconds[prec]:.1f} s", flush=True)
    res = evaluate_many(paths, test, oods, batch=16)
    out = {"model": model_name, "methods": methods, "export_seconds": seconds,
           "precision_detail": details, "comparison": res["comparison"],
           "false_alarm": {r["precision"]: r["false_alarm"] for r in res["reports"]},
           "id_count": res["id_count"]}
    print_comparison(res["comparison"])
    return out


MODES = [  # (label, precision, params): the precision choices of AdaSCALE's passes / WeiPer
    ("adascale float32 passes", "float32", {}),
    ("adascale float16, passes float16", "float16", {"adascale_a": {"pass_precision": "backbone"},
                                                     "adascale_l": {"pass_precision": "backbone"}}),
    ("adascale int8, second pass int8", "int8", {"adascale_a": {"pass_precision": "backbone"},
                                                 "adascale_l": {"pass_precision": "backbone"}}),
    ("weiper float32", "float32", {}),
    ("weiper float16, float16 projection", "float16",
     {"weiper_msp": {"projection": "backbone"}, "weiper_kld": {"projection": "backbone"}}),
    ("weiper float32, int8 perturbation", "float32",
     {"weiper_msp": {"storage": "int8"}, "weiper_kld": {"storage": "int8"}}),
]


def modes(model_name: str, tmp: Path, families=("adascale", "weiper")) -> dict:
    """AdaSCALE's gradient / second pass and WeiPer's projection in the backbone's precision
    (and WeiPer's int8 perturbation) against float32: what pass_precision / projection
    default to is decided from these drifts."""
    model, calib, test, oods, kw = (digits_setup if model_name == "digits" else lite0_setup)(tmp)
    out = {}
    for family, methods in (("adascale", ["adascale_a", "adascale_l"]),
                            ("weiper", ["weiper_msp", "weiper_kld"])):
        if family not in families:
            continue
        paths, labels = [], []
        for label, prec, params in MODES:
            if not label.startswith(family):
                continue
            merged = {m: {**kw.get("params", {}).get(m, {}), **params.get(m, {})}
                      for m in methods}
            res = edgeood.export(model, data=calib, methods=methods, out=tmp / f"{len(paths)}.onnx",
                                 **{**kw, "params": merged}, **PRECISIONS[prec])
            paths.append(res.path)
            labels.append(label)
            print(f"{model_name}: {label} exported", flush=True)
        res = evaluate_many(paths, test, oods, batch=16)
        out[family] = {"variants": labels, "comparison": res["comparison"]}
        print_comparison(res["comparison"])
    return out


def latency(tmp: Path, rounds: int, per_round: int, batches) -> dict:
    from common import lite0_graph, session, tapped_session  # noqa: F401 (benchmarks/)

    from edgeood.data import open_source
    from edgeood.graph.model import to_model
    from edgeood.graph.precision import reduce_precision
    from edgeood.tools.profile import round_robin
    from edgeood.zoo import efficientnet_lite0 as lite0
    src, graph, head = lite0_graph()
    calib = lite0.photos(300, seed=0)
    res32 = edgeood.export(src, data=calib, methods=LATENCY_METHODS, recipe=lite0.RECIPE,
                           out=tmp / "lat32.onnx", batch=16)
    pre = edgeood.load(res32.path).preprocess
    variants = {}
    for prec, flags in PRECISIONS.items():
        if prec == "float32":
            g = graph.copy()
        else:
            g, _, _ = reduce_precision(graph, head, prec, open_source(calib), pre, 16)
        g.outputs = [g.tensors()[head.logits]]
        variants[f"classifier:{prec}"] = session(to_model(g).SerializeToString()).run
        det = res32 if prec == "float32" else edgeood.export(
            src, data=calib, methods=LATENCY_METHODS, recipe=lite0.RECIPE,
            out=tmp / f"lat_{prec}.onnx", batch=16, **flags)
        variants[f"detector:{prec}"] = session(det.path).run
    out = {}
    for b in batches:
        x = np.random.default_rng(0).standard_normal((b, 3, 224, 224)).astype(np.float32)
        samples = round_robin({k: (lambda f=f, x=x: f(x)) for k, f in variants.items()}, rounds,
                              per_round)
        lat = {k: {"min_ms": float(np.min(s)), "p50_ms": float(np.median(s)),
                   "p90_ms": float(np.percentile(s, 90)), "n": len(s)} for k, s in samples.items()}
        ratios = {}
        for prec in PRECISIONS:
            c, d = lat[f"classifier:{prec}"], lat[f"detector:{prec}"]
            ratios[prec] = {
                "detector_over_classifier": {"min": d["min_ms"] / c["min_ms"],
                                             "p50": d["p50_ms"] / c["p50_ms"]},
                "classifier_over_float32": c["p50_ms"] / lat["classifier:float32"]["p50_ms"],
                "detector_over_float32": d["p50_ms"] / lat["detector:float32"]["p50_ms"]}
        out[str(b)] = {"latency": lat, "ratios": ratios}
        print(f"batch {b}:", flush=True)
        for prec, r in ratios.items():
            print(f"  {prec:8s} classifier p50 {lat[f'classifier:{prec}']['p50_ms']:.2f} ms, "
                  f"detector {lat[f'detector:{prec}']['p50_ms']:.2f} ms, detector/classifier "
                  f"{r['detector_over_classifier']['p50']:.3f} (min {r['detector_over_classifier']['min']:.3f}), "
                  f"classifier vs float32 {r['classifier_over_float32']:.2f}x", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="all", choices=["drift", "modes", "latency", "all"])
    ap.add_argument("--models", default="digits,lite0")
    ap.add_argument("--methods", default=",".join(ALL))
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--int8-method", default="minmax")
    ap.add_argument("--families", default="adascale,weiper", help="--part modes: which")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--per-round", type=int, default=8)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--out", default="benchmarks/results/precision.json")
    args = ap.parse_args()
    path = Path(args.out)
    result = json.loads(path.read_text()) if path.is_file() else {}
    result.update({"runtime": "onnxruntime CPU", "intra_op_threads_latency": 1})
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("drift", "all"):
            for name in args.models.split(","):
                folder = Path(tmp) / name
                folder.mkdir()
                key = name if args.int8_method == "minmax" else f"{name}:{args.int8_method}"
                result.setdefault("drift", {})[key] = drift(
                    name, folder, args.methods.split(","), args.precisions.split(","),
                    args.int8_method)
                path.parent.mkdir(parents=True, exist_ok=True)
                save_result(path, result)
        if args.part in ("modes", "all"):
            for name in args.models.split(","):
                folder = Path(tmp) / f"modes_{name}"
                folder.mkdir()
                result.setdefault("modes", {}).setdefault(name, {}).update(
                    modes(name, folder, args.families.split(",")))
                save_result(path, result)
        if args.part in ("latency", "all"):
            result["latency_lite0"] = latency(Path(tmp), args.rounds, args.per_round, args.batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_result(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
