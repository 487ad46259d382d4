"""The export pipeline: export() and calibrate() as named stages.

export is a pipeline of named stages, each taking and returning one ExportState, so the data
flows one way: validate -> load -> prepare -> bind -> fit -> fold -> calibrate -> save.
calibrate() reuses the last three stages on a saved detector.
"""
from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgeood.pipeline.calibrate import (calibration_rows, check_count, fit_methods,
                                        reference_scores, score_source, threshold_at)
from edgeood.artifact.names import DEFAULT_OPSET, IMAGE_INPUT
from edgeood.data import ImageSource, Preprocess, open_source
from edgeood.errors import EdgeoodError, did_you_mean
from edgeood.graph.fold import build_decision, build_scores
from edgeood.graph.head import ClassifierHead, find_head
from edgeood.graph.model import (batch_dim, file_sha256, input_chw, load_model, model_opset,
                                 prepare, to_model)
from edgeood.graph.signature import io_spec
from edgeood.graph.taps import find_block_candidates, resolve
from edgeood.artifact.metadata import SCHEMA_VERSION, read_metadata, save_detector, session_source
from edgeood.methods.base import Method, ModelInfo, create, method_class, parse_params
from edgeood.progress import warn
from edgeood.pipeline.recipes import Recipe, load_recipe
from edgeood.resize import HALF_PIXEL_LINEAR
from edgeood.stats.monitor import (DEFAULT_ARL, DEFAULT_DELTA, DEFAULT_STRIDE, StreamMonitor,
                                     check_arl, check_delta, check_stride, compute_detector_id,
                                     state_io)
from edgeood.runtime.onnxruntime.backend import OrtBackend
from edgeood.version import __version__

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INPUT_KINDS = ("float", "uint8")  # --input: the float input only, or camera frames as well


@dataclass
class ExportResult:
    path: Path
    metadata: dict[str, Any]


@dataclass
class MonitorOptions:
    """The stream monitor's defaults kept in the metadata, and whether its update is folded
    into the graph (state input monitor_state, outputs monitor_state_out and stream_alarm)."""

    methods: list[str] | None = None   # None: the primary method (the one behind is_ood)
    arl: float = DEFAULT_ARL
    delta: float = DEFAULT_DELTA
    stride: int = DEFAULT_STRIDE
    in_graph: bool = False


@dataclass
class ExportRequest:
    """The export arguments, validated before any work is done."""

    model: Any
    recipe: Recipe | None
    methods: list[Method]
    primary: str
    tpr: float
    imgsz: tuple[int, int] | None
    batch: int
    out: Path | None
    keep_taps: bool
    opset: int
    seed: int
    mean: Any
    std: Any
    logits: str | None
    penultimate: str | None
    data: ImageSource | None
    ood_val: ImageSource | None
    progress: bool
    monitor: MonitorOptions = field(default_factory=MonitorOptions)
    input: str = "float"  # "uint8": also the camera-frame input `image` (in-graph preprocessing)
    half: bool = False        # --half: float16 backbone, float32 heads
    int8: bool = False        # --int8: Q/DQ int8 backbone calibrated on --data, float32 heads
    int8_method: str = "percentile"  # --int8-method: percentile | minmax | entropy
    device: str | None = None  # calibrate on ONNX Runtime's cpu | cuda | tensorrt provider
    scorer: Any = None         # a loaded backend to score with instead (an engine)


@dataclass
class ExportState:
    """What the stages hand on: the request, then the model, graph, head and metadata."""

    request: ExportRequest
    proto: onnx.ModelProto | None = None
    sha256: str = ""
    label: str = "model"
    graph: gs.Graph | None = None
    head: ClassifierHead | None = None
    pre: Preprocess | None = None
    folded: gs.Graph | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    fit_notes: dict[str, Any] = field(default_factory=dict)
    holdout: dict[str, np.ndarray] = field(default_factory=dict)  # method -> calibration rows
    path: Path | None = None
    precision: str = "float32"  # the backbone's, after precision_stage
    precision_detail: dict[str, Any] = field(default_factory=dict)
    reference: gs.Graph | None = None  # the float32 graph precision_stage started from


def _split(items: str | Iterable[str] | None) -> list[str]:
    if items is None:
        return []
    if isinstance(items, str):
        items = items.split(",")
    return [s.strip() for s in items if s and s.strip()]


def parse_imgsz(imgsz) -> tuple[int, int] | None:
    """--imgsz as (H, W) from S, 'H,W', an int or a pair; one line on anything else."""
    if imgsz is None:
        return None
    try:
        vals = [int(imgsz)] if isinstance(imgsz, int) else \
            [int(v) for v in (imgsz.split(",") if isinstance(imgsz, str) else imgsz)]
    except (TypeError, ValueError):
        vals = []
    if len(vals) not in (1, 2) or min(vals) < 1:
        raise EdgeoodError(f"--imgsz {imgsz!r} must be one or two positive integers: S or H,W "
                           "(e.g. --imgsz 224 or --imgsz 240,320)")
    return (vals[0], vals[-1])


def _method_list(names: list[str], recipe: Recipe | None, params) -> list[Method]:
    given = parse_params(params) if isinstance(params, list) else dict(params or {})
    for key in given:
        if key not in names:
            raise EdgeoodError(f"--param for '{key}', which is not among the methods "
                               f"{','.join(names)}{did_you_mean(key, names)}")
    if len(set(names)) != len(names):
        raise EdgeoodError(f"--methods lists a method twice: {','.join(names)}")
    merged = {n: {**(recipe.params.get(n, {}) if recipe else {}), **given.get(n, {})} for n in names}
    return [create(n, merged[n]) for n in names]


def validate_export(model, data=None, methods=None, primary: str | None = None,
                    tpr: float = 0.95, recipe=None, imgsz=None, batch: int = 32, out=None,
                    keep_taps: bool = False, params=None, opset: int = DEFAULT_OPSET,
                    seed: int = 0, mean=None, std=None, logits: str | None = None,
                    penultimate: str | None = None, tune: bool = False, ood_val=None,
                    progress: bool = False, arl=None, delta=None, stride=None,
                    stream_monitor: bool = False, monitor_methods=None,
                    input: str = "float", half: bool = False, int8: bool = False,
                    int8_method: str = "percentile") -> ExportRequest:
    """Every export argument checked up front (Ultralytics style): one line per problem."""
    _check_precision(half, int8, int8_method, data)
    if input not in INPUT_KINDS:
        raise EdgeoodError(f"--input {input} must be one of {', '.join(INPUT_KINDS)} (uint8: "
                           "camera frames straight into the graph)"
                           f"{did_you_mean(input, INPUT_KINDS)}")
    if isinstance(model, (str, Path)) and not Path(model).is_file():
        raise EdgeoodError(f"{model}: no such file; pass the path of an .onnx model")
    if not isinstance(tpr, (int, float)) or not 0 < tpr < 1:
        raise EdgeoodError(f"--tpr {tpr} must be in (0, 1); e.g. 0.95")
    if batch < 1:
        raise EdgeoodError(f"--batch {batch} must be >= 1")
    size = parse_imgsz(imgsz)
    rec = load_recipe(recipe)
    from edgeood.methods import DEFAULT_METHODS
    names = _split(methods) or (rec.methods if rec and rec.methods else list(DEFAULT_METHODS))
    if data is None and not _split(methods):  # nothing to fit on: the defaults that need no data
        names = [n for n in names if not method_class(n).needs_fit]
    for n in names:
        method_class(n)  # unknown names: did-you-mean
    primary = primary or names[0]
    if primary not in names:
        raise EdgeoodError(f"--primary {primary} is not among --methods {','.join(names)}"
                           f"{did_you_mean(primary, names)}")
    if tune:
        tunable = [n for n in names if method_class(n).tune_space]
        if not tunable:
            with_space = [n for n in _registered() if method_class(n).tune_space]
            raise EdgeoodError(f"--tune searches a method's tune space; none of {','.join(names)} "
                               f"has one (methods that do: {', '.join(with_space)})")
        params = _with_tune(params, tunable)
    chosen = _method_list(names, rec, params)
    monitor = monitor_options(names, primary, arl, delta, stride, stream_monitor,
                              monitor_methods)
    if monitor.in_graph and data is None:
        raise EdgeoodError("--stream-monitor folds the stream alarm over the p-values, which "
                           "need the ID reference: pass --data ID_DIR")
    source = open_source(data) if data is not None else None
    if source is None and any(m.needs_fit for m in chosen):
        need = ", ".join(m.name for m in chosen if m.needs_fit)
        raise EdgeoodError(f"{need} fit statistics on ID images: pass --data ID_DIR")
    if source is not None:
        check_count(source)
    ood = open_source(ood_val, "ood-val") if ood_val is not None else None
    if out is not None and not Path(out).parent.exists():
        raise EdgeoodError(f"output folder {Path(out).parent} does not exist; create it first")
    return ExportRequest(model, rec, chosen, primary, float(tpr), size, batch,
                         Path(out) if out is not None else None, keep_taps, opset, seed, mean,
                         std, logits, penultimate, source, ood, progress, monitor, input,
                         half=bool(half), int8=bool(int8), int8_method=int8_method)


def monitor_options(names: list[str], primary: str, arl=None, delta=None, stride=None,
                    in_graph: bool = False, methods=None,
                    saved: dict | None = None) -> MonitorOptions:
    """The stream monitor's options checked up front; None keeps `saved` (else the default)."""
    saved = saved or {}
    chosen = _split(methods)
    if chosen == ["all"]:
        chosen = list(names)
    for m in chosen:
        if m not in names:
            raise EdgeoodError(f"--monitor-methods names {m}, which is not among the methods "
                               f"{','.join(names)}{did_you_mean(m, names)}")
    kept = [m for m in (saved.get("methods") or []) if m in names]
    return MonitorOptions(
        methods=chosen or kept or [primary],
        arl=check_arl(saved.get("arl", DEFAULT_ARL) if arl is None else arl, "--"),
        delta=check_delta(saved.get("delta", DEFAULT_DELTA) if delta is None else delta, "--"),
        stride=check_stride(saved.get("stride", DEFAULT_STRIDE) if stride is None else stride,
                            "--"),
        in_graph=bool(saved.get("in_graph", False) if in_graph is None else in_graph))


def _registered() -> list[str]:
    from edgeood.methods.base import REGISTRY
    return list(REGISTRY)


def _with_tune(params, names: list[str]):
    if isinstance(params, list) or params is None:
        return list(params or []) + [f"{n}.tune=true" for n in names]
    return {**params, **{n: {**params.get(n, {}), "tune": True} for n in names}}


# --- the stages -------------------------------------------------------------------------------
def load_stage(state: ExportState) -> ExportState:
    """The source model as a ModelProto (an nn.Module is exported to ONNX first)."""
    req = state.request
    model = req.model
    if isinstance(model, onnx.ModelProto):
        state.proto = model
    elif isinstance(model, (str, Path)):
        state.proto, state.sha256, state.label = load_model(model), file_sha256(model), \
            Path(model).name
    elif hasattr(model, "forward") and hasattr(model, "eval"):
        from edgeood.graph.from_torch import export_module
        shape = _shape_from(req.recipe, req.imgsz, None)
        if None in shape:
            raise EdgeoodError("exporting an nn.Module needs the input size: pass imgsz "
                               "(and channels via a recipe, default 3)")
        state.proto, state.sha256 = export_module(model, shape, req.opset)
        state.label = type(model).__name__
    else:
        raise EdgeoodError(f"cannot export a {type(model).__name__}; pass an .onnx path, an "
                           "onnx.ModelProto or a torch.nn.Module")
    return state


def prepare_stage(state: ExportState) -> ExportState:
    """Fold constants, find the head and the preprocessing."""
    req = state.request
    state.graph = prepare(state.proto)
    taps_cfg = req.recipe.taps if req.recipe else {}
    state.head = find_head(state.graph, req.logits or taps_cfg.get("logits"))
    if req.penultimate or taps_cfg.get("penultimate"):
        state.head.z = resolve(state.graph, req.penultimate or taps_cfg["penultimate"],
                               "penultimate").name
    state.pre = _preprocess(req.recipe, _shape_from(req.recipe, req.imgsz, input_chw(state.graph)),
                            req.mean, req.std)
    if req.input == "uint8":  # the host path (fitting, calibration) resizes like the graph
        state.pre.resize_rule = HALF_PIXEL_LINEAR
    return state


def precision_stage(state: ExportState) -> ExportState:
    """--half / --int8: the backbone converted (float16, or Q/DQ int8 calibrated on --data),
    taps kept float32 under their names, so fit, fold and calibrate run on the final graph."""
    req = state.request
    if not (req.half or req.int8):
        return state
    from edgeood.graph.precision import reduce_precision
    state.reference = state.graph
    state.graph, state.precision, state.precision_detail = reduce_precision(
        state.graph, state.head, "float16" if req.half else "int8", req.data, state.pre,
        req.batch, req.int8_method)
    return state


def _check_precision(half: bool, int8: bool, int8_method: str, data) -> None:
    from edgeood.graph.precision import INT8_METHODS
    if half and int8:
        raise EdgeoodError("--half and --int8 exclude each other: pick one precision")
    if int8_method not in INT8_METHODS:
        raise EdgeoodError(f"--int8-method {int8_method} must be one of "
                           f"{', '.join(INT8_METHODS)}{did_you_mean(int8_method, INT8_METHODS)}")
    if int8 and data is None:
        raise EdgeoodError("--int8 calibrates the activation ranges on ID images: pass "
                           "--data ID_DIR (>= 300 images recommended)")


def bind_stage(state: ExportState) -> ExportState:
    """Tell every method about the model (head, candidate blocks, tensor names)."""
    req, graph = state.request, state.graph
    taps_cfg = req.recipe.taps if req.recipe else {}
    ref = state.reference or graph  # candidates and depth from the float32 graph
    candidates = list(taps_cfg.get("blocks", [])) or find_block_candidates(ref, state.head)
    for name in candidates:
        resolve(graph, name, "block")
    order = {t.name: i for i, node in enumerate(ref.nodes) for t in node.outputs}
    info = ModelInfo(head=state.head, candidates=candidates, tensors=list(graph.tensors()),
                     depth=order, precision=state.precision)
    for m in req.methods:
        m.bind(info)
        for w in m.warnings:
            warn(w)
    return state


def fit_stage(state: ExportState) -> ExportState:
    """Fit every method's statistics on the ID images (and tune where asked)."""
    req = state.request
    if req.data is None:
        return state
    groups: dict[float, list[Method]] = {}
    for m in req.methods:
        groups.setdefault(float(m.calibration_holdout), []).append(m)
    for fraction, methods in sorted(groups.items()):
        source = req.data
        if fraction > 0:
            fit_idx, held = holdout_split(len(req.data), fraction, req.seed)
            source = req.data.subset(fit_idx, f"{len(fit_idx)} fitting images")
            for m in methods:
                state.holdout[m.name] = held
        state.fit_notes.update(fit_methods(state.graph, state.head, methods, source, state.pre,
                                           req.batch, req.seed, req.progress, req.ood_val))
    return state


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fitting, held-out) positions: a seeded random split, at least one image on each side."""
    order = np.random.default_rng(seed).permutation(n)
    n_held = min(n - 1, max(1, int(round(n * fraction))))
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def fold_stage(state: ExportState) -> ExportState:
    """Append the scoring heads to a copy of the graph and write the metadata."""
    req, head, pre = state.request, state.head, state.pre
    state.folded = state.graph.copy()
    kept = build_scores(state.folded, copy.copy(head), req.methods, req.keep_taps)
    state.meta = {
        "schema_version": SCHEMA_VERSION,
        "edgeood_version": __version__,
        "source": {"name": state.label, "sha256": state.sha256, "opset": model_opset(state.proto)},
        "input": {"name": state.folded.inputs[0].name,
                  "shape": [batch_dim(state.folded), pre.channels, *pre.size],
                  "dtype": "float32", "layout": "NCHW"},
        "preprocessing": pre.to_dict(),
        "head": {"logits": head.logits, "penultimate": head.z, "num_classes": head.num_classes,
                 "feature_dim": head.feature_dim,
                 "pattern": getattr(head, "pattern", None)},
        "recipe": req.recipe.name if req.recipe else None,
        "methods": {m.name: m.describe() for m in req.methods},
        "primary": req.primary,
        "tpr": req.tpr,
        "precision": state.precision,
        **({"precision_detail": state.precision_detail} if state.precision_detail else {}),
        "calibration": None,
        "seed": req.seed,
        "taps": kept,
        **({"fit": state.fit_notes} if state.fit_notes else {}),
    }
    return state


def calibrate_stage(state: ExportState) -> ExportState:
    """Score the ID set with the folded graph; thresholds, p-value references, is_ood."""
    req = state.request
    if req.data is None:
        return state
    meta, graph = state.meta, state.folded
    methods = list(meta["methods"])
    with tempfile.TemporaryDirectory() as tmp:
        backend = req.scorer or OrtBackend(session_source(to_model(graph.copy()), tmp),
                                           device=req.device,
                                           precision=str(meta.get("precision", "float32")))
        scored = score_source(backend, methods, req.data, state.pre, req.batch, req.progress)
        target = backend.target  # where these thresholds hold (backend, device, precision)
    refs = {}
    previous = (meta.get("calibration") or {}).get("hash")
    for m in methods:
        s = scored.scores[m]
        rows = calibration_positions(state, m, scored, previous)
        if rows is not None:  # only images the method did not fit on
            s = s[rows]
            meta["methods"][m]["calibration_count"] = int(len(s))
        meta["methods"][m]["threshold"] = threshold_at(s, req.tpr)
        refs[m] = reference_scores(s, req.seed)
        meta["methods"][m]["reference_size"] = int(len(refs[m]))
    meta["pvalue_references"] = build_decision(
        graph, refs, meta["methods"][meta["primary"]]["threshold"], meta["primary"])
    meta["tpr"] = req.tpr
    meta["calibration"] = {"count": scored.count, "hash": scored.data_hash, "seed": req.seed,
                           "source": req.data.name, "target": target}
    if meta.get("precision_detail"):  # thresholds and references: on this very graph
        meta["precision_detail"]["thresholds_fitted_on"] = (
            f"the {meta['precision']} detector graph: {scored.count} images of {req.data.name}")
    return state


def calibration_positions(state: ExportState, method: str, scored,
                          previous_hash: str | None) -> np.ndarray | None:
    """The scored images a method calibrates on (None: all of them).

    At export: its held-out images, and the fingerprints of the images it was fitted on are
    kept in its metadata (`fitted_images`). On recalibration those images are left out
    wherever they appear in the new data, so recalibrating on the export's own data gives the
    export's thresholds back. Detectors written before fingerprints were kept fall back to the
    export's seeded split when the data is the same (same hash)."""
    entry = state.meta["methods"][method]
    if method in state.holdout:
        held = state.holdout[method]
        fitted = np.setdiff1d(np.arange(scored.count), held)
        entry["fitted_images"] = sorted({scored.row_hashes[i] for i in fitted})
        return held
    if entry.get("fitted_images"):
        rows = calibration_rows(entry, scored.row_hashes)
        left_out = scored.count - len(rows)
        if left_out:
            warn(f"{method}: {left_out} of {scored.count} calibration images are images it was "
                 f"fitted on; they are left out of its threshold and p-value reference "
                 f"({len(rows)} used)")
        if len(rows) == 0:
            raise EdgeoodError(f"every calibration image was used to fit {method}; calibrate on "
                               "other ID images")
        return rows
    fraction = float(method_class(method).calibration_holdout)
    if fraction > 0 and previous_hash is not None and previous_hash == scored.data_hash:
        return holdout_split(scored.count, fraction, state.request.seed)[1]
    return None


def unfold_monitor_stage(state: ExportState) -> ExportState:
    """Remove a folded stream monitor before re-calibration (monitor_stage folds it again)."""
    from edgeood.graph.monitor import strip_monitor
    strip_monitor(state.folded)
    return state


def monitor_stage(state: ExportState) -> ExportState:
    """The stream monitor's defaults in the metadata: methods, A, delta, stride, the reference
    sizes and q(n, delta) (seeded Monte Carlo, once here); with in_graph its update is folded
    into the graph as state tensors (one stream per batch slot)."""
    opts, meta = state.request.monitor, state.meta
    entry = {"methods": opts.methods, "arl": opts.arl, "delta": opts.delta,
             "stride": opts.stride, "in_graph": False}
    if meta.get("calibration") is None:  # no reference yet: defaults only
        meta["monitor"] = {**entry, "n_reference": None}
        return state
    refs = {m: meta["methods"][m]["reference_size"] for m in opts.methods}
    monitor = StreamMonitor(opts.arl, refs, opts.delta, opts.stride, opts.methods,
                            detector_id=compute_detector_id(meta))
    meta["monitor"] = {**entry, **monitor.describe(), "in_graph": opts.in_graph}
    if opts.in_graph:
        from edgeood.graph.monitor import fold_monitor
        fold_monitor(state.folded, opts.methods, refs, monitor.bet_scale, opts.arl)
        meta["monitor"]["state"] = state_io(batch_dim(state.folded))
    return state


def image_input_stage(state: ExportState) -> ExportState:
    """--input uint8: the camera-frame input `image` (cast, resize, normalise, transpose in the
    graph) beside the float input, which calibration keeps feeding (edgeood/graph/preprocess.py)."""
    if state.request.input != "uint8":
        return state
    from edgeood.graph.preprocess import add_image_input, image_metadata
    add_image_input(state.folded, state.pre)
    state.meta["input"]["image"] = image_metadata(state.pre)
    state.meta["preprocessing"] = {**state.pre.to_dict(), "in_graph": IMAGE_INPUT}
    return state


def save_stage(state: ExportState) -> ExportState:
    """Write the detector and its sidecar atomically."""
    state.meta["outputs"] = [t.name for t in state.folded.outputs]
    state.meta["io"] = io_spec(state.folded)
    state.path = state.request.out or _default_out(state.request.model)
    save_detector(to_model(state.folded), state.meta, state.path)
    return state


EXPORT_STAGES = (load_stage, prepare_stage, precision_stage, bind_stage, fit_stage, fold_stage,
                 image_input_stage, calibrate_stage, monitor_stage, save_stage)
CALIBRATE_STAGES = (unfold_monitor_stage, calibrate_stage, monitor_stage, save_stage)


def run_stages(state: ExportState, stages) -> ExportState:
    for stage in stages:
        state = stage(state)
    return state


def export(model, data=None, methods=None, primary: str | None = None, tpr: float = 0.95,
           recipe=None, imgsz=None, batch: int = 32, out=None, keep_taps: bool = False,
           params=None, opset: int = DEFAULT_OPSET, seed: int = 0, mean=None, std=None,
           logits: str | None = None, penultimate: str | None = None, tune: bool = False,
           ood_val=None, tune_ood=None, progress: bool = False, arl: float | None = None,
           delta: float | None = None, stride: int | None = None, stream_monitor: bool = False,
           monitor_methods=None, input: str = "float", half: bool = False, int8: bool = False,
           int8_method: str = "percentile") -> ExportResult:
    """Fold OOD scoring into a classifier and calibrate it on ID images.

    model: an .onnx path, an onnx.ModelProto or a torch.nn.Module. data: a folder of ID images,
    a .npy/.npz, or an array (None: scores only, no thresholds; run calibrate() later).
    tune: search the tune space of the methods that declare one (against jigsaw images of
    `data`, or against ood_val). ood_val: OOD validation images (for tuning and for methods
    that fit on them); tune_ood is its old name.
    Stream monitor (edgeood.StreamMonitor, `edgeood watch`): arl (A, default 10000 sampled
    frames), delta (0.01), stride (1) and monitor_methods (default the primary; "all" or a
    list: their bets are averaged) are kept in the metadata; stream_monitor=True also folds its
    update into the graph (input monitor_state, outputs monitor_state_out and stream_alarm).
    input="uint8" adds the camera-frame input `image` (uint8 N x H x W x C RGB: cast, resized
    with the half_pixel_linear rule, normalised and transposed in the graph) beside the float
    input; edgeood.load(path)(frames) then feeds frames to it.
    """
    req = validate_export(model, data, methods, primary, tpr, recipe, imgsz, batch, out,
                          keep_taps, params, opset, seed, mean, std, logits, penultimate,
                          tune, ood_val if ood_val is not None else tune_ood, progress, arl,
                          delta, stride, stream_monitor, monitor_methods, input, half=half,
                          int8=int8, int8_method=int8_method)
    state = run_stages(ExportState(req), EXPORT_STAGES)
    return ExportResult(state.path, state.meta)


def calibrate(detector, data, tpr: float | None = None, batch: int = 32, out=None,
              seed: int | None = None, progress: bool = False, arl: float | None = None,
              delta: float | None = None, stride: int | None = None,
              stream_monitor: bool | None = None, monitor_methods=None,
              device: str | None = None, scorer=None) -> ExportResult:
    """Re-fit the thresholds and p-value references of an existing detector on new ID images
    (fitted statistics such as ReAct's clip value or the FeatureNorm block are kept). The
    stream monitor's options (see export) default to the detector's; q(n, delta) is redone
    for the new reference size. device: score on ONNX Runtime's cpu | cuda | tensorrt provider
    (the calibration target is recorded); an engine recalibrates its source detector on the
    engine itself and rebuilds it (edgeood.pipeline.engine_calibrate)."""
    path = Path(detector)
    meta = read_metadata(path)
    tpr = meta.get("tpr", 0.95) if tpr is None else tpr
    if not 0 < tpr < 1:
        raise EdgeoodError(f"--tpr {tpr} must be in (0, 1); e.g. 0.95")
    if batch < 1:
        raise EdgeoodError(f"--batch {batch} must be >= 1")
    monitor = monitor_options(list(meta["methods"]), meta["primary"], arl, delta, stride,
                              stream_monitor, monitor_methods, meta.get("monitor"))
    source = open_source(data)
    check_count(source)
    seed = meta.get("seed", 0) if seed is None else seed
    req = ExportRequest(model=path, recipe=None, methods=[], primary=meta["primary"], tpr=tpr,
                        imgsz=None, batch=batch, out=Path(out) if out else path,
                        keep_taps=False, opset=DEFAULT_OPSET, seed=seed, mean=None, std=None,
                        logits=None, penultimate=None, data=source, ood_val=None,
                        progress=progress, monitor=monitor, device=device, scorer=scorer)
    state = ExportState(req, folded=gs.import_onnx(load_model(path)), meta=meta,
                        pre=Preprocess.from_dict(meta["preprocessing"]))
    state = run_stages(state, CALIBRATE_STAGES)
    return ExportResult(state.path, state.meta)


# --- helpers of the stages --------------------------------------------------------------------
def _default_out(model) -> Path:
    if isinstance(model, (str, Path)):
        p = Path(model)
        return p.with_name(p.stem + ".detector.onnx")
    return Path("detector.onnx")


def _shape_from(recipe: Recipe | None, imgsz, graph_chw):
    """(C, H, W): --imgsz beats the recipe, which beats the graph."""
    c, h, w = graph_chw or (None, None, None)
    rin = recipe.input if recipe else {}
    c = c or rin.get("channels") or 3
    size = parse_imgsz(imgsz) or (tuple(rin["size"]) if "size" in rin else None)
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
