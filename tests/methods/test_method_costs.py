"""`edgeood export --help` lists every registered method with what its head costs (graph
nodes, the formula of its large constants in C and D), generated from the registry; the costs
it states are those of real folded heads."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import edgeood
from edgeood.methods.catalog import methods_help
from edgeood.methods.presentation import evaluate_bytes, presentation
from edgeood.methods.registry import registry
from tests.helpers.cli import cli


def test_export_help_lists_every_method_with_its_cost():
    import os
    env_cols = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "4000"  # one help line per option: no wrapping to search through
    try:
        out = cli("export", "--help").stdout
    finally:
        if env_cols is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = env_cols
    line = next(ln for ln in out.splitlines() if "--methods" in ln)
    for name in registry():
        assert f" {name}" in line, name
    assert "weiper_msp (4 nodes + 3 shared; 4*r*C*D bytes (512 MB at C=1000, D=1280" in line
    # generated: the registry's order and nothing else
    listed = [part.split(" (")[0].strip(" *.") for part in
              methods_help().split("costs: ", 1)[1].split("; ") if " (" in part and
              part.split(" (")[0].strip(" *.") in registry()]
    assert listed == list(registry())


def _costs(path):
    m = onnx.load(str(path))
    nodes = Counter(n.name.split("/")[0] for n in m.graph.node if "/" in n.name)
    arrays = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return nodes, arrays


def _check_nodes(res, nodes):
    checked = []
    for name, entry in res.metadata["methods"].items():
        p = presentation(name)
        n = p.head_nodes
        if isinstance(n, str):
            try:
                values = {k: v for k, v in entry.items() if isinstance(v, (int, float))}
                if "selected_layers" in entry:  # layer_energy: m = the layers it kept
                    values["m"] = len(entry["selected_layers"])
                n = evaluate_bytes(n, **values)
            except (NameError, SyntaxError, ValueError):
                continue  # a phrase (depends on the backbone), not a count
        assert nodes[name] == n, (name, nodes[name], n)
        checked.append(name)
    return checked


def test_node_counts_are_those_of_folded_heads(digits_detector):
    nodes, _ = _costs(digits_detector.path)
    assert len(_check_nodes(digits_detector, nodes)) == len(digits_detector.metadata["methods"])


@pytest.mark.parametrize("m", [3, 2, 4])
def test_costs_of_the_larger_heads(digits_model, digits_data, tmp_path, m):
    res = edgeood.export(digits_model, data=digits_data.val[0], recipe="digits_cnn",
                         methods=["weiper_msp", "weiper_kld", "grood", "layer_energy"],
                         params=[f"layer_energy.m={m}"], out=tmp_path / "d.onnx")
    nodes, arrays = _costs(res.path)
    assert sorted(_check_nodes(res, nodes)) == ["grood", "layer_energy", "weiper_kld",
                                                "weiper_msp"]
    assert nodes["weiper"] == presentation("weiper_msp").shared_nodes
    C, D = res.metadata["head"]["num_classes"], res.metadata["head"]["feature_dim"]
    w = res.metadata["methods"]["weiper_msp"]
    perturbation = [a for k, a in arrays.items() if k.startswith("weiper/perturbation")]
    assert len(perturbation) == 1 and perturbation[0].dtype == np.float32
    assert perturbation[0].nbytes == evaluate_bytes(presentation("weiper_msp").constant_bytes,
                                                    C=C, D=D, r=w["r"])
    g = res.metadata["methods"]["grood"]
    grown = sum(arrays[f"grood/{k}"].nbytes for k in ("prototypes", "ood_prototype", "bank",
                                                        "bank_sq_norms"))
    assert grown == evaluate_bytes(presentation("grood").constant_bytes, C=C, D=D,
                                   N=g["bank_entries"])
