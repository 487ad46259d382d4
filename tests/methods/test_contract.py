"""The method contract: every method round-trips through the saved metadata, a method added
from outside the package works end to end, and the generic modules know no method names."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest

import edgeood
from edgeood.errors import EdgeoodError
from edgeood.methods import REGISTRY, Method, presentation, register, registry
from edgeood.runtime.onnxruntime.backend import OrtBackend
from tests.helpers.methods import fitted_methods, tap_dict

ROUND_TRIP = list(registry())  # every method, built-in or installed


@pytest.fixture(scope="module")
def every_method(digits_model, digits_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("contract") / "all.onnx"
    from edgeood.data import ImageSource  # labelled: grood fits class prototypes
    val = ImageSource("digits-val", array=digits_data.val[0], labels=digits_data.val[1])
    return edgeood.export(digits_model, data=val, methods=ROUND_TRIP,
                          recipe="digits_cnn", out=out, keep_taps=True,
                          params={"adascale_a": {"tune": True}})


def test_every_method_rebuilt_from_metadata_scores_like_the_graph(every_method, digits_model,
                                                                  digits_data):
    """from_metadata (+ the detector's constants) gives a method whose NumPy reference equals
    the folded score: nothing a score depends on is lost on saving."""
    from edgeood.zoo import digits
    meta = json.loads(Path(str(every_method.path) + ".json").read_text())  # the saved sidecar
    x = digits.PREPROCESS.normalize(np.concatenate([digits_data.test[0], digits_data.far[:100]]))
    out = OrtBackend(every_method.path).run(x)
    methods = fitted_methods(digits_model, meta, every_method.path)
    assert set(methods) == set(ROUND_TRIP)
    taps = tap_dict(out, meta)
    for name, m in methods.items():
        want = m.reference(taps)
        got = out[f"score_{name}"]
        assert np.abs(got - want).max() / max(1.0, np.abs(want).max()) <= 1e-4, name
        assert m.describe() == {k: v for k, v in meta["methods"][name].items()
                                if k not in CALIBRATION_KEYS}, name
    assert meta["methods"]["adascale_a"]["tuning"]["against"] == "jigsaw"


# what calibration (not the method) writes into a method's entry; fitted_images: the
# fingerprints of the images a held-out method was fitted on (left out on recalibration)
CALIBRATION_KEYS = ("threshold", "reference_size", "calibration_count", "fitted_images")


def test_saved_entry_holds_no_fitting_scratch(every_method):
    for name, entry in every_method.metadata["methods"].items():
        assert not [k for k in entry if k.startswith("_")], name
        cls = REGISTRY[name]
        allowed = set(cls.accepted_params()) | set(cls.fitted_keys) | set(CALIBRATION_KEYS) | {
            "graph_arrays", "tuning", "warnings"}
        extra = set(entry) - allowed
        # what remains is derived (shown, recomputed on load): the method must produce it again
        m = fitted_methods_single(name, entry)
        assert extra <= set(m.derived()), (name, extra - set(m.derived()))


def fitted_methods_single(name, entry):
    from edgeood.graph.head import ClassifierHead
    from edgeood.methods import ModelInfo, from_metadata
    w = np.zeros((6, 128), np.float32)
    head = ClassifierHead("z", "logits", w, np.zeros(6, np.float32), "Gemm")
    constants = {v: np.zeros((1, 4), np.float32) for v in entry.get("graph_arrays", {}).values()}
    return from_metadata(name, entry, ModelInfo(head), constants)


class _ZDistance(Method):
    """A method defined outside the package: score = -||z - mu||, mu the ID mean of z."""

    name = "test_zdistance"
    defaults = {"scale": 1.0}
    fitted_keys = ("mu",)
    needs_fit = True
    needs_linear_head = True

    def fit_taps(self):
        return ["z"]

    def fit_update(self, taps, source):
        if source == "id":
            self.scratch.setdefault("z", []).append(taps["z"])

    def fit_end(self):
        self.fitted["mu"] = np.concatenate(self.scratch["z"]).mean(0).astype(np.float32)

    def taps(self):
        return ["z"]

    def build(self, graph, t):
        d = graph.sub(t["z"], self.fitted["mu"].reshape(1, -1))
        norm = graph.sqrt(graph.reduce("ReduceSum", graph.mul(d, d), [1]))
        return graph.mul(norm, np.float32(-self.params["scale"]))

    def reference(self, taps):
        d = np.asarray(taps["z"], np.float64) - np.asarray(self.fitted["mu"], np.float64)
        return -self.params["scale"] * np.linalg.norm(d, axis=1)

    class Presentation(presentation.Presentation):
        def summary(self, entry):
            return f"mean of {len(entry['mu'])} features"


@pytest.fixture
def registered_zdistance():
    register(_ZDistance)
    yield _ZDistance
    REGISTRY.pop(_ZDistance.name)


def test_a_method_registered_from_outside_works_end_to_end(registered_zdistance, digits_model,
                                                          digits_data, tmp_path):
    from tests.helpers.cli import cli
    from edgeood.zoo import digits
    res = edgeood.export(digits_model, data=digits_data.val[0],
                         methods=["test_zdistance", "energy"], recipe="digits_cnn",
                         params={"test_zdistance": {"scale": 2.0}}, out=tmp_path / "z.onnx",
                         keep_taps=True)
    x = digits.PREPROCESS.normalize(digits_data.test[0])
    out = OrtBackend(res.path).run(x)
    z = out["tap_z"].astype(np.float64)
    mu = np.asarray(res.metadata["methods"]["test_zdistance"]["mu"])
    cal = OrtBackend(res.path).run(digits.PREPROCESS.normalize(digits_data.val[0]))["tap_z"]
    np.testing.assert_allclose(mu, cal.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["score_test_zdistance"], -2.0 * np.linalg.norm(z - mu, axis=1),
                               rtol=1e-4, atol=1e-5)
    assert "pvalue_test_zdistance" in out and res.metadata["methods"]["test_zdistance"]["threshold"]
    # the CLI's table shows the method's own summary (run in-process: the registration is ours)
    from typer.testing import CliRunner
    from edgeood.cli.app import app
    shown = CliRunner().invoke(app, ["inspect", str(res.path)])
    assert shown.exit_code == 0 and "mean of 128 features" in shown.output
    del cli


# registered names that are everyday English words: in prose ("free energy", "a scale
# factor") they are words, so for them only a string that is exactly the name counts
PROSE_WORDS = {"energy", "scale", "react"}
OPT_OUT = "# not a method name"


def method_references(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, string) of each string constant (docstrings and f-string parts included) that
    names a method: it is exactly a registered name; or one of its identifier-like tokens
    (letters, digits, '_') is a registered name that is not an English word (PROSE_WORDS); or
    a token holds a registered name with an underscore ("tap_weiper_kld_perturbed_logits").
    A string whose lines carry the comment OPT_OUT is a word that only collides with a name
    (the preprocessing's "scale" key)."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        tokens = set(re.findall(r"[A-Za-z0-9_]+", node.value))
        hit = node.value.strip() in names or bool(tokens & (names - PROSE_WORDS)) or any(
            n in t for t in tokens for n in names if "_" in n)
        if hit and not any(OPT_OUT in line
                           for line in lines[node.lineno - 1:node.end_lineno]):
            found.append((node.lineno, node.value[:60]))
    return found


GENERIC_MODULES = ["cli/app.py", "api.py", "pipeline/calibrate.py", "pipeline/export.py",
                   "tools/inspect.py", "graph/fold.py"]


def test_generic_modules_name_no_method():
    """No module of edgeood outside edgeood/methods/ names a method (method_references has
    the rule): they ask the registry, so a method is one file. cli, api, calibrate, inspect
    and fold do not even use a method's name as an English word."""
    import edgeood as pkg
    names = set(registry())
    root = Path(pkg.__file__).parent
    for rel in GENERIC_MODULES:
        source = (root / rel).read_text()
        lines = source.splitlines()
        strings = {n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)
                   and isinstance(n.value, str)
                   and "# not a method name" not in lines[n.lineno - 1]}
        words = {w for s in strings for w in s.replace(",", " ").replace("/", " ").split()}
        assert not names & (strings | words), (rel, names & (strings | words))
    found = {str(p.relative_to(root)): refs for p in sorted(root.rglob("*.py"))
             if p.relative_to(root).parts[0] != "methods"
             and (refs := method_references(p.read_text(encoding="utf-8"), names))}
    assert not found, found


def test_the_method_reference_rule():
    """The rule flags code names and identifiers, not English prose."""
    names = {"energy", "scale", "msp", "weiper_kld"}
    flagged = lambda src: [s for _, s in method_references(src, names)]  # noqa: E731
    assert flagged('x = "energy"') == ["energy"]
    assert flagged('x = "msp"') == ["msp"]
    assert flagged('x = "use msp or maxlogit"') == ["use msp or maxlogit"]
    assert flagged('x = f"--param weiper_kld.histogram={h}"') == ["--param weiper_kld.histogram="]
    assert flagged('x = "tap_weiper_kld_perturbed_logits"') == ["tap_weiper_kld_perturbed_logits"]
    assert flagged('"""The free energy sets the scale of the score."""') == []
    assert flagged('d["scale"] = 1  # not a method name: the pixel scaling') == []


@pytest.mark.parametrize("kwargs, needle", [
    ({"tpr": 1.5}, "tpr 1.5 must be in (0, 1)"),
    ({"tpr": 0}, "tpr 0 must be in (0, 1)"),
    ({"imgsz": "0"}, "imgsz '0' must be one or two positive integers"),
    ({"imgsz": "a,b"}, "must be one or two positive integers"),
    ({"imgsz": "1,2,3"}, "must be one or two positive integers"),
    ({"primary": "enrgy"}, "did you mean energy"),
    ({"methods": ["energy", "reactt"]}, "did you mean react"),
    ({"batch": 0}, "batch 0 must be >= 1"),
])
def test_export_arguments_validated_up_front(kwargs, needle, digits_model, tmp_path):
    """Bad arguments fail before any work: no data is read (there is none) and nothing is
    written."""
    args = {"methods": ["energy", "msp"], "out": tmp_path / "d.onnx", **kwargs}
    with pytest.raises(EdgeoodError) as err:
        edgeood.export(digits_model, data=None, **args)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not str(err.value).startswith("--")  # Python names, not CLI flags
    assert list(tmp_path.iterdir()) == []


def test_adascale_warns_on_small_feature_dimension(tmp_path, capsys):
    """D = 32 < 100: k1n = floor(32 * 1 / 100) = 0, so Q vanishes; the export says so with the
    numbers and the fix, and the metadata keeps the warning."""
    import torch
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(32, 4))
    x = np.random.default_rng(0).normal(size=(24, 1, 8, 8)).astype(np.float32)
    res = edgeood.export(net, data=x, methods=["adascale_a"], imgsz=8,
                         recipe="digits_cnn", out=tmp_path / "a.onnx")
    (w,) = res.metadata["methods"]["adascale_a"]["warnings"]
    assert "D = 32" in w and "k1n = floor(D k1 / 100) = 0" in w and "(k2n = 1)" in w
    assert "--param adascale_a.k1=" in w and "--tune" in w
    assert w in capsys.readouterr().err
    ok = edgeood.export(net, data=x, methods=["adascale_a"], imgsz=8, recipe="digits_cnn",
                        params={"adascale_a": {"k1": 4}}, out=tmp_path / "b.onnx")
    assert "warnings" not in ok.metadata["methods"]["adascale_a"]
