"""Warnings and progress go through stdlib logging (logger "edgeood"): visible on stderr by
default, captured by logging where an application routes it, and one line per stage when
progress is on and stderr is not a terminal."""
from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

import edgeood
from edgeood.pipeline.export import CALIBRATE_STAGES, EXPORT_STAGES
from tests.helpers.cli import PROGRESS_LINE

FEW = "holds 40 images; thresholds from fewer than 100"


def _python(code: str) -> subprocess.CompletedProcess:
    """code in a fresh interpreter, stderr a pipe (not a terminal), no logging configured."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False)


def _warning(few) -> str:
    return f"warning: {few} {FEW} calibration images are unreliable"


def _stage_names(stages) -> list[str]:
    return [s.__name__.removesuffix("_stage") for s in stages]


@pytest.fixture(scope="module")
def few(digits_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("logging") / "few.npy"
    np.save(path, digits_data.val[0][:40])
    return path


def test_warnings_are_log_records_and_still_printed(caplog, capsys, digits_detector, few,
                                                    tmp_path):
    with caplog.at_level(logging.WARNING, logger="edgeood"):
        edgeood.calibrate(digits_detector.path, str(few), out=tmp_path / "d.onnx")
    records = [r for r in caplog.records if FEW in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert records[0].name.startswith("edgeood.")
    err = capsys.readouterr().err
    assert err.count(f"warning: {few} {FEW}") == 1, err


def test_warnings_reach_stderr_with_no_logging_configured(digits_detector, few, tmp_path):
    call = (f"edgeood.calibrate({str(digits_detector.path)!r}, {str(few)!r}, "
            f"out={str(tmp_path / 'd.onnx')!r})")
    proc = _python(f"import edgeood\n{call}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [_warning(few)], proc.stderr
    # an application that logs to stderr itself gets each warning once, in its own format
    proc = _python(f"import logging, edgeood\nlogging.basicConfig()\n{call}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(FEW) == 1 and "WARNING:edgeood." in proc.stderr, proc.stderr
    # and can silence them
    proc = _python("import logging, edgeood\nlogging.getLogger('edgeood').setLevel(40)\n"
                   f"{call}")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_export_without_a_terminal_prints_one_line_per_stage(digits_model, few, tmp_path):
    def export(progress: bool) -> list[str]:
        proc = _python("import edgeood\n"
                       f"edgeood.export({str(digits_model)!r}, data={str(few)!r}, "
                       f"methods=['energy'], recipe='digits_cnn', progress={progress}, "
                       f"out={str(tmp_path / 'd.onnx')!r})")
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "d.onnx").is_file()
        return proc.stderr.splitlines()

    lines = export(progress=True)
    stages = [ln for ln in lines if PROGRESS_LINE.fullmatch(ln)]
    assert [s.split(" ...")[0] for s in stages] == [f"export: {n}"
                                                   for n in _stage_names(EXPORT_STAGES)], lines
    assert [ln for ln in lines if ln not in stages] == [_warning(few)], lines
    assert not any(PROGRESS_LINE.fullmatch(ln) for ln in export(progress=False))


def test_cli_logging_quiet_and_debug(digits_detector, few, tmp_path):
    def calibrate(quiet: bool, debug: bool) -> list[str]:
        proc = _python(
            "import logging, edgeood\nfrom edgeood.progress import setup_cli_logging\n"
            "logging.basicConfig()\n"  # whatever configured the root logger: said once
            f"setup_cli_logging(quiet={quiet}, debug={debug})\n"
            f"edgeood.calibrate({str(digits_detector.path)!r}, {str(few)!r}, progress=True, "
            f"out={str(tmp_path / 'd.onnx')!r})")
        assert proc.returncode == 0, proc.stderr
        return proc.stderr.splitlines()

    warning = _warning(few)
    assert calibrate(quiet=True, debug=False) == [warning]
    lines = calibrate(quiet=False, debug=False)
    stages = [ln for ln in lines if PROGRESS_LINE.fullmatch(ln)]
    assert [s.split(" ...")[0] for s in stages] == [f"calibrate: {n}"
                                                   for n in _stage_names(CALIBRATE_STAGES)]
    assert [ln for ln in lines if ln not in stages] == [warning], lines
    debug = calibrate(quiet=False, debug=True)
    assert warning in debug and any(ln.startswith("debug: edgeood.") for ln in debug), debug
