"""The Python API the CLI calls: export(), calibrate(), load()."""
from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import onnx
import onnx_graphsurgeon as gs

from edgeood import __version__
from edgeood.calibrate import (check_count, fit_methods, reference_scores, score_source,
                               threshold_at)
from edgeood.data import ImageSource, Preprocess, open_source
from edgeood.errors import EdgeoodError, did_you_mean
from edgeood.graph.fold import build_decision, build_scores
from edgeood.graph.head import find_head
from edgeood.graph.model import (batch_dim, file_sha256, input_chw, load_model, model_opset,
                                 prepare, to_model)
from edgeood.graph.taps import find_block_candidates, resolve
from edgeood.metadata import SCHEMA_VERSION, read_metadata, save_detector, session_source
from edgeood.methods.base import Method, ModelInfo, create, parse_params
from edgeood.recipes import Recipe, load_recipe
from edgeood.runtime.ort_backend import OrtBackend

DEFAULT_METHODS = ["energy", "msp", "maxlogit", "react", "scale", "featurenorm"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class ExportResult:
    path: Path
    metadata: dict[str, Any]


def _split(items: str | Iterable[str] | None) -> list[str]:
    if items is None:
        return []
    if isinstance(items, str):
        items = items.split(",")
    return [s.strip() for s in items if s and s.strip()]


def _source_model(model, recipe: Recipe | None, imgsz, opset: int):
    """(ModelProto, sha256, display name) from a path, a ModelProto or an nn.Module."""
    if isinstance(model, onnx.ModelProto):
        return model, "", "model"
    if isinstance(model, (str, Path)):
        return load_model(model), file_sha256(model), Path(model).name
    if hasattr(model, "forward") and hasattr(model, "eval"):
        from edgeood.graph.from_torch import export_module
        shape = _shape_from(recipe, imgsz, None)
        if None in shape:
            raise EdgeoodError("exporting an nn.Module needs the input size: pass imgsz "
                               "(and channels via a recipe, default 3)")
        proto, sha = export_module(model, shape, opset)
        return proto, sha, type(model).__name__
    raise EdgeoodError(f"cannot export a {type(model).__name__}; pass an .onnx path, an "
                       "onnx.ModelProto or a torch.nn.Module")


def _imgsz(imgsz) -> tuple[int, int] | None:
    if imgsz is None:
        return None
    if isinstance(imgsz, int):
        return (imgsz, imgsz)
    vals = [int(v) for v in (imgsz.split(",") if isinstance(imgsz, str) else imgsz)]
    return (vals[0], vals[-1])


def _shape_from(recipe: Recipe | None, imgsz, graph_chw):
    """(C, H, W): --imgsz beats the recipe, which beats the graph."""
    c, h, w = graph_chw or (None, None, None)
    rin = recipe.input if recipe else {}
    c = c or rin.get("channels") or 3
    size = _imgsz(imgsz) or (tuple(rin["size"]) if "size" in rin else None)
    if size:
        if (h and h != size[0]) or (w and w != size[1]):
            raise EdgeoodError(f"the model takes {w}x{h} images but --imgsz/recipe asks for "
                               f"{size[1]}x{size[0]}; drop --imgsz or re-export the model")
        h, w = size
    return (c, h, w)


def _preprocess(recipe: Recipe | None, chw, mean=None, std=None) -> Preprocess:
    c, h, w = chw
    if h is None or w is None:
        raise EdgeoodError("the model's input size is dynamic; pass --imgsz H,W or a recipe")
    rin = recipe.input if recipe else {}
    dm, ds = (IMAGENET_MEAN, IMAGENET_STD) if c == 3 else ((0.5,) * c, (0.5,) * c)
    return Preprocess(size=(h, w), channels=c, mean=tuple(mean or rin.get("mean", dm)),
                      std=tuple(std or rin.get("std", ds)), resize=bool(rin.get("resize", True)),
                      color=rin.get("color", "RGB" if c == 3 else "GRAY"))


def _methods(names: list[str], recipe: Recipe | None, params) -> list[Method]:
    given = parse_params(params) if isinstance(params, list) else dict(params or {})
    for key in given:
        if key not in names:
            raise EdgeoodError(f"--param for '{key}', which is not among the methods "
                               f"{','.join(names)}{did_you_mean(key, names)}")
    if len(set(names)) != len(names):
        raise EdgeoodError(f"--methods lists a method twice: {','.join(names)}")
    merged = {n: {**(recipe.params.get(n, {}) if recipe else {}), **given.get(n, {})} for n in names}
    return [create(n, merged[n]) for n in names]


def export(model, data=None, methods=None, primary: str | None = None, tpr: float = 0.95,
           recipe=None, imgsz=None, batch: int = 32, out=None, keep_taps: bool = False,
           params=None, opset: int = 17, seed: int = 0, mean=None, std=None,
           logits: str | None = None, penultimate: str | None = None,
           tune_ood=None, progress: bool = False) -> ExportResult:
    """Fold OOD scoring into a classifier and calibrate it on ID images.

    model: an .onnx path, an onnx.ModelProto or a torch.nn.Module. data: a folder of ID images,
    a .npy/.npz, or an array (None: scores only, no thresholds; run calibrate() later).
    tune_ood: OOD validation images for AdaSCALE's tuning (default: jigsaw images of `data`).
    """
    if isinstance(model, (str, Path)) and not Path(model).is_file():
        raise EdgeoodError(f"{model}: no such file; pass the path of an .onnx model")
    rec = load_recipe(recipe)
    names = _split(methods) or (rec.methods if rec and rec.methods else list(DEFAULT_METHODS))
    if data is None and not _split(methods):  # nothing to fit on: the defaults that need no data
        names = [n for n in names if not create(n).needs_fit]
    chosen = _methods(names, rec, params)
    primary = primary or names[0]
    if primary not in names:
        raise EdgeoodError(f"--primary {primary} is not among --methods {','.join(names)}")
    if batch < 1:
        raise EdgeoodError(f"--batch {batch} must be >= 1")
    source = open_source(data) if data is not None else None
    if source is None and any(m.needs_fit for m in chosen):
        need = ", ".join(m.name for m in chosen if m.needs_fit)
        raise EdgeoodError(f"{need} fit statistics on ID images: pass --data ID_DIR")
    if source is not None:
        check_count(source)
    ood = open_source(tune_ood, "tune-ood") if tune_ood is not None else None
    if ood is not None:
        tuning = [m for m in chosen if m.params.get("tune")]
        if not tuning:
            raise EdgeoodError("--tune-ood is for AdaSCALE's --tune: add --tune and adascale_a "
                               "or adascale_l to --methods")
        for m in tuning:
            m.tunes_on_ood = True
    if out is not None and not Path(out).parent.exists():
        raise EdgeoodError(f"output folder {Path(out).parent} does not exist; create it first")

    proto, sha, label = _source_model(model, rec, imgsz, opset)
    graph = prepare(proto)
    taps_cfg = rec.taps if rec else {}
    head = find_head(graph, logits or taps_cfg.get("logits"))
    if penultimate or taps_cfg.get("penultimate"):
        head.z = resolve(graph, penultimate or taps_cfg["penultimate"], "penultimate").name
    candidates = list(taps_cfg.get("blocks", [])) or find_block_candidates(graph, head)
    for name in candidates:
        resolve(graph, name, "block")
    info = ModelInfo(head=head, candidates=candidates)
    for m in chosen:
        m.bind(info)
        if hasattr(m, "check_block"):
            m.check_block(list(graph.tensors()))
    pre = _preprocess(rec, _shape_from(rec, imgsz, input_chw(graph)), mean, std)

    if source is not None:
        fit_methods(graph, head, chosen, source, pre, batch, seed, progress, ood)
    folded = graph.copy()
    build_scores(folded, copy.copy(head), chosen, keep_taps)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "edgeood_version": __version__,
        "source": {"name": label, "sha256": sha, "opset": model_opset(proto)},
        "input": {"name": folded.inputs[0].name, "shape": [batch_dim(folded),
                                                            pre.channels, *pre.size],
                  "dtype": "float32", "layout": "NCHW"},
        "preprocessing": pre.to_dict(),
        "head": {"logits": head.logits, "penultimate": head.z, "num_classes": head.num_classes,
                 "feature_dim": head.feature_dim},
        "recipe": rec.name if rec else None,
        "methods": {m.name: m.describe() for m in chosen},
        "primary": primary,
        "tpr": tpr,
        "precision": "float32",
        "calibration": None,
        "seed": seed,
    }
    if source is not None:
        _calibrate_into(folded, meta, source, pre, batch, tpr, seed, progress)
    meta["outputs"] = [t.name for t in folded.outputs]
    path = Path(out) if out else _default_out(model)
    save_detector(to_model(folded), meta, path)
    return ExportResult(path, meta)


def _default_out(model) -> Path:
    if isinstance(model, (str, Path)):
        p = Path(model)
        return p.with_name(p.stem + ".detector.onnx")
    return Path("detector.onnx")


def _calibrate_into(graph: gs.Graph, meta: dict, source: ImageSource, pre: Preprocess,
                    batch: int, tpr: float, seed: int, progress: bool) -> None:
    """Score the ID set with the folded graph, set thresholds and references, fold the decision."""
    methods = list(meta["methods"])
    with tempfile.TemporaryDirectory() as tmp:
        backend = OrtBackend(session_source(to_model(graph.copy()), tmp))
        scored = score_source(backend, methods, source, pre, batch, progress)
    refs = {}
    for m in methods:
        s = scored.scores[m]
        meta["methods"][m]["threshold"] = threshold_at(s, tpr)
        refs[m] = reference_scores(s, seed)
        meta["methods"][m]["reference_size"] = int(len(refs[m]))
    build_decision(graph, refs, meta["methods"][meta["primary"]]["threshold"], meta["primary"])
    meta["tpr"] = tpr
    meta["calibration"] = {"count": scored.count, "hash": scored.data_hash, "seed": seed,
                           "source": source.name}


def calibrate(detector, data, tpr: float | None = None, batch: int = 32, out=None,
              seed: int | None = None, progress: bool = False) -> ExportResult:
    """Re-fit the thresholds and p-value references of an existing detector on new ID images
    (fitted statistics such as ReAct's clip value or the FeatureNorm block are kept)."""
    path = Path(detector)
    meta = read_metadata(path)
    source = open_source(data)
    check_count(source)
    graph = gs.import_onnx(load_model(path))
    pre = Preprocess.from_dict(meta["preprocessing"])
    seed = meta.get("seed", 0) if seed is None else seed
    _calibrate_into(graph, meta, source, pre, batch, tpr or meta.get("tpr", 0.95), seed, progress)
    meta["outputs"] = [t.name for t in graph.outputs]
    target = Path(out) if out else path
    save_detector(to_model(graph), meta, target)
    return ExportResult(target, meta)


def load(path, providers: list[str] | None = None):
    """A Detector for an exported file (backend chosen from the file)."""
    from edgeood.runtime import load as _load
    return _load(path, providers)
