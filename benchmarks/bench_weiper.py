"""WeiPer latency on EfficientNet-Lite0 (ONNX Runtime CPU, one thread, no spinning; ImageNet
head: r C = 100000 x 1280): plain classifier, folded weiper_msp / weiper_kld with float32 and
float16 storage of the perturbation, and host-side scoring (the classifier emits z and logits,
NumPy float32 computes the same formula). Timed round-robin in one run; also reports the bytes
the perturbation adds.

    python benchmarks/bench_weiper.py [--rounds 5] [--per-round 5]
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx

import edgeood
from edgeood.methods.weiper import EPS_L, EPS_Z, smooth
from edgeood.profile import round_robin
from common import THREADS, lite0_graph, parser, session, tapped_session
from edgeood.zoo import efficientnet_lite0 as lite0



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
    args = parser("benchmarks/results/weiper_lite0.json", 5, 5).parse_args()
    src, graph, head = lite0_graph()
    variants = {"classifier": tapped_session(graph, [head.logits]).run}
    taps = tapped_session(graph, [head.logits, head.z]).run
    calib = lite0.photos(100, seed=0)
    result = {"model": "efficientnet_lite0", "threads": THREADS, "batches": {}, "bytes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ("float32", "float16"):
            res = edgeood.export(src, data=calib, methods=["weiper_msp", "weiper_kld"],
                                 recipe=lite0.RECIPE, out=Path(tmp) / f"{storage}.onnx", batch=8,
                                 params={m: {"storage": storage} for m in ("weiper_msp", "weiper_kld")})
            result["bytes"][storage] = {"perturbation": res.metadata["methods"]["weiper_kld"]["perturbation_bytes"],
                                        "detector_file": res.path.stat().st_size}
            for m in ("weiper_msp", "weiper_kld"):
                one = edgeood.export(src, data=calib, methods=[m], recipe=lite0.RECIPE,
                                     out=Path(tmp) / f"{m}_{storage}.onnx", batch=8,
                                     params={m: {"storage": storage}})
                variants[f"folded:{m}:{storage}"] = session(one.path).run
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
        for b in args.batch:
            from edgeood.data import Preprocess
            x = pre.normalize(lite0.photos(b, seed=1))
            samples = round_robin({k: (lambda fn=fn: fn(x)) for k, fn in variants.items()},
                                  args.rounds, args.per_round)
            lat = {k: {"min_ms": float(np.min(s)), "p50_ms": float(np.median(s))}
                   for k, s in samples.items()}
            base = lat["classifier"]["p50_ms"]
            result["batches"][str(b)] = {"latency": lat, "over_classifier":
                                         {k: v["p50_ms"] / base for k, v in lat.items()}}
            print(f"batch {b}: classifier p50 {base:.2f} ms")
            for k, v in lat.items():
                print(f"  {k:28s} p50 {v['p50_ms']:8.2f} ms  {v['p50_ms'] / base:6.2f}x")
    print("bytes:", result["bytes"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
