"""Latency of EfficientNet-Lite0 on ONNX Runtime CPU: the plain classifier, the folded detector
with each method and with all six, and the usual alternative (the classifier also emits z / logits / the block,
the score is computed in NumPy on the host). All variants are timed round-robin in one run, so
ratios are measured side by side on the same machine state. The baseline "classifier" is the
constant-folded graph that every variant starts from; "classifier_as_exported" is the raw
torch export (it still computes its padding amounts at run time). Also reports the nodes each
head adds after ONNX Runtime's extended optimisations (each one a kernel launch on a GPU).

    python benchmarks/bench_fold.py [--rounds 15] [--per-round 10] [--out benchmarks/results/fold_lite0.json]
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import edgeood
from edgeood.methods import ModelInfo, from_metadata
from edgeood.runtime.onnxruntime.node_count import added_nodes
from edgeood.tools.profile import round_robin
from common import THREADS, lite0_graph, parser, save_result, session, tapped_model, tapped_session
from edgeood.zoo import efficientnet_lite0 as lite0

METHODS = ["energy", "msp", "maxlogit", "react", "scale", "featurenorm"]


def build_variants(tmp: Path, batch_sizes, nodes: dict):
    """The timed variants; fills `nodes` with the nodes each head adds after ONNX Runtime's
    extended optimisations (edgeood.runtime.onnxruntime.node_count), per method and for all six."""
    src, graph, head = lite0_graph()
    calib = lite0.photos(100, seed=0)
    # baseline: the same constant-folded graph every variant starts from, logits only
    classifier = tapped_model(graph, [head.logits])
    variants = {"classifier": {"run": session(classifier).run},
                "classifier_as_exported": {"run": session(src).run}}
    for m in METHODS + ["all_six"]:
        chosen = METHODS if m == "all_six" else [m]
        res = edgeood.export(src, data=calib, methods=chosen, recipe=lite0.RECIPE,
                             out=tmp / f"{m}.onnx", batch=16)
        nodes[m] = added_nodes(str(res.path), classifier)
        variants[f"folded:{m}"] = {"run": session(res.path).run}
        if m == "all_six":
            continue
        method = from_metadata(m, res.metadata["methods"][m], ModelInfo(head))
        keys = ["logits"] + [k for k in method.taps() if k != "logits"]
        names = [{"logits": head.logits, "z": head.z}.get(k, k) for k in keys]
        host = tapped_session(graph, names)

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
    args = parser("benchmarks/results/fold_lite0.json", 10, 10).parse_args()
    result = {"model": "efficientnet_lite0", "runtime": "onnxruntime CPU",
              "intra_op_threads": THREADS, "batches": {}}
    with tempfile.TemporaryDirectory() as tmp:
        nodes: dict = {}
        variants = build_variants(Path(tmp), args.batch, nodes)
        result["added_nodes"] = nodes
        print("nodes added after ORT_ENABLE_EXTENDED: " +
              ", ".join(f"{m} {v['added']}" for m, v in nodes.items()))
        for b in args.batch:
            x = np.random.default_rng(0).standard_normal((b, 3, 224, 224)).astype(np.float32)
            lat = measure(variants, x, args.rounds, args.per_round)
            ratios = {m: {"folded_over_classifier": ratio(lat, f"folded:{m}", "classifier"),
                          "host_over_classifier": ratio(lat, f"host:{m}", "classifier"),
                          "folded_over_host": ratio(lat, f"folded:{m}", f"host:{m}")}
                      for m in METHODS}
            ratios["all_six"] = {"folded_over_classifier": ratio(lat, "folded:all_six",
                                                                 "classifier")}
            result["batches"][str(b)] = {"latency": lat, "ratios": ratios}
            c = lat["classifier"]
            print(f"batch {b}: classifier min {c['min_ms']:.2f} ms, p50 {c['p50_ms']:.2f} ms "
                  "(ratios: by min / by p50)")
            for m, r in ratios.items():
                print(f"  {m:12s} " + "  ".join(
                    f"{k.replace('_over_', '/')} {v['min']:.3f}/{v['p50']:.3f}" for k, v in r.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
