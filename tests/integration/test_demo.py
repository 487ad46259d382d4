"""The shipped digits CNN, and the demo's digits report that README.md's table must equal."""
from __future__ import annotations

import hashlib
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgeood.errors import EdgeoodError
from edgeood.zoo import demo, digits
from tests.helpers import REPO

README = REPO / "README.md"
START, END = "<!-- digits-table:start -->", "<!-- digits-table:end -->"


def readme_table() -> str:
    text = README.read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1, "README needs one pair of markers"
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def test_shipped_model_sha_loads_and_classifies(digits_data):
    assert hashlib.sha256(digits.SHIPPED.read_bytes()).hexdigest() == digits.SHIPPED_SHA256
    path = digits.model_path(seed=0, data=digits_data)
    assert path == digits.SHIPPED
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, y = digits_data.test
    logits = sess.run(None, {sess.get_inputs()[0].name: digits.PREPROCESS.normalize(x)})[0]
    assert logits.shape == (len(y), digits.ID_CLASSES)
    # fixed weights: the predictions are deterministic (up to float rounding, far below the
    # smallest top-1 margin), and the shipped model gets all 217 ID test images right
    assert len(y) == 217 and int((logits.argmax(1) == y).sum()) == 217
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-3


def test_damaged_model_is_one_line_error(tmp_path, monkeypatch):
    bad = tmp_path / "digits_cnn.onnx"
    bad.write_bytes(digits.SHIPPED.read_bytes()[:-1])
    monkeypatch.setattr(digits, "SHIPPED", bad)
    with pytest.raises(EdgeoodError, match="damaged.*reinstall") as exc:
        digits.model_path()
    assert "\n" not in str(exc.value)
    monkeypatch.setattr(digits, "SHIPPED", tmp_path / "missing.onnx")
    with pytest.raises(EdgeoodError, match="missing"):
        digits.model_path()


@pytest.fixture(scope="module")
def digits_demo(tmp_path_factory):
    """The digits part of `edgeood demo`, run once, with what it echoed and what it showed."""
    from edgeood.cli.app import print_report
    out = tmp_path_factory.mktemp("demo")
    lines, shown = [], []
    result = demo.run_demo(out, lite0=False, progress=False, echo=lines.append,
                           show=shown.append)
    return out, result, lines, shown, print_report


def test_readme_table_is_the_demo_table(digits_demo):
    out, result, lines, _, _ = digits_demo
    table = (out / "digits_table.md").read_text(encoding="utf-8")
    assert table == demo.digits_table(result["digits"])
    assert any(str(out / "digits_table.md") in line for line in lines)
    assert any("shipped model" in line for line in lines)
    assert [r["method"] for r in result["digits"]["results"]][:len(demo.DIGITS_METHODS)] == \
        demo.DIGITS_METHODS
    assert table == readme_table(), ("README.md's digits table is out of date: paste "
                                     f"{out / 'digits_table.md'} between its markers")


def test_printed_primary_auroc_matches_readme(digits_demo, capsys):
    _, result, _, shown, print_report = digits_demo
    report = result["digits"]
    assert report["primary"] == "energy" and report["id_accuracy"] == 1.0
    capsys.readouterr()
    print_report(shown[0])  # what `edgeood demo` prints
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if re.search(r"\benergy\b.*near", line))
    readme_row = next(line for line in readme_table().splitlines()
                      if line.startswith("| energy (primary) |"))
    near_auroc = readme_row.split("|")[2].strip()
    assert re.findall(r"\d+\.\d\d", row)[0] == near_auroc
