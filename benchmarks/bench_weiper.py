"""WeiPer latency on EfficientNet-Lite0 (ONNX Runtime CPU, one thread, no spinning; ImageNet
head: r C = 100000 x 1280): plain classifier, folded weiper_msp / weiper_kld with float32 and
float16 storage of the perturbation, weiper_kld with the compare-and-count histograms it had
before the scatter count (`histogram=compare`), and host-side scoring (the classifier emits z
and logits, NumPy float32 computes the same formula).
Timed round-robin in one run (ratios to the classifier from the min and from the p50 of the
same run); also reports the bytes the perturbation adds, and per image the bytes moved and the
multiply-adds (resp. element operations) of the projection and of each histogram form, with
this machine's one-thread read and copy bandwidths and the floor they give per batch, so the
distance to the memory-bandwidth floor is visible.

    python benchmarks/bench_weiper.py [--batch 1 8 16] [--rounds 5] [--per-round 5] [--threads 1]
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

import edgeood
from edgeood.runtime.onnxruntime.node_count import added_nodes
from edgeood.methods.weiper import EPS_L, EPS_Z, smooth
from edgeood.tools.profile import round_robin
import common
from common import lite0_graph, parser, save_result, session, tapped_model, tapped_session
from edgeood.zoo import efficientnet_lite0 as lite0

VARIANTS = [  # (name, method, storage, params); ":compare": the histograms before the scatter
    ("folded:weiper_msp:float32", "weiper_msp", "float32", {}),
    ("folded:weiper_kld:float32", "weiper_kld", "float32", {}),
    ("folded:weiper_kld:float32:compare", "weiper_kld", "float32", {"histogram": "compare"}),
    ("folded:weiper_msp:float16", "weiper_msp", "float16", {}),
    ("folded:weiper_kld:float16", "weiper_kld", "float16", {}),
]


def node_traffic(model: onnx.ModelProto) -> dict:
    """Per image (batch 1): bytes read + written by every node (inputs and outputs, shapes
    inferred) and element operations (output elements; a reduction or scatter counts its
    input elements), for the whole model."""
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        t = vi.type.tensor_type
        shapes[vi.name] = ([d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim],
                           t.elem_type)
    for init in model.graph.initializer:
        shapes[init.name] = (list(init.dims), init.data_type)
    size = lambda name: int(np.prod(shapes[name][0])) if name in shapes else 0
    nbytes = lambda name: size(name) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
        shapes[name][1])).itemsize if name in shapes else 0
    total_bytes = ops = 0
    for node in model.graph.node:
        total_bytes += sum(nbytes(i) for i in node.input if i) + sum(nbytes(o) for o in node.output)
        if node.op_type.startswith("Reduce"):
            ops += size(node.input[0])
        elif node.op_type == "ScatterElements":
            ops += size(node.input[2])
        elif node.op_type not in ("Shape", "Slice", "Concat", "Reshape", "Unsqueeze"):
            ops += sum(size(o) for o in node.output)
    return {"bytes": int(total_bytes), "element_ops": int(ops)}


def histogram_costs(edges: np.ndarray, length: int) -> dict:
    """node_traffic of the histogram subgraph alone, both forms, one row of `length` values."""
    import onnx_graphsurgeon as gs

    from edgeood.graph.model import to_model
    from edgeood.methods.weiper import graph_bin_counts, histogram_form
    out = {}
    for form in ("compare", histogram_form(edges, length, 17, "scatter")):
        x = gs.Variable("v", np.float32, [1, length])
        g = gs.Graph(inputs=[x], opset=17)
        counts = graph_bin_counts(g, x, edges, length, form)
        counts.name, g.outputs = "counts", [counts]
        out[form] = node_traffic(to_model(g))
    return out


def bandwidths() -> dict:
    """One-thread GB/s, best of 5 over 256 MB: a copy (read + write bytes) and a max (read)."""
    import time

    def best(fn):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)
    a, b = np.ones(1 << 26, np.float32), np.empty(1 << 26, np.float32)
    return {"copy_GBps": 2 * a.nbytes / best(lambda: np.copyto(b, a)) / 1e9,
            "read_GBps": a.nbytes / best(lambda: a.max()) / 1e9}


def host_kld(z, logits, p32, edges_z, edges_l, p_z, p_l, prm):
    """The WeiPer+KLD score on the host, float32 NumPy (what users write without edgeood)."""
    lt = np.tile(logits, prm["r"]) + z @ p32.T
    r, c = prm["r"], logits.shape[1]
    e = np.exp(lt.reshape(len(z), r, c) - lt.reshape(len(z), r, c).max(2, keepdims=True))
    msp = (1.0 / e.sum(2)).mean(1)

    def kl(v, edges, p_train, s, eps):
        idx = np.searchsorted(edges, v, side="right") - 1
        n = len(edges) - 1
        h = np.stack([np.bincount(row[(row >= 0) & (row < n)], minlength=n) for row in idx])
        q = smooth(h / v.shape[1], s)
        pp = (p_train + eps) / (p_train + eps).sum()
        qq = (q + eps) / (q + eps).sum(1, keepdims=True)
        return ((pp - qq) * (np.log(pp) - np.log(qq))).sum(1)
    dz = kl(z, edges_z, p_z, prm["s1"], EPS_Z)
    dl = kl(lt, edges_l, p_l, prm["s2"], EPS_L)
    return -(dz + prm["lambda1"] * dl - prm["lambda2"] * msp)


def main():
    ap = parser("benchmarks/results/weiper_lite0.json", 5, 5)
    ap.set_defaults(batch=[1, 8, 16])
    args = ap.parse_args()
    common.THREADS = args.threads
    src, graph, head = lite0_graph()
    classifier = tapped_model(graph, [head.logits])
    variants = {"classifier": session(classifier).run}
    taps = tapped_session(graph, [head.logits, head.z]).run
    calib = lite0.photos(100, seed=0)
    result = {"model": "efficientnet_lite0", "threads": args.threads, "batches": {}, "bytes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ("float32", "float16"):
            res = edgeood.export(src, data=calib, methods=["weiper_msp", "weiper_kld"],
                                 recipe=lite0.RECIPE, out=Path(tmp) / f"{storage}.onnx", batch=8,
                                 params={m: {"storage": storage} for m in ("weiper_msp", "weiper_kld")})
            result["bytes"][storage] = {"perturbation": res.metadata["methods"]["weiper_kld"]["perturbation_bytes"],
                                        "detector_file": res.path.stat().st_size}
            for name, m, st, extra in VARIANTS:
                if st != storage:
                    continue
                one = edgeood.export(src, data=calib, methods=[m], recipe=lite0.RECIPE,
                                     out=Path(tmp) / f"{name.replace(':', '_')}.onnx", batch=8,
                                     params={m: {"storage": storage, **extra}})
                variants[name] = session(one.path).run
                if storage == "float32":  # the head's nodes after ORT's extended optimisations
                    result.setdefault("added_nodes", {})[name] = added_nodes(str(one.path),
                                                                             classifier)
            if storage == "float32":
                model = onnx.load(str(res.path))
                init = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
                p32 = next(v for k, v in init.items() if k.startswith("weiper/perturbation"))
                prm = res.metadata["methods"]["weiper_kld"]
                from edgeood.data import Preprocess
                pre = Preprocess.from_dict(res.metadata["preprocessing"])
                cal = taps(pre.normalize(calib))
                from edgeood.methods.weiper import histograms
                zc = cal[head.z]
                lc = np.tile(cal[head.logits], prm["r"]) + zc @ p32.T
                ez, el = init["weiper_kld/edges_z"].ravel(), init["weiper_kld/edges_L"].ravel()
                pz, pl = histograms(zc, ez).mean(0), histograms(lc, el).mean(0)

                def host(x, p32=p32, ez=ez, el=el, pz=pz, pl=pl, prm=prm):
                    out = taps(x)
                    return host_kld(out[head.z], out[head.logits], p32, ez, el, pz, pl, prm)
                variants["host:weiper_kld:float32"] = host
                r, c = prm["r"], head.num_classes
                d = zc.shape[1]
                result["per_image"] = {
                    "bandwidth": bandwidths(),
                    "projection": {"multiply_adds": r * c * d,
                                   "bytes_float32_P_per_batch": r * c * d * 4,
                                   "bytes_z_and_L": (d + r * c) * 4,
                                   "note": "P is read once per batch: bytes per image = P / batch "
                                           "+ z and L; float16 storage is cast to float32 at "
                                           "load on ORT CPU"},
                    "histogram_L": histogram_costs(el, r * c),
                    "histogram_z": histogram_costs(ez, d),
                }
        for b in args.batch:
            from edgeood.data import Preprocess
            x = pre.normalize(lite0.photos(b, seed=1))
            samples = round_robin({k: (lambda fn=fn: fn(x)) for k, fn in variants.items()},
                                  args.rounds, args.per_round)
            lat = {k: {"min_ms": float(np.min(s)), "p50_ms": float(np.median(s))}
                   for k, s in samples.items()}
            base, base_min = lat["classifier"]["p50_ms"], lat["classifier"]["min_ms"]
            pi = result["per_image"]
            p_bytes = pi["projection"]["bytes_float32_P_per_batch"] / b + \
                pi["projection"]["bytes_z_and_L"]
            bw = pi["bandwidth"]  # P is read (read bandwidth), histograms read and write (copy)
            floor = {"projection_ms_per_batch": b * p_bytes / bw["read_GBps"] / 1e6}
            for key in ("histogram_L", "histogram_z"):
                for form, cost in pi[key].items():
                    floor[f"{key}_{form}_ms_per_batch"] = b * cost["bytes"] / bw["copy_GBps"] / 1e6
            result["batches"][str(b)] = {
                "latency": lat,
                "over_classifier": {k: v["p50_ms"] / base for k, v in lat.items()},
                "over_classifier_min": {k: v["min_ms"] / base_min for k, v in lat.items()},
                "bandwidth_floor": floor}
            print(f"batch {b}: classifier p50 {base:.2f} ms (min {base_min:.2f})")
            for k, v in lat.items():
                print(f"  {k:34s} p50 {v['p50_ms']:8.2f} ms  {v['p50_ms'] / base:6.2f}x   "
                      f"min {v['min_ms']:8.2f} ms  {v['min_ms'] / base_min:6.2f}x")
            print("  bandwidth floor (ms per batch):",
                  {k: round(v, 2) for k, v in floor.items()})
    print("bytes:", result["bytes"])
    print("nodes added after ORT_ENABLE_EXTENDED: " + ", ".join(
        f"{k} {v['added']}" for k, v in result.get("added_nodes", {}).items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
