"""Fine-tune the digits CNN with the intermediate-layer energy regulariser (edgeood.train) and
compare layer_energy's AUROCs before and after (needs the torch extra; < 2 min on 2 CPU cores).

    python samples/train_layer_energy.py [--epochs 8] [--seed 0] [--out results.json]

"Before" is the digits CNN that ships with edgeood (its ONNX weights loaded back into
digits.build_cnn(); batch norm is folded into the convolutions there, so each BatchNorm2d
becomes the identity plus the folded bias). "After" is that network fine-tuned for a few epochs
with cross-entropy + LayerEnergyRegularizer on its three residual blocks, the outliers being
jigsaw images of each ID batch. Batch norm stays in eval mode while fine-tuning (its affine
parameters still train), so the jigsaw images do not enter its statistics. Both networks are
exported with layer_energy and energy, calibrated on the ID val split and evaluated on the ID
test split against near-OOD (digits 6-9) and far-OOD (photo patches and noise). A control run
fine-tunes the same way without the regulariser (cross-entropy only, same batches), so the
effect of the regulariser is told apart from that of fine-tuning itself.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

import edgeood
from edgeood.tools.evaluate import evaluate
from edgeood.train import LayerEnergyRegularizer
from edgeood.zoo import digits

LAYERS = ["features.1", "features.4", "features.6"]  # the residual blocks (= the ONNX candidates)
METHODS = ["layer_energy", "energy"]


def shipped_module() -> torch.nn.Module:
    """digits.build_cnn() holding the shipped ONNX weights (conv + folded batch norm)."""
    proto = onnx.load(str(digits.shipped_model()))
    init = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    net = digits.build_cnn()
    pairs, last_conv = [], None
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            last_conv = m
        elif isinstance(m, torch.nn.BatchNorm2d):
            pairs.append((last_conv, m))
    assert len(pairs) == len(convs), (len(pairs), len(convs))
    with torch.no_grad():
        for (conv, bn), node in zip(pairs, convs):
            conv.weight.copy_(torch.tensor(init[node.input[1]]))
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.tensor(init[node.input[2]]))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # sqrt(var + eps) = 1: BN = identity + bias
        net.fc.weight.copy_(torch.tensor(init["fc.weight"]))
        net.fc.bias.copy_(torch.tensor(init["fc.bias"]))
    return net.eval()


def check_against_onnx(net, x: np.ndarray) -> float:
    from edgeood.runtime.onnxruntime.backend import OrtBackend
    want = OrtBackend(digits.shipped_model()).run(x)["logits"]
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    return float(np.abs(got - want).max())


def fine_tune(net, data, epochs: int, m_in: float, m_out: float, weight: float,
              regularise: bool = True, seed: int = 0, lr: float = 1e-4):
    """Adam (lr) on cross-entropy (+ the regulariser when regularise), batch 64, with
    the batches in the same seeded order either way."""
    torch.manual_seed(seed)
    x = torch.from_numpy(digits.PREPROCESS.normalize(data.train[0]))
    y = torch.from_numpy(data.train[1]).long()
    fill = float(digits.PREPROCESS.zero_pixel()[0])
    gen = torch.Generator().manual_seed(seed)
    log = []
    with LayerEnergyRegularizer(net, LAYERS, m_in=m_in, m_out=m_out, weight=weight, fill=fill,
                                seed=seed) as reg:
        opt = torch.optim.Adam([*net.parameters(), *reg.parameters()], lr=lr)
        net.train()
        for m in net.modules():  # frozen batch-norm statistics (affine parameters still train)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        for epoch in range(epochs):
            perm = torch.randperm(len(x), generator=gen)
            total_ce = total_reg = 0.0
            for i in range(0, len(x), 64):
                b = perm[i:i + 64]
                if regularise:
                    out = reg(x[b])
                    logits, penalty = out.logits, out.loss
                else:
                    logits, penalty = net(x[b]), torch.zeros(())
                ce = torch.nn.functional.cross_entropy(logits, y[b])
                loss = ce + penalty
                opt.zero_grad()
                loss.backward()
                opt.step()
                total_ce += float(ce.detach()) * len(b)
                total_reg += float(penalty.detach()) * len(b)
            log.append({"epoch": epoch + 1, "ce": total_ce / len(x), "reg": total_reg / len(x)})
            print(f"{'regularised' if regularise else 'control'} epoch {epoch + 1}: ce {log[-1]['ce']:.4f}  regulariser {log[-1]['reg']:.4f}",
                  file=sys.stderr)
    return net.eval(), log


def measure(net, data, tmp: Path, label: str) -> dict:
    """Export with layer_energy + energy (calibrated on ID val), evaluate on ID test vs
    near / far: AUROC per method and OOD set, the layer_energy fit, the ID test accuracy."""
    path = tmp / f"{label}.onnx"
    res = edgeood.export(net, data=data.val[0], methods=METHODS, recipe="digits_cnn", out=path)
    report = evaluate(path, data.test[0], {"near": data.near, "far": data.far})
    out = {m: {r["ood"]: r["auroc"] for r in report["results"] if r["method"] == m}
           for m in METHODS}
    entry = res.metadata["methods"]["layer_energy"]
    out["layer_energy_fit"] = {k: entry[k] for k in ("selected_layers", "layer_stats",
                                                     "combined_auroc", "oriented_against")}
    with torch.no_grad():
        pred = net(torch.from_numpy(digits.PREPROCESS.normalize(data.test[0]))).argmax(1)
    out["id_accuracy"] = float((pred.numpy() == data.test[1]).mean())
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--m-in", type=float, default=-10.0, help="free-energy margin for ID")
    ap.add_argument("--m-out", type=float, default=-4.0, help="free-energy margin for outliers")
    ap.add_argument("--weight", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    ap.add_argument("--seed", type=int, default=0, help="fine-tuning seed (batches, heads)")
    ap.add_argument("--no-control", action="store_true",
                    help="skip the control run (the same fine-tuning without the regulariser)")
    ap.add_argument("--out", help="write the JSON here (default: stdout)")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.time()
    data = digits.load_data(seed=0)
    net = shipped_module()
    parity = check_against_onnx(net, digits.PREPROCESS.normalize(data.val[0]))
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs["before"] = measure(net, data, Path(tmp), "before")
        if not args.no_control:
            ctrl, _ = fine_tune(copy.deepcopy(net), data, args.epochs, args.m_in, args.m_out,
                                args.weight, regularise=False, seed=args.seed, lr=args.lr)
            runs["control"] = measure(ctrl, data, Path(tmp), "control")
        net, log = fine_tune(net, data, args.epochs, args.m_in, args.m_out, args.weight,
                             seed=args.seed, lr=args.lr)
        runs["after"] = measure(net, data, Path(tmp), "after")
    result = {
        "config": {"layers": LAYERS, "epochs": args.epochs, "m_in": args.m_in,
                   "m_out": args.m_out, "weight": args.weight, "lr": args.lr, "seed": args.seed,
                   "outliers": "jigsaw of each ID batch"},
        "shipped_module_max_logit_error": parity,
        **runs, "training": log,
        "seconds": round(time.time() - start, 1),
    }
    for label, r in runs.items():
        print(f"{label:7s} layer_energy AUROC near {100 * r['layer_energy']['near']:.2f} "
              f"far {100 * r['layer_energy']['far']:.2f} | energy near "
              f"{100 * r['energy']['near']:.2f} far {100 * r['energy']['far']:.2f} | "
              f"ID test acc {100 * r['id_accuracy']:.1f}%", file=sys.stderr)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return result


if __name__ == "__main__":
    main()
