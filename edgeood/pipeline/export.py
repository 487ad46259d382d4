"""The export pipeline: export() and calibrate() as named stages.

export is a pipeline of named stages, each taking and returning one ExportState, so the data
flows one way. The tuples EXPORT_STAGES and CALIBRATE_STAGES below are the authoritative lists:
export() validates its arguments and runs EXPORT_STAGES; calibrate() runs CALIBRATE_STAGES on a
saved detector (the methods' fitted statistics are kept; thresholds, references and the stream
monitor are refitted).
"""
from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from edgeood.pipeline.calibrate import (calibration_rows, check_count, fit_methods,
                                        reference_scores, score_source, threshold_at)
from edgeood.artifact.names import IMAGE_INPUT
from edgeood.data import ImageSource, Preprocess, open_source
from edgeood.errors import EdgeoodError, did_you_mean
from edgeood.graph.fold import build_decision, build_scores
from edgeood.graph.head import ClassifierHead, find_head
from edgeood.artifact.files import file_sha256
from edgeood.graph.model import (batch_dim, input_chw, load_model, model_opset,
                                 prepare, to_model)
from edgeood.graph.signature import io_spec
from edgeood.graph.taps import find_block_candidates, resolve
from edgeood.artifact.metadata import SCHEMA_VERSION, read_metadata, save_detector, session_source
from edgeood.methods.base import Method, ModelInfo
from edgeood.methods.registry import create, method_class, parse_params
from edgeood.progress import stage, warn
from edgeood.pipeline.recipes import Recipe, check_channels, load_recipe
from edgeood.pipeline.sources import refuse_detector, refuse_overwriting_source
from edgeood.artifact.truth import check_methods
from edgeood.resize import HALF_PIXEL_LINEAR
from edgeood.stats.monitor import (DEFAULT_ARL, DEFAULT_DELTA, DEFAULT_STRIDE, StreamMonitor,
                                     check_arl, check_delta, check_stride, compute_detector_id,
                                     state_io)
from edgeood.runtime.onnxruntime.backend import OrtBackend
from edgeood.version import __version__

if TYPE_CHECKING:  # built by edgeood.api (the layer above) from keyword arguments
    from edgeood.config import CalibrateConfig, ExportConfig

from edgeood.pipeline.preprocessing import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402,F401


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


@dataclass(kw_only=True)
class CalibrationRequest:
    """What the calibration stages need: the ID images, the acceptance rate, the stream
    monitor's options and where to write (calibrate() builds only this)."""

    data: ImageSource | None
    tpr: float
    batch: int
    seed: int
    progress: bool
    monitor: MonitorOptions = field(default_factory=MonitorOptions)
    out: Path | None = None
    model: Any = None          # the source (save_stage names the output after it without out)
    device: str | None = None  # calibrate on ONNX Runtime's cpu | cuda | tensorrt provider
    scorer: Any = None         # a loaded backend to score with instead (an engine)
    caller: str = "python"     # "cli": errors name options by their flags

    def spell(self, name: str) -> str:
        """An option as the caller writes it (`imgsz` or `--imgsz`)."""
        return f"--{name.replace('_', '-')}" if self.caller == "cli" else name


@dataclass(kw_only=True)
class ExportRequest(CalibrationRequest):
    """The export arguments, validated before any work is done (keywords only)."""

    recipe: Recipe | None
    methods: list[Method]
    primary: str
    imgsz: tuple[int, int] | None
    keep_taps: bool
    opset: int
    mean: Any
    std: Any
    logits: str | None
    penultimate: str | None
    ood_val: ImageSource | None
    input: str = "float"  # "uint8": also the camera-frame input `image` (in-graph preprocessing)
    half: bool = False        # float16 backbone, float32 heads
    int8: bool = False        # Q/DQ int8 backbone calibrated on the ID images, float32 heads
    int8_method: str = "percentile"  # percentile | minmax | entropy
    scale: float | None = None  # 1: mean/std after pixel / 255; 255: in raw pixel units
    resize: bool | None = None  # None: the recipe's, else on
    names: list[str] | None = None    # class names given (--names); checked in names_stage


@dataclass
class ExportState:
    """What the stages hand on: the request, then the model, graph, head and metadata."""

    request: ExportRequest | CalibrationRequest
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
    pre_source: dict[str, Any] = field(default_factory=dict)  # where mean/std came from
    module_pre: Any = None  # mean/std a torch module carries (pipeline/preprocessing.py)
    class_names: list[str] | None = None  # index i: the name of class i (names_stage)


def _split(items: str | Iterable[str] | None) -> list[str]:
    if items is None:
        return []
    if isinstance(items, str):
        items = items.split(",")
    return [s.strip() for s in items if s and s.strip()]


def parse_imgsz(imgsz, flag: str = "--imgsz") -> tuple[int, int] | None:
    """imgsz as (H, W) from S, 'H,W', an int or a pair; one line on anything else."""
    if imgsz is None:
        return None
    try:
        vals = [int(imgsz)] if isinstance(imgsz, int) else \
            [int(v) for v in (imgsz.split(",") if isinstance(imgsz, str) else imgsz)]
    except (TypeError, ValueError):
        vals = []
    if len(vals) not in (1, 2) or min(vals) < 1:
        eg = f"{flag} 224 or {flag} 240,320" if flag.startswith("--") else \
            f"{flag}=224 or {flag}=(240, 320)"
        raise EdgeoodError(f"{flag} {imgsz!r} must be one or two positive integers: S or H,W "
                           f"(e.g. {eg})")
    return (vals[0], vals[-1])


def _method_list(names: list[str], recipe: Recipe | None, params,
                 cfg: ExportConfig) -> list[Method]:
    given = parse_params(params) if isinstance(params, list) else dict(params or {})
    for key in given:
        if key not in names:
            raise EdgeoodError(f"{cfg.spell('params')} for '{key}', which is not among the "
                               f"methods {','.join(names)}{did_you_mean(key, names)}")
    if len(set(names)) != len(names):
        raise EdgeoodError(f"{cfg.spell('methods')} lists a method twice: {','.join(names)}")
    merged = {n: {**(recipe.params.get(n, {}) if recipe else {}), **given.get(n, {})} for n in names}
    return [create(n, merged[n]) for n in names]


def validate_export(model, cfg: ExportConfig) -> ExportRequest:
    """Every export argument checked up front (Ultralytics style): one line per problem, naming
    the options as the caller wrote them (cfg.caller)."""
    say = cfg.spell
    data = cfg.data
    _check_precision(cfg)
    if isinstance(model, (str, Path)) and not Path(model).is_file():
        raise EdgeoodError(f"{model}: no such file; pass the path of an .onnx model")
    size = parse_imgsz(cfg.imgsz, say("imgsz"))
    rec = load_recipe(cfg.recipe)
    from edgeood.methods import DEFAULT_METHODS
    names = _split(cfg.methods) or (rec.methods if rec and rec.methods else list(DEFAULT_METHODS))
    if data is None and not _split(cfg.methods):  # nothing to fit on: defaults that need no data
        names = [n for n in names if not method_class(n).needs_fit]
    for n in names:
        method_class(n)  # unknown names: did-you-mean
    primary = cfg.primary or names[0]
    if primary not in names:
        raise EdgeoodError(f"{say('primary')} {primary} is not among {say('methods')} "
                           f"{','.join(names)}{did_you_mean(primary, names)}")
    params = cfg.params
    if cfg.tune:
        tunable = [n for n in names if method_class(n).tune_space]
        if not tunable:
            with_space = [n for n in _registered() if method_class(n).tune_space]
            raise EdgeoodError(f"{say('tune')} searches a method's tune space; none of "
                               f"{','.join(names)} has one (methods that do: "
                               f"{', '.join(with_space)})")
        params = _with_tune(params, tunable)
    chosen = _method_list(names, rec, params, cfg)
    monitor = monitor_options(names, primary, cfg.arl, cfg.delta, cfg.stride,
                              cfg.stream_monitor, cfg.monitor_methods, caller=cfg.caller)
    if monitor.in_graph and data is None:
        raise EdgeoodError(f"{say('stream_monitor')} folds the stream alarm over the p-values, "
                           f"which need the ID reference: pass {say('data')}")
    source = open_source(data, strict=cfg.strict) if data is not None else None
    if source is None and any(m.needs_fit for m in chosen):
        need = ", ".join(m.name for m in chosen if m.needs_fit)
        raise EdgeoodError(f"{need} fit statistics on ID images: pass {say('data')} ID_DIR"
                           if cfg.caller == "cli" else
                           f"{need} fit statistics on ID images: pass data=ID_DIR")
    if source is not None:
        check_count(source)
    ood = open_source(cfg.ood_val, "ood-val", strict=cfg.strict) if cfg.ood_val is not None else None
    names = given_names(cfg.names, say("names"))
    out = cfg.out
    refuse_overwriting_source(model, out, say)
    if out is not None and not Path(out).parent.exists():
        raise EdgeoodError(f"output folder {Path(out).parent} does not exist; create it first")
    return ExportRequest(
        model=model, recipe=rec, methods=chosen, primary=primary, tpr=float(cfg.tpr),
        imgsz=size, batch=cfg.batch, out=Path(out) if out is not None else None,
        keep_taps=cfg.keep_taps, opset=cfg.opset, seed=cfg.seed, mean=cfg.mean, std=cfg.std,
        logits=cfg.logits, penultimate=cfg.penultimate, data=source, ood_val=ood,
        progress=cfg.progress, monitor=monitor, input=cfg.input, half=bool(cfg.half),
        int8=bool(cfg.int8), int8_method=cfg.int8_method, caller=cfg.caller,
        scale=cfg.scale, resize=cfg.resize,
        names=names)


def monitor_options(names: list[str], primary: str, arl=None, delta=None, stride=None,
                    in_graph: bool = False, methods=None, saved: dict | None = None,
                    caller: str = "cli") -> MonitorOptions:
    """The stream monitor's options checked up front; None keeps `saved` (else the default)."""
    saved = saved or {}
    prefix = "--" if caller == "cli" else ""
    chosen = _split(methods)
    if chosen == ["all"]:
        chosen = list(names)
    for m in chosen:
        if m not in names:
            raise EdgeoodError(f"{prefix}monitor{'-' if prefix else '_'}methods names {m}, which "
                               f"is not among the methods {','.join(names)}"
                               f"{did_you_mean(m, names)}")
    kept = [m for m in (saved.get("methods") or []) if m in names]
    return MonitorOptions(
        methods=chosen or kept or [primary],
        arl=check_arl(saved.get("arl", DEFAULT_ARL) if arl is None else arl, prefix),
        delta=check_delta(saved.get("delta", DEFAULT_DELTA) if delta is None else delta, prefix),
        stride=check_stride(saved.get("stride", DEFAULT_STRIDE) if stride is None else stride,
                            prefix),
        in_graph=bool(saved.get("in_graph", False) if in_graph is None else in_graph))


def _registered() -> list[str]:
    from edgeood.methods.registry import registry
    return list(registry())


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
        shape = _shape_from(req.recipe, req.imgsz, None, req.spell("imgsz"))
        if None in shape:
            raise EdgeoodError("exporting an nn.Module needs the input size: pass imgsz "
                               "(and channels via a recipe, default 3)")
        state.proto, state.sha256 = export_module(model, shape, req.opset)
        from edgeood.pipeline.preprocessing import from_module
        state.module_pre = from_module(model, shape[0])
        state.label = type(model).__name__
    else:
        raise EdgeoodError(f"cannot export a {type(model).__name__}; pass an .onnx path, an "
                           "onnx.ModelProto or a torch.nn.Module")
    refuse_detector(state.proto, str(model) if isinstance(model, (str, Path)) else "the model")
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
    flag = req.spell("imgsz")
    state.pre, state.pre_source = _preprocess(
        req.recipe, _shape_from(req.recipe, req.imgsz, input_chw(state.graph), flag), req.mean,
        req.std, flag, model=_model_preprocessing(state), req=req)
    if req.input == "uint8":  # the host path (fitting, calibration) resizes like the graph
        state.pre.resize_rule = HALF_PIXEL_LINEAR
    return state


def given_names(names, flag: str) -> list[str] | None:
    """The class names passed to export: a names file (one per line, or JSON) or a list."""
    from edgeood.artifact.classnames import as_names, read_names_file
    if names is None:
        return None
    if isinstance(names, (list, tuple)):
        return as_names(list(names), flag)
    return read_names_file(names, flag)


def names_stage(state: ExportState) -> ExportState:
    """The class names, one per class: the ones given (--names; a wrong count is an error),
    else the model's metadata_props (names / classes / labels), else the class sub-folders of
    the ID data; automatic ones of the wrong count are left out with one warning line."""
    from edgeood.artifact.classnames import check_count, model_names
    req, n = state.request, state.head.num_classes
    if req.names is not None:
        state.class_names = check_count(req.names, n, req.spell("names"))
        return state
    found = None
    try:
        found = model_names({p.key: p.value for p in state.proto.metadata_props})
    except EdgeoodError as exc:
        warn(f"{exc}; no class names taken from the model (pass {req.spell('names')} FILE)")
    candidates = []
    if found is not None:
        candidates.append((f"the model's metadata '{found[0]}'", found[1]))
    if req.data is not None and req.data.class_names:
        candidates.append((f"the class folders of {req.data.name}", req.data.class_names))
    for where, names in candidates:
        if len(names) == n:
            state.class_names = list(names)
            return state
        warn(f"{where} gives {len(names)} names for the model's {n} classes; not used as "
             f"class names (pass {req.spell('names')} FILE)")
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


def _check_precision(cfg: ExportConfig) -> None:
    say = cfg.spell
    if cfg.half and cfg.int8:
        raise EdgeoodError(f"{say('half')} and {say('int8')} exclude each other: pick one "
                           "precision")
    if cfg.int8 and cfg.data is None:
        where = f"{say('data')} ID_DIR" if cfg.caller == "cli" else "data=ID_DIR"
        raise EdgeoodError(f"{say('int8')} calibrates the activation ranges on ID images: pass "
                           f"{where} (>= 300 images recommended)")


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
        "preprocessing": {**pre.to_dict(), **state.pre_source},
        "head": {"logits": head.logits, "penultimate": head.z, "num_classes": head.num_classes,
                 "feature_dim": head.feature_dim,
                 "pattern": getattr(head, "pattern", None)},
        **({"class_names": state.class_names} if state.class_names else {}),
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
        try:
            scored = score_source(backend, methods, req.data, state.pre, req.batch,
                                  req.progress)
            target = backend.target  # where these thresholds hold (backend, device, precision)
        finally:
            if req.scorer is None:  # a scorer passed in is its owner's to close
                backend.close()
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
                           "source": req.data.name, "target": target,
                           "classifier": _classifier_check(scored.logits, req),
                           "skipped": len(req.data.skipped)}  # unreadable files left out
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
    state.meta["preprocessing"] = {**state.pre.to_dict(), **state.pre_source,
                                   "in_graph": IMAGE_INPUT}
    return state


def save_stage(state: ExportState) -> ExportState:
    """Write the detector and its sidecar atomically."""
    state.meta["outputs"] = [t.name for t in state.folded.outputs]
    state.meta["io"] = io_spec(state.folded)
    state.path = state.request.out or _default_out(state.request.model)
    save_detector(to_model(state.folded), state.meta, state.path)
    return state


EXPORT_STAGES = (load_stage, prepare_stage, names_stage, precision_stage, bind_stage, fit_stage, fold_stage,
                 image_input_stage, calibrate_stage, monitor_stage, save_stage)
CALIBRATE_STAGES = (unfold_monitor_stage, calibrate_stage, monitor_stage, save_stage)


def run_stages(state: ExportState, stages, label: str = "export") -> ExportState:
    """Run the stages in order; with progress and no terminal, one line per stage."""
    for step in stages:
        name = getattr(step, "__name__", "stage").removesuffix("_stage")
        with stage(f"{label}: {name}", state.request.progress):
            state = step(state)
    return state


def export(model, cfg: ExportConfig) -> ExportResult:
    """Fold OOD scoring into a classifier and calibrate it on ID images: the stages run on a
    checked ExportConfig (edgeood.api.export builds it from keyword arguments)."""
    state = run_stages(ExportState(validate_export(model, cfg)), EXPORT_STAGES)
    return ExportResult(state.path, state.meta)


def calibrate(detector, cfg: CalibrateConfig) -> ExportResult:
    """Re-fit the thresholds and p-value references of a saved detector on new ID images from a
    checked CalibrateConfig: only the calibration stages run (on a CalibrationRequest)."""
    path = Path(detector)
    meta = read_metadata(path)
    tpr = meta.get("tpr", 0.95) if cfg.tpr is None else cfg.tpr
    monitor = monitor_options(list(meta["methods"]), meta["primary"], cfg.arl, cfg.delta,
                              cfg.stride, cfg.stream_monitor, cfg.monitor_methods,
                              meta.get("monitor"), caller=cfg.caller)
    source = open_source(cfg.data, strict=cfg.strict)
    check_count(source)
    req = CalibrationRequest(
        model=path, data=source, tpr=tpr, batch=cfg.batch, seed=meta.get("seed", 0)
        if cfg.seed is None else cfg.seed, progress=cfg.progress, monitor=monitor,
        out=Path(cfg.out) if cfg.out else path, device=cfg.device, scorer=cfg.scorer,
        caller=cfg.caller)
    model = load_model(path)
    check_methods(path, meta, model)  # a metadata that lost a method: one line, not a KeyError
    state = ExportState(req, folded=gs.import_onnx(model), meta=meta,
                        pre=Preprocess.from_dict(meta["preprocessing"]))
    state = run_stages(state, CALIBRATE_STAGES, "calibrate")
    return ExportResult(state.path, state.meta)


# --- helpers of the stages --------------------------------------------------------------------
def _default_out(model) -> Path:
    if isinstance(model, (str, Path)):
        p = Path(model)
        return p.with_name(p.stem + ".detector.onnx")
    return Path("detector.onnx")


def _shape_from(recipe: Recipe | None, imgsz, graph_chw, flag: str = "imgsz"):
    """(C, H, W): --imgsz beats the recipe, which beats the graph."""
    c, h, w = graph_chw or (None, None, None)
    rin = recipe.input if recipe else {}
    c = c or rin.get("channels") or 3
    size = parse_imgsz(imgsz, flag) or (tuple(rin["size"]) if "size" in rin else None)
    if size:
        if (h and h != size[0]) or (w and w != size[1]):
            raise EdgeoodError(f"the model takes {w}x{h} images but {flag}/recipe asks for "
                               f"{size[1]}x{size[0]}; drop {flag} or re-export the model")
        h, w = size
    return (c, h, w)


def _preprocess(recipe: Recipe | None, chw, mean=None, std=None, flag: str = "imgsz",
                model=None, req=None) -> tuple[Preprocess, dict[str, Any]]:
    """The Preprocess and the metadata's account of where its mean/std came from: options >
    recipe > the model > the default (edgeood/pipeline/preprocessing.py)."""
    from edgeood.pipeline.preprocessing import resolve
    c, h, w = chw
    if h is None or w is None:
        raise EdgeoodError(f"the model's input size is dynamic; pass {flag} H,W or a recipe")
    rin = recipe.input if recipe else {}
    where = f"recipe {recipe.path}: [input] " if recipe and recipe.path else "recipe [input] "
    for key in ("mean", "std"):
        if key in rin:
            check_channels(rin[key], c, f"{where}{key}")
    m, s, entry = resolve(c, mean=mean, std=std, scale=req.scale if req is not None else None,
                          recipe=recipe, model=model,
                          spell=req.spell if req is not None else (lambda n: n))
    resize = req.resize if req is not None else None
    return Preprocess(size=(h, w), channels=c, mean=m, std=s,
                      resize=bool(rin.get("resize", True)) if resize is None else bool(resize),
                      color=rin.get("color", "RGB" if c == 3 else "GRAY")), entry


def _model_preprocessing(state: ExportState) -> list:
    """What the model says about its preprocessing, most trusted first: a normalisation layer at
    its input, mean/std in its metadata_props, a torch module's attributes."""
    from edgeood.pipeline.preprocessing import from_graph, from_metadata_props
    c = input_chw(state.graph)[0] or (state.request.recipe.input.get("channels", 3)
                                      if state.request.recipe else 3)
    props = {p.key: p.value for p in state.proto.metadata_props} if state.proto else {}
    found = [from_graph(state.graph, c), from_metadata_props(props, c), state.module_pre]
    return [f for f in found if f is not None]


def _classifier_check(logits: np.ndarray, req) -> dict[str, Any]:
    """The sanity check on the logits calibration computed: a warning when the classifier looks
    like chance on its own ID images (the usual sign of a wrong mean/std)."""
    from edgeood.pipeline.preprocessing import classifier_check, classifier_warning
    src = req.data
    labels_from = "class folders" if src.files is not None else "the labels array"
    labels = src.labels
    if src.class_names is not None and len(src.class_names) != logits.shape[1]:
        labels = None  # folder order is the model's class order only when they are as many
        labels_from = f"{len(src.class_names)} class folders for {logits.shape[1]} classes"
    check = classifier_check(logits, labels, labels_from)
    if src.labels is not None and labels is None:
        check["labels_ignored"] = f"{labels_from}: not taken as the model's class indices"
    if check["suspicious"]:
        warn(classifier_warning(check, req.spell))
    return check
