"""The Python API the CLI calls: export(), calibrate(), load(), build().

Each function takes keyword options, checks them into the command's typed configuration
(edgeood.config, one table of options) and hands it to the layer that does the work: the
export pipeline (edgeood.pipeline), the runtime (edgeood.runtime) or the TensorRT builder
(edgeood.tensorrt). `caller="cli"` makes errors name options by their flags.
"""
from __future__ import annotations

from pathlib import Path

from edgeood.artifact.files import is_engine
from edgeood.config import BuildConfig, CalibrateConfig, ExportConfig
from edgeood.pipeline.export import ExportResult


def export(model, *, caller: str = "python", **options) -> ExportResult:
    """Fold OOD scoring into a classifier and calibrate it on ID images.

    model: an .onnx path, an onnx.ModelProto or a torch.nn.Module. Options (keywords; see
    edgeood.config.TABLE): data: a folder of ID images, a .npy/.npz, or an array (None:
    scores only, no thresholds; run calibrate() later). tune: search the tune space of the
    methods that declare one (against jigsaw images of `data`, or against ood_val). ood_val:
    OOD validation images (for tuning and for methods that fit on them); tune_ood is its old
    name. Stream monitor (edgeood.StreamMonitor, `edgeood watch`): arl (A, default 10000
    sampled frames), delta (0.01), stride (1) and monitor_methods (default the primary; "all"
    or a list: their bets are averaged) are kept in the metadata; stream_monitor=True also
    folds its update into the graph (input monitor_state, outputs monitor_state_out and
    stream_alarm). input="uint8" adds the camera-frame input `image` (uint8 N x H x W x C RGB:
    cast, resized with the half_pixel_linear rule, normalised and transposed in the graph)
    beside the float input; edgeood.load(path)(frames) then feeds frames to it.
    names: the class names (a file, one per line or JSON, or a list; default: the model's
    metadata names/classes/labels, else the class sub-folders of data), kept as class_names.
    strict: stop at the first unreadable image of a folder (default: skip it with a warning;
    the calibration entry counts the skipped files).
    """
    from edgeood.pipeline.export import export as run_export
    return run_export(model, ExportConfig.from_kwargs(caller, **options))


def calibrate(detector, data=None, *, caller: str = "python", **options) -> ExportResult:
    """Re-fit the thresholds and p-value references of an existing detector on new ID images
    (fitted statistics are kept); a TensorRT engine recalibrates its source detector on the
    engine itself and is rebuilt (edgeood.pipeline.engine_calibrate). Options: tpr (default:
    kept), batch, out, seed, progress, arl, delta, stride, stream_monitor, monitor_methods,
    device (ONNX Runtime provider to score on), scorer (a loaded backend), strict (stop at an
    unreadable image instead of skipping it)."""
    cfg = CalibrateConfig.from_kwargs(caller, data=data, **options)
    path = Path(detector)
    if is_engine(path) and cfg.scorer is None:
        from edgeood.pipeline.engine_calibrate import calibrate_engine
        return calibrate_engine(path, cfg)
    from edgeood.pipeline.export import calibrate as calibrate_detector
    return calibrate_detector(path, cfg)


def load(path, providers: list[str] | None = None, **options):
    """A Detector for an exported file (backend chosen from the file; options: device, tf32,
    cuda_graph, batch as in edgeood.runtime.load)."""
    from edgeood.runtime import load as _load
    return _load(path, providers, **options)


def build(detector, *, caller: str = "python", features=None, **options):
    """A TensorRT engine (plain plan + <engine>.json) from a detector; options: half, int8,
    batch, dynamic, workspace, timing_cache, device, out, tf32, force (see
    edgeood.tensorrt.builder), input ("uint8": an engine fed camera frames; "float") and
    frame_size (the camera frame of the uint8 input: (480, 640), or a range
    ((240, 320), (480, 640), (1080, 1920)) for an optimization profile over H and W). An engine
    whose source, TensorRT version, GPU and options match is reused. features: the TensorRT to
    build for (default: the installed one)."""
    return build_config(detector, BuildConfig.from_kwargs(caller, **options), features)


def validate_build(detector, cfg: BuildConfig, features=None):
    """The checked BuildRequest of a BuildConfig (nothing is built). With cfg.input the
    single-entry detector (<stem>.<input>.onnx) is made in memory, checked, and written only
    once everything validates."""
    from edgeood.tensorrt.entry import prepare_build
    return prepare_build(detector, cfg.input, cfg.frame_size, half=cfg.half, int8=cfg.int8,
                         batch=cfg.batch, dynamic=cfg.dynamic, workspace=cfg.workspace,
                         timing_cache=cfg.timing_cache, device=cfg.device, out=cfg.out,
                         tf32=cfg.tf32, features=features)


def build_config(detector, cfg: BuildConfig, features=None, log=None):
    """build() from a checked BuildConfig."""
    from edgeood.tensorrt.builder import build_engine
    req = validate_build(detector, cfg, features)
    return build_engine(req, force=cfg.force, **({"log": log} if log is not None else {}))
