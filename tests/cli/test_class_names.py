"""Class names: export takes --names (a file, one per line or JSON) and otherwise reads them
from the model's metadata_props (names / classes / labels, Ultralytics' dict string included)
or from the class sub-folders of --data; they are stored, printed by run and watch, and
det(frames).names gives the predicted class's name per image."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

import edgeood
from edgeood.artifact.metadata import read_metadata
from edgeood.tools import watch as w
from tests.helpers.cli import cli

NAMES = ["zero", "one", "two", "three", "four", "five"]  # the digits model's 6 ID classes


def _source_argmax(model_path, images: np.ndarray) -> np.ndarray:
    """The source classifier's predicted class, run directly on preprocessed images."""
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    return sess.run(None, {inp: images})[0].argmax(axis=1)


def _with_props(model_path, tmp_path, **props) -> str:
    m = onnx.load(str(model_path))
    for k, v in props.items():
        m.metadata_props.add(key=k, value=v)
    out = tmp_path / "model_with_names.onnx"
    onnx.save(m, str(out))
    return str(out)


@pytest.fixture(scope="module")
def named(tmp_path_factory, digits_model, digits_data):
    d = tmp_path_factory.mktemp("named")
    names = d / "names.txt"
    names.write_text("\n".join(NAMES) + "\n")
    out = d / "named.onnx"
    cli("export", digits_model, "--recipe", "digits_cnn", "--methods", "energy,msp", "--data",
        _npy(d, digits_data.val[0]), "--names", names,
        "--out", out, "--quiet")
    return out


def _npy(folder, arr) -> str:
    p = folder / "val.npy"
    np.save(p, arr)
    return str(p)


def test_names_file_is_stored_and_det_names_match_the_source_model(named, digits_model,
                                                                   digits_data):
    assert read_metadata(named)["class_names"] == NAMES
    det = edgeood.load(named)
    frames = digits_data.test[0]
    res = det(frames)
    x = det.preprocess.normalize(frames)
    expect = [NAMES[i] for i in _source_argmax(digits_model, x)]
    assert res.names == expect
    assert [r["name"] for r in res.rows()] == expect


def test_run_and_watch_print_the_names(named, digits_data, tmp_path):
    frames = tmp_path / "frames.npy"
    np.save(frames, digits_data.test[0][:12])
    det = edgeood.load(named)
    expect = det(digits_data.test[0][:12]).names
    rows = json.loads(cli("run", named, frames, "--json").stdout)["images"]
    assert [r["name"] for r in rows] == expect
    table = cli("run", named, frames).stdout
    for r in rows:
        assert f"{r['label']} {r['name']}" in table
    lines = [json.loads(ln) for ln in cli("watch", named, frames, "--json").stdout.splitlines()]
    assert [f["name"] for f in lines[:-1]] == expect
    monitor = w.open_monitor(det)
    for f, name in zip(w.watch(det, monitor, digits_data.test[0][:12]), expect):
        assert f"class {f.label} {name}" in w.status_line(f, monitor.arl)


@pytest.mark.parametrize("text", [json.dumps(NAMES), json.dumps(dict(enumerate(NAMES))),
                                  ", ".join(NAMES)])
def test_json_and_comma_names_files(text, tmp_path, digits_model, digits_data):
    names = tmp_path / "names.json"
    names.write_text(text)
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy"],
                         recipe="digits_cnn", names=names, out=tmp_path / "d.onnx")
    assert res.metadata["class_names"] == NAMES


def test_names_as_a_python_list(tmp_path, digits_model, digits_data):
    res = edgeood.export(digits_model, data=digits_data.val[0], methods=["energy"],
                         recipe="digits_cnn", names=tuple(NAMES), out=tmp_path / "d.onnx")
    assert res.metadata["class_names"] == NAMES
    assert edgeood.load(res.path).class_names == NAMES


def test_names_from_model_metadata(tmp_path, digits_model, digits_data):
    ultralytics = str(dict(enumerate(NAMES)))  # "{0: 'zero', 1: 'one', ...}"
    for key, value in (("names", ultralytics), ("classes", json.dumps(NAMES)),
                       ("labels", "\n".join(NAMES))):
        model = _with_props(digits_model, tmp_path, **{key: value})
        res = edgeood.export(model, data=digits_data.val[0], methods=["energy"],
                             recipe="digits_cnn", out=tmp_path / f"{key}.onnx")
        assert res.metadata["class_names"] == NAMES, key


def test_names_from_class_folders(tmp_path, digits_model, digits_data):
    data = tmp_path / "data"
    folders = [f"c{k}_{n}" for k, n in enumerate(NAMES)]
    for i in range(30):
        d = data / folders[i % 6]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits_data.val[0][i, :, :, 0]).save(d / f"{i:02d}.png")
    res = edgeood.export(digits_model, data=data, methods=["energy"], recipe="digits_cnn",
                         out=tmp_path / "d.onnx")
    assert res.metadata["class_names"] == folders


def test_a_wrong_count_is_one_line(tmp_path, digits_model, digits_data, capsys):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(NAMES[:5]))
    out = tmp_path / "out" / "d.onnx"
    out.parent.mkdir()
    proc = cli("export", digits_model, "--recipe", "digits_cnn", "--methods", "energy",
               "--data", _npy(tmp_path, digits_data.val[0]), "--names", names, "--out", out,
               check=False)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1
    assert "--names" in errors[0] and "5 class names" in errors[0] and "6 classes" in errors[0]
    assert list(out.parent.iterdir()) == []
    # names in the model's metadata of the wrong count: one warning line, nothing stored
    model = _with_props(digits_model, tmp_path, names=str(dict(enumerate(NAMES[:4]))))
    res = edgeood.export(model, data=digits_data.val[0], methods=["energy"],
                         recipe="digits_cnn", out=tmp_path / "w.onnx")
    assert "class_names" not in res.metadata
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "4 names" in ln]
    assert len(warned) == 1
    assert edgeood.load(res.path)(digits_data.test[0][:3]).names is None
