"""Embedded defaults that need no download: the digits benchmark and EfficientNet-Lite0."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where trained/exported zoo models are cached ($EDGEOOD_CACHE, else ~/.cache/edgeood)."""
    d = Path(os.environ.get("EDGEOOD_CACHE", Path.home() / ".cache" / "edgeood"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_cached(proto, path: Path) -> Path:
    """Write an ONNX model into the cache atomically (a temp file, then a rename)."""
    import tempfile

    import onnx
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    onnx.save_model(proto, tmp)
    os.replace(tmp, path)
    return path
