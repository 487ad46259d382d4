"""The methods the digits / Lite0 fixture detectors carry, and rebuilding a detector's methods and
tap tensors for the parity checks (shared by tests/methods, tests/graph and tests/integration)."""
from __future__ import annotations

import numpy as np
import onnx

from edgeood.graph.head import find_head
from edgeood.graph.model import prepare
from edgeood.methods import ModelInfo, from_metadata

ALL_METHODS = ["energy", "msp", "maxlogit", "react", "scale", "featurenorm"]


def fitted_methods(model_path, metadata, detector_path=None):
    """The detector's methods rebuilt from metadata (and, for statistics kept in the graph, the
    detector's constants), bound to the source model's head."""
    from edgeood.artifact.metadata import read_constants
    graph = prepare(onnx.load(str(model_path)))
    head = find_head(graph)
    info = ModelInfo(head=head, candidates=[])
    constants = read_constants(detector_path) if detector_path is not None else None
    return {name: from_metadata(name, entry, info, constants)
            for name, entry in metadata["methods"].items()}


def tap_dict(outputs: dict[str, np.ndarray], metadata) -> dict[str, np.ndarray]:
    """The detector's kept tap outputs by tap key (the metadata's "taps" map), plus logits."""
    taps = {"logits": outputs["logits"]}
    for key, name in metadata["taps"].items():
        taps[key] = outputs[name]
    return taps
