"""One unreadable image does not stop a run, an eval or an export: it is skipped with one
warning line naming the file, the count is said at the end, and strict keeps the old stop."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import edgeood
from edgeood.data import Preprocess, open_source
from edgeood.errors import EdgeoodError


@pytest.fixture()
def folder(tmp_path, digits_data):
    """24 good digit images in two class folders, a text file named .png and a truncated PNG."""
    for i in range(24):
        cls = tmp_path / f"class{i % 2}"
        cls.mkdir(exist_ok=True)
        Image.fromarray(digits_data.val[0][i, :, :, 0]).save(cls / f"{i:02d}.png")
    (tmp_path / "class0" / "zz_text.png").write_bytes(b"not a png")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(
        buf, "PNG")
    (tmp_path / "class1" / "zz_truncated.png").write_bytes(buf.getvalue()[:200])
    return tmp_path


def test_unreadable_images_are_skipped_with_one_line_each(folder, capsys):
    src = open_source(folder)
    err = capsys.readouterr().err.splitlines()
    assert len(src) == 24 and len(src.labels) == 24
    assert sorted(s.rsplit("/", 1)[-1] for s in src.skipped) == ["zz_text.png",
                                                                  "zz_truncated.png"]
    assert sum("skipping" in line and "zz_text.png" in line for line in err) == 1
    assert sum("skipping" in line and "zz_truncated.png" in line for line in err) == 1
    assert any("2 of 26 images skipped" in line for line in err)
    pre = Preprocess(size=(8, 8), channels=1, mean=(0.5,), std=(0.5,))
    x = np.concatenate([b.x for b in src.batches(pre, 10)])
    assert x.shape == (24, 1, 8, 8) and np.isfinite(x).all()


def test_strict_stops_at_the_first_unreadable_image(folder):
    src = open_source(folder, strict=True)
    assert len(src) == 26 and src.skipped == []
    pre = Preprocess(size=(8, 8), channels=1, mean=(0.5,), std=(0.5,))
    with pytest.raises(EdgeoodError, match="cannot read image .*zz_t"):
        for _ in src.batches(pre, 32):
            pass


def test_a_folder_of_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(EdgeoodError, match="none of its 1 images can be read"):
        open_source(tmp_path)


def test_empty_inputs_are_one_line_errors(digits_detector):
    det = edgeood.load(digits_detector.path)
    for empty in (np.zeros((0, 8, 8, 1), np.uint8), [], np.zeros((0, 1, 8, 8), np.float32)):
        with pytest.raises(EdgeoodError, match="holds no images"):
            det(empty)
    with pytest.raises(EdgeoodError, match="a list holding str"):
        det(["a.png"])
