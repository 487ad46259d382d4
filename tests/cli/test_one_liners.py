"""Issue 23 item 5, build / deploy / profile side: each former traceback or silent surprise is
now one line that says what is wrong and how to fix it (a non-zero exit, no file written), or
one warning line where the command still does its job."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgeood
from edgeood.errors import EdgeoodError


def _cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "edgeood.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def _one_line_error(proc) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "Error:" not in lines[0].split(":", 1)[1][:40]
    return lines[0]


def _files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _mlp(path, fixed_size=None):
    """An MLP on [N, 64] (no image input); with fixed_size a 1 x s x s image classifier."""
    if fixed_size is None:
        shape, nodes, k = ["N", 64], [helper.make_node("MatMul", ["x", "W"], ["logits"])], 64
    else:
        k = fixed_size * fixed_size
        shape = ["N", 1, fixed_size, fixed_size]
        nodes = [helper.make_node("Flatten", ["x"], ["f"]),
                 helper.make_node("MatMul", ["f", "W"], ["logits"])]
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, 10))
                                .astype(np.float32), "W")
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        shape)],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                         ["N", 10])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


# --- profile ----------------------------------------------------------------------------------
def test_profile_of_a_model_without_an_image_input(tmp_path):
    """Was: error: ValueError: not enough values to unpack (expected 3, got 1)."""
    line = _one_line_error(_cli("profile", _mlp(tmp_path / "mlp.onnx")))
    assert "4-D N x C x H x W" in line and "input x is Nx64" in line


def test_profile_reports_only_the_percentiles_its_runs_support(tmp_path):
    """p99 of 20 runs is the slowest run: not reported (None in JSON, absent from the line)
    with one warning naming the --iterations it needs; the default (100 runs) reports it."""
    from edgeood.tools.profile import latency_stats, samples_for, too_few_runs
    assert [samples_for(p) for p in (50, 90, 99, 99.9)] == [2, 10, 100, 1000]
    ms = np.arange(1.0, 21.0)
    stats = latency_stats(ms, 1)["latency_ms"]
    assert stats["p99"] is None and stats["p50"] == pytest.approx(np.percentile(ms, 50))
    assert latency_stats(np.arange(100.0), 1)["latency_ms"]["p99"] is not None
    assert too_few_runs(20, (50, 90, 99)) == [99]
    model = _mlp(tmp_path / "img.onnx", fixed_size=8)
    proc = _cli("profile", model, "--iterations", "20", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr
    assert "p50" in proc.stdout and "p99" not in proc.stdout
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
    assert warnings == ["warning: 20 timed runs are too few for p99 (p99 needs --iterations "
                        "100); not reported"], proc.stderr
    from edgeood.config import option
    assert option("profile", "iterations").default >= samples_for(99)
    proc = _cli("profile", model, "--warmup", "0", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["latency_ms"]["p99"] is not None
    assert "warning" not in proc.stderr


def test_profile_says_when_imgsz_is_ignored(tmp_path):
    model = _mlp(tmp_path / "img.onnx", fixed_size=8)
    proc = _cli("profile", model, "--imgsz", "32", "--iterations", "100", "--warmup", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "warning: --imgsz 32 is ignored: the model's input is fixed at 8x8"], proc.stderr
    proc = _cli("profile", model, "--imgsz", "8", "--iterations", "100", "--warmup", "0")
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


# --- export / calibrate -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_detector(digits_model, digits_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("one_liners") / "d.onnx"
    return edgeood.export(digits_model, data=digits_data.val[0], methods=["energy", "react"],
                          recipe="digits_cnn", out=out).path


def test_export_out_equal_to_the_source_model_is_refused(digits_model, digits_data, tmp_path):
    src = tmp_path / "cls.onnx"
    shutil.copy(digits_model, src)
    before = src.read_bytes()
    np.save(tmp_path / "id.npy", digits_data.val[0][:100])
    line = _one_line_error(_cli("export", src, "--recipe", "digits_cnn", "--methods", "energy",
                                "--data", tmp_path / "id.npy", "--out", src))
    assert "--out" in line and "cls.detector.onnx" in line
    assert src.read_bytes() == before and _files(tmp_path) == ["cls.onnx", "id.npy"]
    with pytest.raises(EdgeoodError, match=r"^out .*cls\.onnx is the model being exported"):
        edgeood.export(str(tmp_path / "." / "cls.onnx"), methods=["energy"],
                       recipe="digits_cnn", out=src)
    # --out onto another detector's source (or a detector) is the user's choice: it works
    other = tmp_path / "other.onnx"
    shutil.copy(digits_model, other)
    res = edgeood.export(src, methods=["energy"], recipe="digits_cnn", out=other)
    assert res.path == other and edgeood.load(other).metadata["primary"] == "energy"


def test_exporting_a_detector_says_it_is_one(small_detector, tmp_path):
    """Was: the model already has a tensor named score_energy; rename it."""
    line = _one_line_error(_cli("export", small_detector, "--recipe", "digits_cnn",
                                "--methods", "energy", "--out", tmp_path / "again.onnx"))
    assert "already an edgeood detector" in line and "edgeood calibrate" in line
    assert _files(tmp_path) == []  # nothing written
    # without its metadata (a stripped copy), its score_ outputs still give it away
    model = onnx.load(str(small_detector))
    del model.metadata_props[:]
    with pytest.raises(EdgeoodError, match="already an edgeood detector .*score_energy"):
        edgeood.export(model, methods=["energy"], recipe="digits_cnn", out=tmp_path / "x.onnx")
    # a classifier's own output that merely starts with score_ is not a method's score
    from edgeood.pipeline.sources import refuse_detector
    plain = onnx.load(str(_mlp(tmp_path / "m.onnx")))
    plain.graph.output[0].name = "score_map"
    refuse_detector(plain, "m.onnx")


def _with_metadata(src, dst, edit):
    model = onnx.load(str(src))
    for p in model.metadata_props:
        if p.key == "edgeood":
            p.value = edit(p.value)
    onnx.save(model, str(dst))
    return dst


def test_calibrate_on_damaged_metadata_is_one_line_naming_the_file(small_detector, digits_data,
                                                                     tmp_path):
    np.save(tmp_path / "id.npy", digits_data.val[0][:100])

    def lose_react(value):
        meta = json.loads(value)
        del meta["methods"]["react"]
        return json.dumps(meta)
    lost = _with_metadata(small_detector, tmp_path / "lost.onnx", lose_react)
    line = _one_line_error(_cli("calibrate", lost, "--data", tmp_path / "id.npy",
                                "--out", tmp_path / "lost.cal.onnx"))   # was: KeyError: 'react'
    assert str(lost) in line and "react" in line and "re-export" in line
    trunc = _with_metadata(small_detector, tmp_path / "trunc.onnx", lambda v: v[:len(v) // 2])
    line = _one_line_error(_cli("calibrate", trunc, "--data", tmp_path / "id.npy"))
    assert str(trunc) in line and "not valid JSON" in line
    # an engine-style file whose only copy is a truncated sidecar
    plain = tmp_path / "plain.onnx"
    model = onnx.load(str(small_detector))
    del model.metadata_props[:]
    onnx.save(model, str(plain))
    text = (small_detector.parent / (small_detector.name + ".json")).read_text()
    (tmp_path / "plain.onnx.json").write_text(text[:len(text) // 2])
    line = _one_line_error(_cli("calibrate", plain, "--data", tmp_path / "id.npy"))
    assert "plain.onnx.json" in line and "not valid JSON" in line
    assert not (tmp_path / "lost.cal.onnx").exists()


# --- deploy deepstream ------------------------------------------------------------------------
def test_deepstream_says_the_stream_monitor_is_left_out(digits_model, digits_data, tmp_path,
                                                        caplog):
    from edgeood.deploy.deepstream import deepstream_config
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy"],
                         recipe="digits_cnn", out=tmp_path / "mon.onnx", stream_monitor=True)
    with caplog.at_level(logging.WARNING, logger="edgeood"):
        files = deepstream_config(res.path, tmp_path / "ds")
    said = [r.getMessage() for r in caplog.records if "stream monitor" in r.getMessage()]
    assert len(said) == 1 and "edgeood.StreamMonitor per source" in said[0], said
    served = onnx.load(str(files.model))
    assert [i.name for i in served.graph.input] == ["input"]  # the float entry, no state
    caplog.clear()
    plain = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy"],
                           recipe="digits_cnn", out=tmp_path / "plain.onnx")
    with caplog.at_level(logging.WARNING, logger="edgeood"):
        deepstream_config(plain.path, tmp_path / "ds2")
    assert not [r for r in caplog.records if "stream monitor" in r.getMessage()]
