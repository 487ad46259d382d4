"""The graph decides: metadata whose threshold, primary method or reference tables differ from
the detector's graph is refused by load, inspect, deploy and build in one line; a sidecar that
disagrees with the embedded copy is refused; typed metadata round-trips every file unchanged
(legacy schema-1 and fresh detectors) and refuses malformed or unknown-schema documents."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgeood
from edgeood.artifact import metadata as md
from edgeood.artifact.metadata import (DetectorMetadata, dumps, embed, read_metadata,
                                       save_detector, sidecar_path)
from edgeood.errors import EdgeoodError
from tests.helpers import DATA
from tests.helpers.cli import cli

LEGACY = DATA / "legacy"


def one_line(fn, *args, **kw) -> str:
    with pytest.raises(EdgeoodError) as e:
        fn(*args, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def copy_legacy(tmp_path, name="digits_uint8_monitor"):
    for suffix in (".onnx", ".onnx.json"):
        shutil.copy(LEGACY / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    return tmp_path / f"{name}.onnx"


def rewrite_metadata(path, edit, sidecar=True):
    """Edit the embedded metadata (and the sidecar with it), leaving the graph as it was."""
    model = onnx.load(str(path))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["edgeood"])
    edit(meta)
    embed(model, meta)
    onnx.save(model, str(path))
    if sidecar:
        sidecar_path(path).write_text(dumps(meta))
    return meta


def graph_threshold(path) -> float:
    """The is_ood comparison's constant, read straight from the file."""
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == "GreaterOrEqual"
                and n.input[0] == "score_energy")
    init = next(i for i in model.graph.initializer if i.name == node.input[1])
    return float(numpy_helper.to_array(init).ravel()[0])


def test_edited_threshold_is_refused_by_load_inspect_deploy_build(tmp_path):
    from edgeood.deploy.deepstream import deepstream_config
    from edgeood.deploy.triton import triton_repository
    from edgeood.tensorrt.builder import validate_build
    from edgeood.tools.inspect import describe
    path = copy_legacy(tmp_path)
    decides = graph_threshold(path)
    assert decides == np.float32(read_metadata(path)["methods"]["energy"]["threshold"])
    edgeood.load(path)  # untouched: agrees with its graph
    rewrite_metadata(path, lambda m: m["methods"]["energy"].update(threshold=100.0))
    want = (f"{path}: the metadata's threshold for energy is 100 but the graph decides at "
            f"{decides:.7g}; recalibrate with 'edgeood calibrate {path} --data ID_DIR' "
            "(or re-export)")
    assert one_line(edgeood.load, path) == want
    assert one_line(describe, path) == want
    assert one_line(triton_repository, path, tmp_path / "repo") == want
    assert not (tmp_path / "repo" / "digits_uint8_monitor").exists()
    assert one_line(deepstream_config, path, tmp_path / "ds") == want
    assert one_line(validate_build, path) == want
    proc = cli("inspect", path, check=False)
    assert proc.returncode != 0 and want in proc.stderr and "Traceback" not in proc.stderr
    # recalibrating is the fix the line names: afterwards the metadata and graph agree again
    edgeood.calibrate(path, data=np.load(LEGACY / "outputs.npz")["calibrated/images"])
    det = edgeood.load(path)
    assert np.float32(det.thresholds["energy"]) == graph_threshold(path)


def test_primary_and_references_must_match_the_graph(tmp_path):
    path = copy_legacy(tmp_path)
    rewrite_metadata(path, lambda m: m.update(primary="react"))  # same threshold as energy
    assert "the metadata's primary method is react but the graph decides on score_energy" \
        in one_line(edgeood.load, path)
    path = copy_legacy(tmp_path)
    rewrite_metadata(path, lambda m: m["methods"]["react"].update(reference_size=150))
    assert ("the metadata's reference_size for react is 150 but the graph's reference "
            "(pvalues/reference) holds 200 scores") in one_line(edgeood.load, path)
    path = copy_legacy(tmp_path)
    rewrite_metadata(path, lambda m: m["pvalue_references"]["react"].update(row=2))
    assert "is row 2 of pvalues/reference, which has 2" in one_line(edgeood.load, path)
    path = copy_legacy(tmp_path)
    rewrite_metadata(path, lambda m: m["pvalue_references"]["react"].update(constant="gone"))
    assert "names the constant gone, which the graph does not have" \
        in one_line(edgeood.load, path)


def test_disagreeing_sidecar_is_refused(tmp_path):
    path = copy_legacy(tmp_path)
    side = json.loads(sidecar_path(path).read_text())
    side["methods"]["energy"]["threshold"] = 100.0
    sidecar_path(path).write_text(dumps(side))
    msg = one_line(read_metadata, path)
    assert "the sidecar's methods.energy.threshold disagrees with the metadata embedded in " \
           "digits_uint8_monitor.onnx" in msg and "delete digits_uint8_monitor.onnx.json" in msg
    assert one_line(edgeood.load, path) == msg
    sidecar_path(path).write_text("{not json")
    assert "is not valid JSON" in one_line(edgeood.load, path)
    sidecar_path(path).unlink()  # the fix: the embedded copy counts
    edgeood.load(path)


@pytest.mark.parametrize("name", ["digits_all", "digits_uint8_monitor"])
def test_legacy_metadata_round_trips(name):
    path = LEGACY / f"{name}.onnx"
    raw = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["edgeood"])
    typed = DetectorMetadata.from_dict(read_metadata(path))
    assert typed.to_dict() == raw
    assert list(typed.to_dict()) == list(raw)  # key order too: files re-save unchanged
    assert json.dumps(typed.to_dict()) == json.dumps(raw)
    assert typed.schema_version == 1 and typed.primary == raw["primary"]
    assert typed.thresholds == {m: e["threshold"] for m, e in raw["methods"].items()}
    assert typed.methods["energy"].params == {"temperature": 1.0}


def test_fresh_detectors_round_trip(digits_model, digits_data, tmp_path):
    calibrated = edgeood.export(digits_model, data=digits_data.val[0][:120],
                                methods=["energy", "grood"], recipe="digits_cnn",
                                out=tmp_path / "cal.onnx", stream_monitor=True)
    bare = edgeood.export(digits_model, methods=["energy"], recipe="digits_cnn",
                          out=tmp_path / "bare.onnx")
    for res in (calibrated, bare):
        raw = read_metadata(res.path)
        assert raw == json.loads(sidecar_path(res.path).read_text())
        assert DetectorMetadata.from_dict(raw).to_dict() == raw
        assert list(DetectorMetadata.from_dict(raw).to_dict()) == list(raw)
    typed = DetectorMetadata.from_dict(read_metadata(calibrated.path))
    assert typed.methods["grood"].calibration_count is not None
    assert typed.methods["energy"].reference_size == 120
    assert DetectorMetadata.from_dict(read_metadata(bare.path)).calibration is None


def test_schema_versions(tmp_path, monkeypatch):
    path = copy_legacy(tmp_path)
    sidecar_path(path).unlink()
    rewrite_metadata(path, lambda m: m.update(schema_version=2), sidecar=False)
    assert one_line(read_metadata, path) == (
        f"{path} has metadata schema 2; this edgeood reads schema 1: re-export it with this "
        "version")
    rewrite_metadata(path, lambda m: m.pop("schema_version"), sidecar=False)
    assert "has metadata schema None" in one_line(read_metadata, path)
    # an older schema goes through the migration table on reading
    rewrite_metadata(path, lambda m: m.update(schema_version=0, primary_method=m.pop("primary")),
                     sidecar=False)

    def from_0(meta):
        meta = dict(meta, schema_version=1)
        meta["primary"] = meta.pop("primary_method")
        return meta
    monkeypatch.setitem(md.MIGRATIONS, 0, from_0)
    meta = read_metadata(path)
    assert meta["schema_version"] == 1 and meta["primary"] == "energy"
    edgeood.load(path)
    monkeypatch.setitem(md.MIGRATIONS, 0, lambda m: m)  # an upgrade that forgets the version
    assert "the schema 0 upgrade did not raise the schema version" in one_line(read_metadata,
                                                                               path)


def test_malformed_metadata_is_refused_when_saved(tmp_path):
    model = onnx.load(str(LEGACY / "digits_uint8_monitor.onnx"))
    good = read_metadata(LEGACY / "digits_uint8_monitor.onnx")
    for edit, words in [
            (lambda m: m.update(primary="msp"), "primary 'msp' is not one of its methods"),
            (lambda m: m["methods"]["energy"].update(threshold="high"),
             "methods.energy.threshold is 'high', not a number"),
            (lambda m: m["methods"]["react"].update(reference_size=2.5),
             "methods.react.reference_size is 2.5, not an integer"),
            (lambda m: m.pop("methods"), "methods is missing"),
            (lambda m: m.update(monitor=[1]), "monitor is list, not an object")]:
        meta = json.loads(json.dumps(good))
        edit(meta)
        msg = one_line(save_detector, model, meta, tmp_path / "bad.onnx")
        assert words in msg, msg
        assert not (tmp_path / "bad.onnx").exists()
