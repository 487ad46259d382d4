"""Detector file kinds, file hashing and atomic writes, defined once for every layer.

Atomic writes go to a temporary file in the target's folder and are renamed into place, so a
reader never sees half a file and a failed write leaves nothing behind. tempfile creates files
0600 and folders 0700; the helpers here give them the modes a plain open() would (0666 / 0777
less the umask), so that deployed files are readable by the server's user.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgeood.errors import EdgeoodError

ONNX_SUFFIX = ".onnx"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
DETECTOR_SUFFIXES = (ONNX_SUFFIX, *ENGINE_SUFFIXES)


def kind_of(path: str | Path) -> str:
    """'onnx' or 'engine', from the file's suffix; one line for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ONNX_SUFFIX:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    raise EdgeoodError(f"{path}: unknown detector type; pass an .onnx detector or a TensorRT "
                       f"engine ({', '.join(ENGINE_SUFFIXES)})")


def is_engine(path: str | Path) -> bool:
    return Path(path).suffix.lower() in ENGINE_SUFFIXES


def strip_suffix(name: str) -> str:
    """A detector file name without its detector suffix(es): 'a.b1.engine' -> 'a.b1'."""
    for suffix in DETECTOR_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[:-len(suffix)]
    return name


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in chunks (models and plans can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def umask() -> int:
    """The process umask: from /proc on Linux, else by setting and restoring it (there is no
    getter, and the swap is not thread-safe, hence /proc first)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode(executable: bool = False) -> int:
    """The mode open() gives a new file (0666 less the umask; 0777 less it if executable)."""
    return (0o777 if executable else 0o666) & ~umask()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block ends
    normally, removed when it raises (nothing is left behind)."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write bytes or text (UTF-8) to `path` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return path


def atomic_copy(src: str | Path, dst: str | Path) -> Path:
    """Copy a file atomically (contents only; the mode follows the umask)."""
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


@contextlib.contextmanager
def staging_dir(parent: str | Path, name: str) -> Iterator[Path]:
    """A hidden folder in `parent` (0777 less the umask) for files that must appear together;
    removed when the block ends, whatever the caller moved out of it."""
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    try:
        os.chmod(staging, 0o777 & ~umask())
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
