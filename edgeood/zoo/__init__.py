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
    import onnx

    from edgeood.artifact.files import atomic_path
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return path
