"""Written files follow the umask (a server running as another user reads what edgeood deploys:
0644 under umask 022, 0600 under 077) and atomic writes leave nothing behind when they fail."""
from __future__ import annotations

import os
import shutil
import stat

import pytest

from edgeood.artifact.files import atomic_path, atomic_write, file_sha256, kind_of
from edgeood.errors import EdgeoodError
from tests.helpers import DATA

LEGACY = DATA / "legacy"


@pytest.fixture
def legacy(tmp_path):
    for f in ("digits_all.onnx", "digits_all.onnx.json"):
        shutil.copy(LEGACY / f, tmp_path / f)
    return tmp_path / "digits_all.onnx"


@pytest.fixture(params=[0o022, 0o077])
def mask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_deployed_files_follow_the_umask(legacy, mask, tmp_path):
    from edgeood.deploy.deepstream import deepstream_config
    from edgeood.deploy.triton import triton_repository
    from edgeood.tensorrt.rewrite import write_tensorrt_ready
    want = 0o666 & ~mask
    repo = triton_repository(legacy, tmp_path / "repo", name="det")
    for f in (repo.config, repo.model, repo.model_dir / "edgeood.json"):
        assert mode(f) == want, (f, oct(mode(f)))
    for d in (repo.model_dir, repo.model_dir / "1"):
        assert mode(d) == 0o777 & ~mask, (d, oct(mode(d)))
    ds = deepstream_config(legacy, tmp_path / "ds")
    for f in (ds.config, ds.model, ds.spec):
        assert mode(f) == want, (f, oct(mode(f)))
    assert mode(ds.probe) == 0o777 & ~mask
    ready = write_tensorrt_ready(legacy)
    assert ready.name == "digits_all.trt.onnx"  # energy's log-sum-exp is rewritten
    assert mode(ready) == want


def test_atomic_write_modes_and_contents(tmp_path, mask):
    out = atomic_write(tmp_path / "a.txt", "hé")
    assert out.read_text(encoding="utf-8") == "hé" and mode(out) == 0o666 & ~mask
    atomic_write(out, b"\x00\x01")
    assert out.read_bytes() == b"\x00\x01" and mode(out) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_failed_atomic_write_leaves_nothing(tmp_path):
    target = tmp_path / "config.pbtxt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer failed")
    assert list(tmp_path.iterdir()) == []
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise RuntimeError("the writer failed")
    assert [p.name for p in tmp_path.iterdir()] == ["config.pbtxt"]
    assert target.read_text() == "old"


def test_kinds_and_hash(tmp_path):
    import hashlib
    assert kind_of("a.onnx") == "onnx"
    assert [kind_of(f"a{s}") for s in (".engine", ".PLAN", ".trt")] == ["engine"] * 3
    with pytest.raises(EdgeoodError, match=r"a\.pt: unknown detector type.*\.engine, \.plan"):
        kind_of("a.pt")
    data = os.urandom(3 << 20)
    (tmp_path / "x").write_bytes(data)
    assert file_sha256(tmp_path / "x") == hashlib.sha256(data).hexdigest()
