"""AdaSCALE latency on EfficientNet-Lite0 (ONNX Runtime CPU, one thread, no spinning): the plain
classifier, the folded AdaSCALE-A / -L detectors (forward + input gradient + second forward in
one graph), and a PyTorch eager implementation of the same score (one thread). Timed round-robin
in one run.

    python benchmarks/bench_adascale.py [--rounds 8] [--per-round 5] [--batch 1 8 16]

The JSON also holds ONNX Runtime's per-op-type profile of the folded adascale_a at batch 1
(SessionOptions.enable_profiling: per node the median kernel time over the profiled runs,
summed per op type), next to the classifier's.
"""
from __future__ import annotations

import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

import edgeood
from edgeood.runtime.onnxruntime.node_count import added_nodes
from edgeood.tools.profile import round_robin
from common import NO_SPIN, THREADS, lite0_graph, parser, save_result, session, tapped_model
from edgeood.zoo import efficientnet_lite0 as lite0

PROFILE_RUNS = 20
# the least-|g| selections side by side: one unsorted TopK of n (the default), TopK rounds of
# <= 3839 (the graph TensorRT parses as it is), the 32-step threshold search
VARIANTS = {"adascale_a": {}, "adascale_l": {}, "adascale_a:rounds": {"topk_limit": 3839},
            "adascale_a:search": {"selection": "search"}}


def torch_adascale(net, x, ref, variant, p_min=60.0, p_max=90.0, o=0.05, eps=0.5, lam=10.0):
    """The same score in PyTorch eager (float32), as a user would write it on the host."""
    x = x.clone().requires_grad_()
    z = net.extract_features(x).mean(dim=(2, 3))
    logits = net._fc(z)
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    g = x.grad
    with torch.no_grad():
        flat = g.abs().flatten(1)
        n = int(flat.shape[1] * o)
        mask = torch.zeros_like(flat).scatter_(1, flat.topk(n, largest=False).indices, 1.0)
        xp = x + eps * g.sign() * mask.view_as(x)
        zp = net.extract_features(xp).mean(dim=(2, 3))
        d = z.shape[1]
        k1, k2 = int(d * 1 / 100), int(d * 5 / 100)
        idx = z.topk(k2, dim=1).indices
        q = lam * (z - zp).abs().gather(1, idx[:, :k1]).sum(1) + zp.relu().gather(1, idx).sum(1)
        ecdf = torch.searchsorted(ref, q, right=True).float() / len(ref)
        p = p_min + (1 - ecdf) * (p_max - p_min)
        k = d - torch.round(d * p / 100)
        kmax = int(d - round(d * p_min / 100))
        a = z.relu()
        top = a.topk(kmax, dim=1).values
        keep = (torch.arange(kmax)[None, :] < k[:, None]).float()
        r = a.sum(1) / (top * keep).sum(1)
        out = (logits - net._fc.bias) * r.exp()[:, None] + net._fc.bias if variant == "A" \
            else logits * (r * r)[:, None]
        return torch.logsumexp(out, dim=1)


def _options():
    """ONNX Runtime session options as the timed sessions have them (benchmarks/common.py):
    THREADS intra-op threads, no spinning."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.log_severity_level = 3
    for key, value in NO_SPIN.items():
        opts.add_session_config_entry(key, value)
    return opts


def op_profile(model, x, runs: int = PROFILE_RUNS) -> dict:
    """ONNX Runtime's profiler on one single-threaded session: {op type: ms per run} (per node
    the median over `runs` runs after 3 warm-ups, summed per op type; NCHWc reorders show as
    ReorderInput / ReorderOutput) and the node count per op type of the optimized graph."""
    import onnxruntime as ort
    opts = _options()
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        for _ in range(3 + runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_node, op_of = collections.defaultdict(list), {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"]].append(e["dur"] / 1e3)
            op_of[e["name"]] = e["args"]["op_name"]
    ms, nodes = collections.defaultdict(float), collections.Counter()
    for name, durs in per_node.items():
        ms[op_of[name]] += float(np.median(durs[-runs:]))
        nodes[op_of[name]] += 1
    order = sorted(ms, key=lambda k: -ms[k])
    return {"ms_per_op_type": {k: round(ms[k], 4) for k in order},
            "nodes_per_op_type": {k: nodes[k] for k in order},
            "total_ms": round(sum(ms.values()), 4), "runs": runs}


def mask_floor(classifier: bytes, x, runs: int = 50) -> dict:
    """What the exact ReLU6 / ReLU gradient masks cost at the least: every activation output
    (Clip / Relu) of the backbone read once with its gradient and the masked gradient written
    once (12 bytes per element), timed as one float32 Mul over that many elements on one
    thread. The backward pass cannot fuse a mask into its convolutions with ONNX ops, so this
    is a floor for any exact mask built from separate nodes."""
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from edgeood.graph.model import fixed_and_inferred
    model = fixed_and_inferred(onnx.load_from_string(classifier))  # shapes at batch 1
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in [*model.graph.value_info, *model.graph.output]}
    acts = [n.output[0] for n in model.graph.node if n.op_type in ("Clip", "Relu")]
    elements = len(x) * int(sum(np.prod(shapes[a]) for a in acts if a in shapes))
    node = helper.make_node("Mul", ["g", "m"], ["out"])
    mul = helper.make_model(helper.make_graph(
        [node], "mask", [helper.make_tensor_value_info(v, TensorProto.FLOAT, [elements])
                         for v in ("g", "m")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [elements])]),
        opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(mul.SerializeToString(), _options(),
                                providers=["CPUExecutionProvider"])
    feed = {"g": np.ones(elements, np.float32), "m": np.ones(elements, np.float32)}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    ms = float(np.median(times) * 1e3)
    return {"activations": len(acts), "elements": elements, "one_pass_ms": ms,
            "gb_per_s": 12 * elements / ms / 1e6}


def main():
    ap = parser("benchmarks/results/adascale_lite0.json", 8, 5)
    ap.set_defaults(batch=[1, 8, 16])
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    src, graph, head = lite0_graph()
    models = {"classifier": tapped_model(graph, [head.logits])}
    variants = {"classifier": session(models["classifier"]).run}
    net = lite0.module()
    result = {"model": "efficientnet_lite0", "threads": THREADS, "batches": {}}
    with tempfile.TemporaryDirectory() as tmp:
        result["added_nodes"] = {}
        for name, params in VARIANTS.items():
            method, _, selection = name.partition(":")
            res = edgeood.export(src, data=lite0.photos(100, seed=0), methods=[method],
                                 recipe=lite0.RECIPE, out=Path(tmp) / f"{method}{selection}.onnx",
                                 batch=16, params={method: params})
            variants[f"folded:{name}"] = session(res.path).run
            models[f"folded:{name}"] = str(res.path)
            result["added_nodes"][name] = added_nodes(str(res.path), models["classifier"])
            if selection:  # the same method with another least-|g| selection
                continue
            name = method
            m = onnx.load(str(res.path))
            ref = next(onnx.numpy_helper.to_array(i) for i in m.graph.initializer
                       if i.name == f"{name}/q_reference").ravel()
            variant = "A" if name.endswith("_a") else "L"
            variants[f"torch_eager:{name}"] = (
                lambda x, ref=torch.from_numpy(ref.copy()), v=variant:
                torch_adascale(net, torch.from_numpy(x), ref, v))
        for b in args.batch:
            x = lite0.photos(b, seed=1)
            from edgeood.data import Preprocess
            from edgeood.pipeline.recipes import load_recipe
            rin = load_recipe(lite0.RECIPE).input
            x = Preprocess(size=tuple(rin["size"]), mean=rin["mean"], std=rin["std"]).normalize(x)
            samples = round_robin({k: (lambda fn=fn: fn(x)) for k, fn in variants.items()},
                                  args.rounds, args.per_round)
            lat = {k: {"min_ms": float(np.min(s)), "p50_ms": float(np.median(s))}
                   for k, s in samples.items()}
            base = lat["classifier"]
            ratios = {}
            for name in VARIANTS:
                f, t = lat[f"folded:{name}"], lat[f"torch_eager:{name.partition(':')[0]}"]
                ratios[name] = {"folded_over_classifier": f["p50_ms"] / base["p50_ms"],
                                "folded_over_torch_eager": f["p50_ms"] / t["p50_ms"],
                                "folded_over_classifier_min": f["min_ms"] / base["min_ms"]}
            result["batches"][str(b)] = {"latency": lat, "ratios": ratios}
            if b == 1:
                prof = {k: op_profile(models[k], x) for k in ("classifier", "folded:adascale_a",
                                                              "folded:adascale_a:rounds")}
                result["profile_batch1"] = prof
                result["mask_floor_batch1"] = mask_floor(models["classifier"], x)
                print("profile, batch 1 (ms per run, sum of per-node medians): classifier "
                      f"{prof['classifier']['total_ms']:.2f}, folded adascale_a "
                      f"{prof['folded:adascale_a']['total_ms']:.2f}: " + ", ".join(
                          f"{k} {v:.2f}" for k, v in
                          list(prof["folded:adascale_a"]["ms_per_op_type"].items())[:12]))
            print(f"batch {b}: classifier p50 {base['p50_ms']:.2f} ms")
            for name, r in ratios.items():
                eager = lat[f"torch_eager:{name.partition(':')[0]}"]["p50_ms"]
                print(f"  {name}: folded p50 {lat[f'folded:{name}']['p50_ms']:.2f} ms = "
                      f"{r['folded_over_classifier']:.2f}x classifier (min {r['folded_over_classifier_min']:.2f}x), "
                      f"{r['folded_over_torch_eager']:.2f}x torch eager "
                      f"({eager:.2f} ms)")
    print("nodes added after ORT_ENABLE_EXTENDED: " + ", ".join(
        f"{k} {v['added']}" for k, v in result["added_nodes"].items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
