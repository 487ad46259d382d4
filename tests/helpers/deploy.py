"""Small real detectors the deploy and uint8-input tests share (not a test module)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import edgeood

BGR_RECIPE = """
name = "tiny_bgr"
[input]
size = [16, 16]
channels = 3
mean = [0.406, 0.456, 0.485]
std = [0.225, 0.224, 0.229]
color = "BGR"
resize = true
"""


def tiny_rgb_net():
    """A seeded 3-channel CNN (16 x 16 input, 5 classes) with a linear head."""
    import torch
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 5)).eval()


def photo_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n uint8 size x size x 3 crops of scikit-image's photographs."""
    from edgeood.zoo import efficientnet_lite0 as lite0
    return lite0.photos(n, size=size, seed=seed)


def bgr_detector(folder: Path, input: str = "uint8", methods=("energy", "msp", "react")):
    """The tiny CNN as a BGR model with ImageNet's per-channel std, calibrated on 40 photos."""
    recipe = folder / "tiny_bgr.toml"
    recipe.write_text(BGR_RECIPE)
    return edgeood.export(tiny_rgb_net(), data=photo_frames(40, 16), methods=list(methods),
                          imgsz=16, recipe=str(recipe), out=folder / f"bgr_{input}.onnx",
                          input=input)


TRT_NAMES = {"float32": "FLOAT", "float16": "HALF", "int8": "INT8", "int32": "INT32",
             "int64": "INT64", "bool": "BOOL", "uint8": "UINT8"}


def engine_sidecar(model, plan: Path, max_batch: int, dynamic: bool,
                   precision: str = "float32") -> dict:
    """Write a plan file (bytes edgeood never reads) and the sidecar edgeood build writes for
    an engine built from `model` (an onnx.ModelProto detector): the detector's metadata plus
    an "engine" section whose io lists the network's tensors (TensorRT names, -1 where the
    batch is dynamic) and whose build options hold the profile."""
    import json

    import onnx
    meta = json.loads({p.key: p.value for p in model.metadata_props}["edgeood"])

    def spec(vi, mode):
        t = vi.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return {"name": vi.name, "mode": mode, "dtype": TRT_NAMES[dtype],
                "shape": [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]}
    meta["engine"] = {"format": "TensorRT serialized plan (no header)", "precision": precision,
                      "build_options": {"precision": precision, "max_batch": max_batch,
                                        "dynamic": dynamic, "device": "gpu"},
                      "io": [spec(v, "input") for v in model.graph.input]
                      + [spec(v, "output") for v in model.graph.output]}
    plan.write_bytes(b"\x00serialized TensorRT plan\x01")
    Path(str(plan) + ".json").write_text(json.dumps(meta))
    return meta
