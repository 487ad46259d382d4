"""A new method is one file: written outside the package, installed only as an entry point
(a minimal *.dist-info on sys.path), it reaches export, inspect, eval, the demo's method list
and the docs' method table without a line of edgeood changed. The method is a k-nearest-
neighbour score on z built from the shared nearest-neighbour block. Everything runs in a
subprocess, so that the plugin's registration does not leak into other tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from edgeood.methods import registry

METHOD_FILE = '''
"""A third-party method in one file: score = -min_i ||z - Z_i||^2 over a bank of ID features."""
import numpy as np

from edgeood.methods import presentation
from edgeood.methods.base import Method, register
from edgeood.methods.blocks.nearest import (nearest_sq_distance, nearest_sq_distance_graph,
                                            sq_norms)


@register
class ZKnn(Method):
    """score = -min_i ||z - Z_i||^2, Z the z of the ID images."""

    name = "zknn"
    graph_arrays = ("bank", "bank_sq_norms")
    needs_fit = True
    needs_linear_head = True
    calibration_holdout = 0.5  # the bank holds its own fitting images

    def fit_taps(self):
        return ["z"]

    def fit_update(self, taps, source):
        if source == "id":
            self.scratch.setdefault("z", []).append(np.asarray(taps["z"], np.float32))

    def fit_end(self):
        bank = np.concatenate(self.scratch["z"])
        self.fitted.update(bank=bank, bank_sq_norms=sq_norms(bank))

    def taps(self):
        return ["z"]

    def build(self, graph, t):
        return graph.neg(nearest_sq_distance_graph(graph, t["z"],
                                                   self.array_constant(graph, "bank"),
                                                   self.array_constant(graph, "bank_sq_norms")))

    def reference(self, taps):
        return -nearest_sq_distance(taps["z"], self.fitted["bank"])

    def derived(self):
        return {"bank_entries": len(self.fitted["bank"])} if "bank" in self.fitted else {}

    class Presentation(presentation.Presentation):
        score = "-min_i ||z - Z_i||^2 over the ID features Z"
        fits = "the bank Z of ID penultimate features"
        notes = "exact search: one Gemm + ReduceMin"

        def summary(self, entry):
            return f"knn bank of {entry['bank_entries']} features"
'''

SCRIPT = '''
import json, subprocess, sys
import numpy as np

import edgeood
lazy = "zknn_method" not in sys.modules and "edgeood.methods.energy" not in sys.modules

from edgeood.data import ImageSource
from edgeood.methods import registry
from edgeood.methods.catalog import method_table
from edgeood.runtime.onnxruntime.backend import OrtBackend
from edgeood.tools.evaluate import evaluate
from edgeood.zoo import demo, digits
from tests.helpers.methods import fitted_methods, tap_dict

out = sys.argv[1]
data = digits.load_data(seed=0)
model = digits.model_path(seed=0, data=data)
res = edgeood.export(model, data=data.val[0], methods=["zknn", "energy"], recipe="digits_cnn",
                     out=out + "/knn.onnx", keep_taps=True)
x = digits.PREPROCESS.normalize(np.concatenate([data.test[0], data.far[:100]]))
outputs = OrtBackend(res.path).run(x)
method = fitted_methods(model, res.metadata, res.path)["zknn"]
want = method.reference(tap_dict(outputs, res.metadata))
shown = subprocess.run([sys.executable, "-m", "edgeood.cli", "inspect", str(res.path)],
                       capture_output=True, text=True, timeout=300)
report = evaluate(res.path, data.test[0], {"far": data.far[:100]})
json.dump({
    "lazy": lazy,
    "registry": list(registry()),
    "module": type(method).__module__,
    "outputs": sorted(outputs),
    "got": outputs["score_zknn"].tolist(),
    "want": want.tolist(),
    "tap_z": outputs["tap_z"].tolist(),
    "bank": np.asarray(method.fitted["bank"]).tolist(),
    "entry": res.metadata["methods"]["zknn"],
    "inspect": shown.stdout, "inspect_rc": shown.returncode, "inspect_err": shown.stderr,
    "eval_methods": sorted({r["method"] for r in report["results"]}),
    "eval_auroc": [r["auroc"] for r in report["results"] if r["method"] == "zknn"],
    "demo": demo.digits_methods(), "demo_constant": demo.DIGITS_METHODS,
    "table": method_table(),
}, open(out + "/result.json", "w"))
'''


def _install(tmp_path):
    """The method file plus a minimal distribution naming it in the edgeood.methods group."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "zknn_method.py").write_text(textwrap.dedent(METHOD_FILE))
    info = site / "zknn_method-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zknn-method\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[edgeood.methods]\nzknn = zknn_method:ZKnn\n")
    broken = site / "broken_method-0.1.dist-info"  # a plugin that cannot load is skipped
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-method\nVersion: 0.1\n")
    (broken / "entry_points.txt").write_text("[edgeood.methods]\nbroken = no_such_module_x\n")
    return site


def test_a_one_file_method_reaches_export_inspect_eval_demo_and_docs(tmp_path):
    site = _install(tmp_path)
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(site)])}
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "result.json").read_text())

    # found through its entry point, only on first use, listed after the built-in methods
    assert r["lazy"] and r["module"] == "zknn_method"
    assert r["registry"][-1] == "zknn" and r["registry"][:-1] == list(registry())
    assert "zknn" not in registry()  # nothing leaked into this process
    assert "warning: method plugin 'broken' (no_such_module_x) failed to load" in proc.stderr

    # export: the folded score equals the method's own NumPy reference, and an independent
    # one computed here from the kept z tap and the bank
    assert "score_zknn" in r["outputs"] and "pvalue_zknn" in r["outputs"]
    got, want = np.asarray(r["got"]), np.asarray(r["want"])
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    z, bank = np.asarray(r["tap_z"], np.float64), np.asarray(r["bank"], np.float64)
    independent = -((z[:, None, :] - bank[None, :, :]) ** 2).sum(-1).min(1)
    np.testing.assert_allclose(want, independent, rtol=1e-9, atol=1e-9)
    assert len(bank) == r["entry"]["bank_entries"] and "threshold" in r["entry"]

    # inspect names it with its own summary; eval reports it; the demo and the docs list it
    assert r["inspect_rc"] == 0, r["inspect_err"]
    assert "zknn" in r["inspect"] and f"knn bank of {len(bank)} features" in r["inspect"]
    assert r["eval_methods"] == ["energy", "zknn"] and 0.5 < r["eval_auroc"][0] <= 1.0
    assert r["demo"][-1] == "zknn" and r["demo_constant"] == r["demo"]
    rows = [line for line in r["table"].splitlines() if line.startswith("| `zknn` |")]
    assert rows == ["| `zknn` | -min_i \\|\\|z - Z_i\\|\\|^2 over the ID features Z | the bank Z of "
                    "ID penultimate features | exact search: one Gemm + ReduceMin |"]


def test_the_registry_holds_exactly_the_method_classes_of_the_package():
    """Every named Method subclass defined in edgeood.methods is registered, and nothing else:
    helper modules (base, numeric, presentation, the blocks, ...) are not taken for methods."""
    import importlib
    import pkgutil

    import edgeood.methods as package
    from edgeood.methods.base import Method
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
    found, todo = {}, [Method]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.name and cls.__module__.startswith(package.__name__ + "."):
            found[cls.name] = cls
    assert found == dict(registry())
    # declared by the classes, in listing order: today's defaults
    assert package.DEFAULT_METHODS == ["energy", "msp", "maxlogit", "react", "scale",
                                       "featurenorm"]

