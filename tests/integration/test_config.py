"""One table of options (edgeood.config): errors speak the caller's vocabulary (`tpr` from
Python, `--tpr` on the command line), unknown keywords and recipe keys get a did-you-mean,
wrong mean/std lengths are one line, and requests and configs are built by keyword only."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import edgeood
from edgeood.cli.app import app
from edgeood.errors import EdgeoodError

ROOT = Path(edgeood.__file__).resolve().parent


def _cli_error(*args) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, res.output
    return lines[0][len("error: "):]


def _py_error(fn, *args, **kwargs) -> str:
    with pytest.raises(EdgeoodError) as err:
        fn(*args, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("name, flag, value, text", [
    ("tpr", "--tpr", 1.5, "1.5 must be in (0, 1)"),
    ("tpr", "--tpr", 0.0, "0.0 must be in (0, 1)"),
    ("batch", "--batch", 0, "0 must be >= 1"),
    ("imgsz", "--imgsz", "0", "'0' must be one or two positive integers"),
    ("input", "--input", "unit8", "unit8 must be one of float, uint8"),
    ("int8_method", "--int8-method", "entropi", "entropi must be one of"),
])
def test_the_same_bad_value_is_named_as_the_caller_wrote_it(name, flag, value, text,
                                                             digits_model, tmp_path):
    out = tmp_path / "d.onnx"
    py = _py_error(edgeood.export, digits_model, methods="energy", out=out, **{name: value})
    cli = _cli_error("export", digits_model, "--methods", "energy", "--out", out, flag, value)
    assert py.startswith(f"{name} {text}"), py
    assert cli.startswith(f"{flag} {text}"), cli
    assert not out.exists()


def test_cross_option_errors_in_the_callers_vocabulary(digits_model, digits_data, tmp_path):
    py = _py_error(edgeood.export, digits_model, methods="energy", int8=True)
    cli = _cli_error("export", digits_model, "--methods", "energy", "--int8")
    assert py.startswith("int8 calibrates") and "data=ID_DIR" in py
    assert cli.startswith("--int8 calibrates") and "--data ID_DIR" in cli
    py = _py_error(edgeood.export, digits_model, methods="energy,msp", primary="enrgy")
    cli = _cli_error("export", digits_model, "--methods", "energy,msp", "--primary", "enrgy")
    assert py.startswith("primary enrgy is not among methods") and "did you mean energy" in py
    assert cli.startswith("--primary enrgy is not among --methods")
    py = _py_error(edgeood.export, digits_model, methods="energy", arl=0.5)
    cli = _cli_error("export", digits_model, "--methods", "energy", "--arl", 0.5)
    assert py.startswith("arl 0.5 is outside") and cli.startswith("--arl 0.5 is outside")


def test_calibrate_speaks_python_too(digits_detector, digits_data, tmp_path):
    py = _py_error(edgeood.calibrate, digits_detector.path, digits_data.val[0], tpr=2.0)
    assert py.startswith("tpr 2.0 must be in (0, 1)")
    np.save(tmp_path / "val.npy", digits_data.val[0])
    cli = _cli_error("calibrate", digits_detector.path, "--data", tmp_path / "val.npy",
                     "--tpr", 2.0, "--out", tmp_path / "c.onnx")
    assert cli.startswith("--tpr 2.0 must be in (0, 1)")


@pytest.mark.parametrize("call, kwargs, close", [
    ("export", {"meen": (0.5,)}, "mean"),
    ("export", {"tprr": 0.9}, "tpr"),
    ("calibrate", {"tpR": 0.9}, "tpr"),
    ("build", {"hlaf": True}, "half"),
])
def test_unknown_keyword_gets_a_did_you_mean(call, kwargs, close, digits_detector,
                                             digits_model, digits_data):
    target = digits_model if call == "export" else digits_detector.path
    args = (digits_data.val[0],) if call == "calibrate" else ()
    msg = _py_error(getattr(edgeood, call), target, *args, **kwargs)
    key = next(iter(kwargs))
    assert f"unknown option '{key}'" in msg and f"did you mean {close}" in msg, msg


def _recipe(tmp_path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, key, close", [
    ('[input]\nsize = [8, 8]\nmeen = [0.5]\n', "[input] meen", "mean"),
    ('[inptu]\nsize = [8, 8]\n', "inptu", "input"),
    ('[taps]\nlogit = "x"\n', "[taps] logit", "logits"),
    ('[methods]\ndefault = ["energy"]\n[methods.reactt]\npercentile = 90\n', "[methods.reactt]",
     "react"),
    ('[methods]\ndefault = ["enrgy"]\n', "[methods] default", "energy"),
    ('[methods.react]\npercentil = 90\n', "[methods.react] percentil", "percentile"),
])
def test_recipe_unknown_key_names_the_file_and_the_key(text, key, close, digits_model,
                                                       tmp_path):
    path = _recipe(tmp_path, text)
    py = _py_error(edgeood.export, digits_model, methods="energy", recipe=str(path))
    assert py.startswith(f"recipe {path}: {key} ") and f"did you mean {close}" in py, py
    cli = _cli_error("export", digits_model, "--methods", "energy", "--recipe", path)
    assert cli == py


def test_recipe_wrong_shapes_are_one_line(digits_model, digits_data, tmp_path):
    path = _recipe(tmp_path, "[input]\nsize = [8, 8]\nmean = [0.5, 0.5]\n")
    msg = _py_error(edgeood.export, digits_model, data=digits_data.val[0], methods="energy",
                    recipe=str(path), out=tmp_path / "d.onnx")
    assert msg.startswith(f"recipe {path}: [input] mean has 2 values but the model takes 1 "
                          "channel"), msg
    path = _recipe(tmp_path, "[input]\nchannels = 3\nstd = [0.5, 0.5]\n")
    msg = _py_error(edgeood.export, digits_model, methods="energy", recipe=str(path))
    assert msg.startswith(f"recipe {path}: [input] std has 2 values but the model takes 3 "
                          "channels"), msg
    path = _recipe(tmp_path, '[input]\nmean = "0.5"\n')
    assert "[input] mean = '0.5' must be a list of numbers" in _py_error(
        edgeood.export, digits_model, methods="energy", recipe=str(path))
    assert not (tmp_path / "d.onnx").exists()


def test_api_mean_of_the_wrong_length_is_one_line(digits_model, digits_data, tmp_path):
    msg = _py_error(edgeood.export, digits_model, data=digits_data.val[0], methods="energy",
                    recipe="digits_cnn", mean=(0.5, 0.5), out=tmp_path / "d.onnx")
    assert msg.startswith("mean [0.5, 0.5] has 2 values but the model takes 1 channel"), msg


def test_shipped_recipes_pass_the_checks():
    from edgeood.pipeline.recipes import available, load_recipe
    for name in available():
        rec = load_recipe(name)
        assert rec.name == name and rec.path is not None


def test_table_choices_match_the_layers_that_use_them():
    from edgeood.config import INT8_METHODS
    from edgeood.graph.precision import INT8_METHODS as precision_methods
    assert INT8_METHODS == precision_methods


KEYWORD_ONLY = {"ExportRequest", "CalibrationRequest", "MonitorOptions", "ExportConfig",
                "CalibrateConfig", "BuildConfig", "TritonConfig", "DeepStreamConfig",
                "WatchConfig", "ProfileConfig", "DeployConfig"}


def test_requests_and_configs_are_built_by_keyword_only():
    """A reordering of fields must not silently swap two values: no positional construction."""
    seen = 0
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else \
                node.func.attr if isinstance(node.func, ast.Attribute) else ""
            if name in KEYWORD_ONLY:
                seen += 1
                assert not node.args, f"{path.relative_to(ROOT)}:{node.lineno}: {name}(...) " \
                                      "takes keywords only"
    assert seen >= 3
    from edgeood.pipeline.export import CalibrationRequest, ExportRequest
    for cls in (ExportRequest, CalibrationRequest):  # and the language refuses it
        with pytest.raises(TypeError):
            cls(None, 0.95, 32, 0, False)


def test_quiet_and_json_are_taken_by_deploy_and_check(digits_detector, tmp_path):
    """The README's promise: every command takes --json and --quiet (deploy refused -q)."""
    runner = CliRunner()
    res = runner.invoke(app, ["deploy", "triton", str(digits_detector.path), "--out",
                              str(tmp_path / "repo"), "--kind", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "next:" not in res.output
    assert (tmp_path / "repo").is_dir()
    loud = runner.invoke(app, ["deploy", "triton", str(digits_detector.path), "--out",
                               str(tmp_path / "repo2"), "--kind", "cpu"])
    assert loud.exit_code == 0 and "next: tritonserver" in loud.output
    res = runner.invoke(app, ["check", str(digits_detector.path), "-q"])
    assert res.exit_code in (0, 1) and "parser limits" in res.output
    bad = _cli_error("deploy", "triton", digits_detector.path, "--out", tmp_path / "r3",
                     "--kind", "tpu")
    assert bad.startswith("--kind tpu must be one of gpu, cpu, auto")


def test_build_options_in_the_callers_vocabulary(digits_detector):
    """Checked from the table before TensorRT is needed (so also where it is not installed)."""
    py = _py_error(edgeood.build, digits_detector.path, batch=0)
    cli = _cli_error("build", digits_detector.path, "--batch", 0)
    assert py.startswith("batch 0 must be >= 1") and cli.startswith("--batch 0 must be >= 1")
    py = _py_error(edgeood.build, digits_detector.path, workspace=-1.0)
    assert py.startswith("workspace -1.0 must be > 0 (GB)")


def test_layers_below_the_api_do_not_import_the_config():
    """edgeood.config sits beside edgeood.api: the layers below receive config objects and
    import the module for type checking only."""
    below = ("pipeline", "tools", "deploy", "methods", "graph", "runtime", "tensorrt",
             "artifact", "stats")
    for pkg in below:
        for path in (ROOT / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text())
            guarded = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test)
                       for n in ast.walk(node)}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and id(node) not in guarded:
                    assert node.module not in ("edgeood.config", "edgeood.cli.app"), \
                        f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}"


def test_named_recipes_found_from_the_source_tree_too():
    """Running from a checkout (CI: the package installed, tests importing the checkout), the
    named recipes come from the repository's export_recipes/."""
    from edgeood.pipeline import recipes
    from tests.helpers import REPO
    assert (REPO / "export_recipes").resolve() in [d.resolve() for d in recipes.recipe_dirs()]
    assert {"digits_cnn", "efficientnet_lite0"} <= set(recipes.available())


def test_errors_deep_in_the_library_speak_the_callers_words(digits_detector, tmp_path):
    """Checks below the options table (the runtime's device, the TensorRT builder) name the
    option as the caller wrote it: `device` from Python, `--device` on the command line."""
    import edgeood
    from edgeood.errors import called_from, spell
    with pytest.raises(EdgeoodError) as python_err:
        edgeood.load(digits_detector.path, device="gpux")
    assert str(python_err.value).startswith("device gpux") and "--device" not in \
        str(python_err.value)
    with called_from("cli"):
        assert spell("int8_method") == "--int8-method"
        with pytest.raises(EdgeoodError) as cli_err:
            edgeood.load(digits_detector.path, device="gpux")
    assert str(cli_err.value).startswith("--device gpux")
    assert spell("int8_method") == "int8_method"  # the CLI's context ended with its block
