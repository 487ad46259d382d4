"""What a detector holds: metadata, outputs with shapes, and where its bytes are."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgeood.artifact.names import PVALUE_PREFIX, SCORE_PREFIX, TAP_PREFIX
from edgeood.graph.model import model_opset
from edgeood.artifact.metadata import read_with_model
from edgeood.artifact.truth import check_graph
from edgeood.methods.presentation import presentation

HEAD_SCOPES = (SCORE_PREFIX, PVALUE_PREFIX, "pvalues", "decision", TAP_PREFIX.rstrip("_"),
               "monitor")


def _shape(vi) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def describe(path, fps: float = 30.0) -> dict:
    path = Path(path)
    meta, model = read_with_model(path)
    data = Path(str(path) + ".data")
    info = {"path": str(path), "file_bytes": path.stat().st_size + (data.stat().st_size
                                                                     if data.is_file() else 0),
            "metadata": meta}
    mon = meta.get("monitor")
    if mon:
        info["monitor"] = {"fps": fps, "mean_time_between_false_alarms_s":
                           mon["arl"] * mon["stride"] / fps}
    if path.suffix.lower() != ".onnx":
        return info
    check_graph(path, meta, model)  # never show a threshold the graph does not apply
    scopes = tuple(s for m, entry in meta["methods"].items()
                   for s in presentation(m).constant_scopes(entry)) + HEAD_SCOPES
    total = head = 0
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
        total += n
        if init.name.startswith(scopes):
            head += n
    info.update(constant_bytes=total, head_constant_bytes=head,
                outputs=[{"name": o.name, "shape": _shape(o)} for o in model.graph.output],
                opset=model_opset(model), nodes=len(model.graph.node))
    return info


def monitor_lines(meta: dict, fps: float = 30.0) -> list[str]:
    """The stream monitor's defaults as `edgeood inspect` prints them."""
    from edgeood.stats.monitor import human_duration
    mon = meta.get("monitor")
    if not mon:
        return ["stream monitor: none in the metadata (re-export or calibrate with this "
                "edgeood)"]
    seconds = mon["arl"] * mon["stride"] / fps
    lines = [f"stream monitor: {', '.join(mon['methods'])}, A = {mon['arl']:g} sampled frames, "
             f"delta {mon['delta']:g}, stride {mon['stride']}; mean time between false alarms "
             f">= {mon['arl'] * mon['stride']:g} frames = {human_duration(seconds)} at {fps:g} fps"]
    if mon.get("n_reference"):
        qs = ", ".join(f"{q:.3f}" for q in (mon.get("q") or {}).values())
        ns = ", ".join(str(n) for n in mon["n_reference"].values())
        lines.append(f"  reference n = {ns}, q(n, {mon['delta_per_method']:g}) = {qs}, bet "
                     f"g = f / {mon['bet_scale']:.3f} (max(1, q)), largest bet "
                     f"{mon['largest_bet']:.1f} per frame")
    else:
        lines.append("  not calibrated yet: q(n, delta) is set by edgeood calibrate")
    if mon.get("in_graph"):
        st = mon["state"]
        lines.append(f"  folded into the graph: {st['input']['name']}{st['input']['shape']} -> "
                     f"{st['output']['name']}{st['output']['shape']}, "
                     f"{st['alarm']['name']}{st['alarm']['shape']} (one stream per batch slot)")
    if mon.get("advice"):
        lines.append(f"  note: {mon['advice']}")
    return lines


def header_lines(detector, info: dict) -> list[str]:
    """What `edgeood inspect` prints above the method table: file, input, outputs, warnings,
    calibration."""
    meta = info["metadata"]
    eng = meta.get("engine")
    lines = []
    if eng:  # a TensorRT engine: what its sidecar says
        lines.append(f"{detector}: TensorRT {eng['tensorrt_version']} plan, "
                     f"{info['file_bytes'] / 1e6:.2f} MB, {eng['gpu']['name']} (compute "
                     f"capability {eng['gpu']['compute_capability']}), {eng['device']}, "
                     f"{eng['precision']}, built from {eng['source']['name']}")
    else:
        lines.append(f"{detector}: {info['file_bytes'] / 1e6:.2f} MB, "
                     f"{info['constant_bytes'] / 1e6:.2f} MB of constants "
                     f"({info['head_constant_bytes'] / 1e3:.1f} kB in scoring heads)")
    lines.append(f"input {meta['input']['name']} {meta['input']['shape']}, preprocessing "
                 f"mean {meta['preprocessing']['mean']} std {meta['preprocessing']['std']} "
                 f"size {meta['preprocessing']['size']} {meta['preprocessing']['color']}")
    outputs = [t for t in eng["io"] if t["mode"] == "output"] if eng else info["outputs"]
    lines.append("outputs: " + ", ".join(f"{o['name']}{o['shape']}" for o in outputs))
    target = (meta.get("calibration") or {}).get("target")
    if target:
        from edgeood.runtime.backend import describe_target
        lines.append(f"calibration target: {describe_target(target)}")
    for name, d in meta["methods"].items():
        for w in d.get("warnings", []):
            lines.append(f"warning: {w}")
    cal = meta.get("calibration")
    lines.append(f"calibration: {cal['count']} images (hash {cal['hash']}), tpr {meta['tpr']}"
                 if cal else "calibration: none (run edgeood calibrate)")
    return lines
