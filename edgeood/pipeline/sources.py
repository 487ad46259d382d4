"""Checks on what export is given to read and write: the source must be a classifier (not a
detector edgeood already wrote) and the detector must not overwrite it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import onnx

from edgeood.artifact.metadata import KEY
from edgeood.artifact.names import PVALUE_PREFIX, SCORE_PREFIX
from edgeood.errors import EdgeoodError


def refuse_overwriting_source(model: Any, out: Any, say: Callable[[str], str]) -> None:
    """--out must not be the model being exported: the detector would replace the classifier
    it was made from (a file that is another detector's source is fine)."""
    if out is None or not isinstance(model, (str, Path)):
        return
    if Path(out).resolve() == Path(model).resolve():
        stem = Path(model).name.removesuffix(".onnx")
        raise EdgeoodError(f"{say('out')} {out} is the model being exported, which the detector "
                           f"would replace; pass another path (e.g. {say('out')} "
                           f"{Path(model).with_name(stem + '.detector.onnx')})")


def refuse_detector(proto: onnx.ModelProto, label: str) -> None:
    """An edgeood detector (its embedded metadata, or score_<method> / pvalue_ outputs) is not a
    classifier to export: say so, and how to recalibrate it instead."""
    if any(p.key == KEY for p in proto.metadata_props):
        why = "its metadata says so"
    else:
        from edgeood.methods.registry import registry
        methods = set(registry())  # a classifier's own "score_map" output is no method score
        folded = [o.name for o in proto.graph.output if o.name.startswith(PVALUE_PREFIX)
                  or (o.name.startswith(SCORE_PREFIX) and o.name[len(SCORE_PREFIX):] in methods)]
        if not folded:
            return
        why = f"it has the outputs {', '.join(folded[:3])}{' ...' if len(folded) > 3 else ''}"
    raise EdgeoodError(f"{label} is already an edgeood detector ({why}); to re-fit its "
                       f"thresholds run 'edgeood calibrate {label} --data ID_DIR', or export its "
                       "source classifier")
