"""Export a PyTorch classifier to ONNX (fixed opset, dynamic batch) so it proceeds exactly like
an ONNX input."""
from __future__ import annotations

import hashlib
import tempfile
import warnings
from pathlib import Path

import onnx

from edgeood.errors import EdgeoodError


def export_module(module, input_chw: tuple[int, int, int], opset: int = 17) -> tuple[onnx.ModelProto, str]:
    """(model, sha256 of the exported bytes). torch is only needed here."""
    try:
        import torch
    except ImportError:
        raise EdgeoodError("exporting an nn.Module needs torch: pip install 'edgeood[torch]'") from None
    c, h, w = (int(v) for v in input_chw)
    was_training = module.training
    module.eval()
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(tmp) / "model.onnx"
            torch.onnx.export(module, (torch.zeros(2, c, h, w),), str(path), dynamo=False,
                              opset_version=opset, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              do_constant_folding=True)
            data = path.read_bytes()
    finally:
        module.train(was_training)
    return onnx.load_from_string(data), hashlib.sha256(data).hexdigest()
