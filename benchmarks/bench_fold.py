"""Latency of EfficientNet-Lite0 on ONNX Runtime CPU: the plain classifier, the folded detector
with each method, and the usual alternative (the classifier also emits z / logits / the block,
the score is computed in NumPy on the host). All variants are timed round-robin in one run, so
ratios are measured side by side on the same machine state. The baseline "classifier" is the
constant-folded graph that every variant starts from; "classifier_as_exported" is the raw
torch export (it still computes its padding amounts at run time).

    python benchmarks/bench_fold.py [--rounds 15] [--per-round 10] [--out benchmarks/results/fold_lite0.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx

import edgeood
from edgeood.graph.head import find_head
from edgeood.graph.model import prepare, to_model
from edgeood.graph.taps import tapped
from edgeood.methods import ModelInfo, from_metadata
from edgeood.profile import round_robin
from edgeood.runtime.ort_backend import OrtBackend as _Ort

# Many sessions timed round-robin: idle thread pools must not spin and steal the CPU.
NO_SPIN = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


def OrtBackend(model):
    # one intra-op thread: on a shared 2-core machine, thread-pool wake-ups dominate the noise
    return _Ort(model, threads=THREADS, config=NO_SPIN)


THREADS = 1
from edgeood.zoo import efficientnet_lite0 as lite0

METHODS = ["energy", "msp", "maxlogit", "react", "scale", "featurenorm"]


def build_variants(tmp: Path, batch_sizes):
    src = lite0.model_path()
    calib = lite0.photos(100, seed=0)
    graph = prepare(onnx.load(str(src)))
    head = find_head(graph)
    # baseline: the same constant-folded graph every variant starts from, logits only
    variants = {"classifier": {"run": OrtBackend(to_model(tapped(graph, [head.logits]))
                                                 .SerializeToString()).run},
                "classifier_as_exported": {"run": OrtBackend(src).run}}
    for m in METHODS:
        res = edgeood.export(src, data=calib, methods=[m], recipe=lite0.RECIPE,
                             out=tmp / f"{m}.onnx", batch=16)
        variants[f"folded:{m}"] = {"run": OrtBackend(res.path).run}
        method = from_metadata(m, res.metadata["methods"][m], ModelInfo(head))
        keys = ["logits"] + [k for k in method.taps() if k != "logits"]
        names = [{"logits": head.logits, "z": head.z}.get(k, k) for k in keys]
        host = OrtBackend(to_model(tapped(graph, names)).SerializeToString())

        def run_host(x, host=host, names=names, keys=keys, method=method):
            out = host.run(x, names)
            return method.reference({k: out[n] for k, n in zip(keys, names)})
        variants[f"host:{m}"] = {"run": run_host}
    return variants


def measure(variants, x, rounds: int, per_round: int):
    samples = round_robin({k: (lambda v=v: v["run"](x)) for k, v in variants.items()},
                          rounds, per_round)
    return {k: {"min_ms": float(np.min(s)), "p50_ms": float(np.median(s)),
                "p90_ms": float(np.percentile(s, 90)), "mean_ms": float(np.mean(s)), "n": len(s)}
            for k, s in samples.items()}


def ratio(lat, a, b):
    """a / b by minimum latency (interference only adds time) and by median."""
    return {"min": lat[a]["min_ms"] / lat[b]["min_ms"], "p50": lat[a]["p50_ms"] / lat[b]["p50_ms"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=10)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--out", default="benchmarks/results/fold_lite0.json")
    args = ap.parse_args()
    result = {"model": "efficientnet_lite0", "runtime": "onnxruntime CPU",
              "intra_op_threads": THREADS, "batches": {}}
    with tempfile.TemporaryDirectory() as tmp:
        variants = build_variants(Path(tmp), args.batch)
        for b in args.batch:
            x = np.random.default_rng(0).standard_normal((b, 3, 224, 224)).astype(np.float32)
            lat = measure(variants, x, args.rounds, args.per_round)
            ratios = {m: {"folded_over_classifier": ratio(lat, f"folded:{m}", "classifier"),
                          "host_over_classifier": ratio(lat, f"host:{m}", "classifier"),
                          "folded_over_host": ratio(lat, f"folded:{m}", f"host:{m}")}
                      for m in METHODS}
            result["batches"][str(b)] = {"latency": lat, "ratios": ratios}
            c = lat["classifier"]
            print(f"batch {b}: classifier min {c['min_ms']:.2f} ms, p50 {c['p50_ms']:.2f} ms "
                  "(ratios: by min / by p50)")
            for m, r in ratios.items():
                print(f"  {m:12s} " + "  ".join(
                    f"{k.replace('_over_', '/')} {v['min']:.3f}/{v['p50']:.3f}" for k, v in r.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
