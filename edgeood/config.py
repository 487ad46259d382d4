"""One table of options and one typed configuration per command built from it.

Every option of every command is spelled once here: its Python name, its CLI flag, its
default, the check of its value and its help text. The CLI builds its typer options from the
table (`cli_option`), the API builds a config with `<Command>Config.from_kwargs`, and errors
name the option the way the caller wrote it: `tpr` from Python, `--tpr` on the command line.
"""
from __future__ import annotations

import math
from collections import UserString
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

from edgeood.artifact.names import DEFAULT_OPSET
from edgeood.errors import EdgeoodError, did_you_mean

REQUIRED = ...  # the default of an option the caller must give
CALLERS = ("python", "cli")

Check = Callable[[Any], Optional[str]]  # the message after "<option> <value>", or None


@dataclass(frozen=True)
class Option:
    """One row of the table. flag None: Python only; python False: CLI only."""

    name: str
    flag: str | None
    type: Any
    default: Any
    help: str
    commands: tuple[str, ...]
    check: Check | None = None
    aliases: tuple[str, ...] = ()   # more CLI spellings (-o, an old flag name)
    python: bool = True
    negatable: bool = False         # --flag/--no-flag: None keeps what the file has

    def spell(self, caller: str) -> str:
        return self.flag if caller == "cli" and self.flag else self.name


# --- value checks ----------------------------------------------------------------------------
def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def in_open_unit(example: str) -> Check:
    return lambda v: None if _number(v) and 0 < v < 1 else f"must be in (0, 1); e.g. {example}"


def at_least(lo: int) -> Check:
    return lambda v: None if v is None or (_number(v) and v >= lo) else f"must be >= {lo}"


def positive(unit: str = "") -> Check:
    return lambda v: None if v is None or (_number(v) and v > 0) else \
        f"must be > 0{f' ({unit})' if unit else ''}"


def one_of(choices: tuple[str, ...], note: str = "") -> Check:
    def check(v):
        if v is None or v in choices:
            return None
        return (f"must be one of {', '.join(choices)}{f' ({note})' if note else ''}"
                f"{did_you_mean(str(v), choices)}")
    return check


FRAME_FORMS = ("HxW (e.g. 480x640) or MINHxMINW:OPTHxOPTW:MAXHxMAXW (e.g. "
               "240x320:480x640:1080x1920)")


def parse_frame_size(value) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
    """--frame-size as ((min H, min W), (opt H, opt W), (max H, max W)): from "HxW",
    "MINHxMINW:OPTHxOPTW:MAXHxMAXW", (H, W) or ((H, W), (H, W), (H, W)). ValueError says what is
    wrong."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.strip().lower().split(":")
        sizes = []
        for part in parts:
            hw = part.strip().split("x")
            if len(hw) != 2 or not all(v.strip().isdigit() for v in hw):
                raise ValueError(f"must be {FRAME_FORMS}")
            sizes.append((int(hw[0]), int(hw[1])))
    else:
        try:
            seq = list(value)
            sizes = [tuple(seq)] if all(isinstance(v, int) for v in seq) else \
                [tuple(s) for s in seq]
        except TypeError:
            raise ValueError(f"must be {FRAME_FORMS}") from None
        if not all(len(s) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                       for v in s) for s in sizes):
            raise ValueError(f"must be {FRAME_FORMS}")
    if len(sizes) == 1:
        sizes *= 3
    if len(sizes) != 3:
        raise ValueError(f"must be {FRAME_FORMS}: one size or three (min:opt:max)")
    if any(v < 1 for s in sizes for v in s):
        raise ValueError("must have heights and widths >= 1")
    low, opt, high = sizes
    if not all(low[i] <= opt[i] <= high[i] for i in (0, 1)):
        raise ValueError("must grow from min to opt to max in height and in width")
    return low, opt, high


def _frame_check(v) -> str | None:
    try:
        parse_frame_size(v)
    except ValueError as e:
        return str(e)
    return None


class GeneratedHelp(UserString):
    """A help text made from code on first use, e.g. the methods' help from the method registry
    (which imports every method module); it is a string everywhere else (the typer option, the
    table tests compare it with the option's help)."""

    def __init__(self, make):
        self._make, self._text = (None, make) if isinstance(make, str) else (make, None)

    @property
    def data(self) -> str:  # type: ignore[override]
        if self._text is None:
            self._text = self._make()
        return self._text


def _methods_help() -> str:
    from edgeood.methods.catalog import methods_help
    return methods_help()


# --- help texts shared by several rows -------------------------------------------------------
H_BATCH = "Images per inference batch."
H_DEVICE = ("ONNX Runtime provider for .onnx detectors: cpu, cuda or tensorrt (default: CUDA "
            "where a session gets it, else CPU); engines run on TensorRT.")
H_TF32 = "Allow TF32 on the GPU (off: float32 stays float32)."
H_CUDA_GRAPH = "Replay one captured CUDA graph (fixed shapes: batches padded to --batch)."
H_ARL = ("Stream alarm level A: mean sampled frames between false alarms (default 10000; "
         "calibrate: kept).")
H_DELTA = "Stream monitor: chance that the reference set breaks the guarantee (default 0.01)."
H_STRIDE = "Stream monitor: use every k-th frame (default 1)."
H_MONITOR_METHODS = ("Methods the stream monitor bets on, comma-separated or 'all' (default: "
                     "the primary).")
H_DEPLOY_DETECTOR = "A detector (.onnx) or an engine (.engine/.plan) with its .json sidecar."

EXPORT, CALIBRATE, RUN, EVAL, INSPECT = "export", "calibrate", "run", "eval", "inspect"
WATCH, CHECK, PROFILE, BUILD, DEMO = "watch", "check", "profile", "build", "demo"
TRITON, DEEPSTREAM = "deploy triton", "deploy deepstream"
COMMANDS = (EXPORT, CALIBRATE, RUN, EVAL, INSPECT, WATCH, CHECK, PROFILE, BUILD, DEMO, TRITON,
            DEEPSTREAM)
EXPORT_INPUTS = ("float", "uint8")  # --input: the float input only, or camera frames as well
INT8_METHODS = ("minmax", "entropy", "percentile")  # as edgeood.graph.precision
TRITON_KINDS = ("gpu", "cpu", "auto")
TRITON_BACKENDS = ("onnxruntime", "python")  # deploy triton --backend

O = Option
TABLE: tuple[Option, ...] = (
    # every command: output
    O("as_json", "--json", bool, False, "Print machine-readable JSON on stdout.", COMMANDS,
      python=False),
    O("quiet", "--quiet", bool, False, "No progress bars or tables.", COMMANDS, aliases=("-q",),
      python=False),
    O("progress", None, bool, False, "Show progress bars.", (EXPORT, CALIBRATE)),
    # data and methods
    O("data", "--data", Optional[Path], None, "ID images: folder, .npy or .npz.", (EXPORT,)),
    O("data", "--data", Path, REQUIRED, "ID images: folder, .npy or .npz.", (CALIBRATE,)),
    O("methods", "--methods", Optional[str], None, GeneratedHelp(_methods_help), (EXPORT,)),
    O("primary", "--primary", Optional[str], None, "Method behind is_ood.", (EXPORT,)),
    O("names", "--names", Optional[Path], None, "Class names: a file with one per line, or "
      "JSON (default: the model's metadata names/classes/labels, else the class sub-folders "
      "of --data).", (EXPORT,)),
    O("tpr", "--tpr", float, 0.95, "ID acceptance rate at the threshold.", (EXPORT,),
      in_open_unit("0.95")),
    O("tpr", "--tpr", Optional[float], None, "ID acceptance rate (default: kept).", (CALIBRATE,),
      lambda v: None if v is None else in_open_unit("0.95")(v)),
    O("recipe", "--recipe", Optional[str], None, "Recipe name or .toml path.", (EXPORT,)),
    O("imgsz", "--imgsz", Optional[str], None, "Input size: S or H,W.", (EXPORT,)),
    O("imgsz", "--imgsz", Optional[int], None, "Input size for dynamic models.", (PROFILE,),
      at_least(1)),
    O("mean", "--mean", Optional[tuple], None, "Per-channel mean, comma-separated, after "
      "pixel / 255 (in 0-255 units with --scale 255); default: the recipe's, the model's, "
      "else ImageNet's (3 channels) or 0.5.", (EXPORT,)),
    O("std", "--std", Optional[tuple], None, "Per-channel std, comma-separated, in the units "
      "of --mean.", (EXPORT,)),
    O("scale",  # not a method name: the pixel scale
      "--scale", Optional[float], None, "The pixel range the model's normalisation expects: "
      "1 (pixel / 255, the default) or 255 (raw 0-255 pixels; --mean/--std in those units). "
      "Alone: no mean/std beyond that scaling.", (EXPORT,),
      lambda v: None if v is None or (_number(v) and float(v) in (1.0, 255.0)) else
      "must be 1 (pixel / 255) or 255 (raw 0-255 pixels)"),
    O("resize", "--resize", Optional[bool], None, "Resize images of another size to the "
      "model's (default: the recipe's, else on); --no-resize: such an image is an error.",
      (EXPORT,), negatable=True),
    O("batch", "--batch", int, 32, H_BATCH, (EXPORT, CALIBRATE, RUN, EVAL, WATCH), at_least(1)),
    O("strict", "--strict", bool, False, "Stop at the first unreadable image in a folder "
      "(default: skip it with one warning line and count it).",
      (EXPORT, CALIBRATE, RUN, EVAL, WATCH)),
    O("batch", "--batch", int, 1, "Batch size.", (PROFILE,), at_least(1)),
    O("batch", "--batch", Optional[int], None, "Batch of the engine (the maximum with --dynamic; "
      "default: the detector's, or 1).", (BUILD,), at_least(1)),
    O("batch", "--batch", Optional[int], None, "max_batch_size (dynamic batching; default 8, an "
      "engine's profile maximum).", (TRITON,), at_least(1)),
    O("batch", "--batch", int, 1, "nvinfer batch-size.", (DEEPSTREAM,), at_least(1)),
    O("out", "--out", Optional[Path], None, "Detector path.", (EXPORT,), aliases=("-o",)),
    O("out", "--out", Optional[Path], None, "Write here instead of in place.", (CALIBRATE,),
      aliases=("-o",)),
    O("out", "--out", Optional[Path], None, "Engine path (default "
      "<stem>.b<batch>.trt<ver>.<gpu|dla0>.<precision>.engine).", (BUILD,), aliases=("-o",)),
    O("out", "--out", Path, Path("edgeood_demo"), "Output folder.", (DEMO,), aliases=("-o",)),
    O("out", "--out", Path, REQUIRED, "The model repository folder.", (TRITON,),
      aliases=("-o",)),
    O("out", "--out", Path, REQUIRED, "Folder for the config, model and probe.", (DEEPSTREAM,),
      aliases=("-o",)),
    O("keep_taps", "--keep-taps", bool, False, "Also output tapped tensors.", (EXPORT,)),
    O("params", "--param", Optional[list], None, "METHOD.NAME=VALUE.", (EXPORT,)),
    O("opset", "--opset", int, DEFAULT_OPSET, "Opset for exporting nn.Modules.", (EXPORT,),
      at_least(7)),
    O("seed", "--seed", int, 0, "Seed for jigsaw images and subsampling.", (EXPORT,)),
    O("seed", None, Optional[int], None, "Seed of the reference subsampling (default: kept).",
      (CALIBRATE,)),
    O("logits", "--logits", Optional[str], None, "Logits tensor name.", (EXPORT,)),
    O("penultimate", "--penultimate", Optional[str], None, "Feature tensor name.", (EXPORT,)),
    O("tune", "--tune", bool, False, "Search the tune space of the methods that have one "
      "(AdaSCALE's p_max) against jigsaw images or --ood-val.", (EXPORT,)),
    O("ood_val", "--ood-val", Optional[Path], None, "OOD validation images (tuning, GROOD/layer "
      "energy's OOD side).", (EXPORT,), aliases=("--tune-ood",)),
    # stream monitor
    O("arl", "--arl", Optional[float], None, H_ARL, (EXPORT, CALIBRATE)),
    O("delta", "--delta", Optional[float], None, H_DELTA, (EXPORT, CALIBRATE)),
    O("stride", "--stride", Optional[int], None, H_STRIDE, (EXPORT, CALIBRATE)),
    O("arl", "--arl", Optional[float], None, "Alarm level A (default: the detector's).",
      (WATCH,)),
    O("delta", "--delta", Optional[float], None, "Default: the detector's.", (WATCH,)),
    O("stride", "--stride", Optional[int], None, "Use every k-th frame (default: the "
      "detector's).", (WATCH,)),
    O("stream_monitor", "--stream-monitor", bool, False, "Fold the stream alarm into the graph "
      "as state tensors (Triton / DeepStream): input monitor_state, outputs monitor_state_out "
      "and stream_alarm.", (EXPORT,)),
    O("stream_monitor", "--stream-monitor", Optional[bool], None, "Fold the stream alarm into "
      "the graph (default: as before).", (CALIBRATE,), negatable=True),
    O("monitor_methods", "--monitor-methods", Optional[str], None, H_MONITOR_METHODS,
      (EXPORT, CALIBRATE)),
    # precision
    O("input", "--input", str, "float", "float (N x C x H x W, preprocessed) or uint8: also the "
      "input 'image', camera frames N x H x W x C that the graph casts, resizes, normalises and "
      "transposes.", (EXPORT,),
      one_of(EXPORT_INPUTS, "uint8: camera frames straight into the graph")),
    O("half", "--half", bool, False, "float16 backbone, float32 heads (Casts at the taps); "
      "statistics and thresholds fitted on it.", (EXPORT,)),
    O("int8", "--int8", bool, False, "int8 Q/DQ backbone calibrated on --data (>= 300 images), "
      "float32 heads.", (EXPORT,)),
    O("int8_method", "--int8-method", str, "percentile", "int8 activation ranges: percentile "
      "(99.999, default), minmax or entropy.", (EXPORT,), one_of(INT8_METHODS)),
    # running
    O("device", "--device", Optional[str], None, H_DEVICE, (CALIBRATE, RUN, EVAL, PROFILE)),
    O("scorer", None, Any, None, "A loaded backend to score with (an engine).", (CALIBRATE,)),
    O("tf32", "--tf32", bool, False, H_TF32, (RUN, PROFILE, BUILD)),
    O("cuda_graph", "--cuda-graph", bool, False, H_CUDA_GRAPH, (RUN, PROFILE)),
    O("all_rows", "--all", bool, False, "Print every image's row (default: the first 200, "
      "and a line saying how many were left out).", (RUN,), python=False),
    # eval
    O("id_data", "--id", Path, REQUIRED, "ID test images.", (EVAL,)),
    O("ood", "--ood", list, REQUIRED, "OOD images (repeat for several sets).", (EVAL,)),
    O("plot", "--plot", Optional[Path], None, "Write PNG score histograms and ROC curves (and a "
      "per-precision overlay) here.", (EVAL,)),
    # inspect, watch
    O("fps", "--fps", float, 30.0, "Frame rate for the stream monitor's mean time between "
      "false alarms.", (INSPECT,), positive()),
    O("fps", "--fps", float, 30.0, "Frame rate, for the mean time between false alarms in the "
      "summary.", (WATCH,), positive()),
    O("methods", "--methods", Optional[str], None, "Methods to bet on, comma-separated or 'all' "
      "(default: the detector's).", (WATCH,)),
    O("rearm", "--rearm", bool, False, "Restart the statistic after an alarm instead of "
      "holding it.", (WATCH,)),
    O("state", "--state", Optional[Path], None, "JSON file: continue the stream saved there "
      "(its settings win), save it at the end.", (WATCH,)),
    O("max_frames", "--max-frames", Optional[int], None, "Stop after N frames.", (WATCH,),
      at_least(1)),
    O("fail_on_alarm", "--fail-on-alarm", bool, False, "Exit 3 when the alarm rang.", (WATCH,)),
    # check
    O("target", "--target", Optional[str], None, "A TensorRT version's parser: trt8.6, trt10 or "
      "trt11 (opset range, Q/DQ forms, INT64, strongly typed rules).", (CHECK,)),
    # profile
    O("warmup", "--warmup", int, 10, "Untimed runs first.", (PROFILE,), at_least(0)),
    O("iterations", "--iterations", int, 100, "Timed runs.", (PROFILE,), at_least(1)),
    O("percentile", "--percentile", Optional[list], None, "Extra latency percentiles.",
      (PROFILE,)),
    O("layers", "--layers", int, 0, "TensorRT engines: show the N slowest layers (TensorRT's "
      "profiler).", (PROFILE,), at_least(0)),
    # build
    O("half", "--half", bool, False, "float16: a --half detector builds strongly typed; on a "
      "float32 one TensorRT 10's FP16 flag (scoring head kept float32).", (BUILD,)),
    O("int8", "--int8", bool, False, "int8 from the detector's Q/DQ nodes (export with --int8 "
      "first).", (BUILD,)),
    O("dynamic", "--dynamic", bool, False, "Dynamic batch: optimization profile min 1, opt = "
      "max = --batch.", (BUILD,)),
    O("workspace", "--workspace", Optional[float], None, "Builder workspace limit in GB "
      "(default: TensorRT's).", (BUILD,), positive("GB")),
    O("timing_cache", "--timing-cache", Optional[Path], None, "Timing cache file (one per "
      "TensorRT version: .trt<ver> is added).", (BUILD,)),
    O("device", "--device", str, "gpu", "gpu, or dla:N (Jetson DLA core N, GPU fallback).",
      (BUILD,)),
    O("print_trtexec", "--print-trtexec", bool, False, "Print the same build as a trtexec "
      "command line, and build nothing.", (BUILD,), python=False),
    O("trt_version", "--trt-version", Optional[str], None, "With --print-trtexec where TensorRT "
      "is not installed: the version to build for (e.g. 10.3 on JetPack 6).", (BUILD,),
      python=False),
    O("force", "--force", bool, False, "Rebuild even when a matching engine exists.", (BUILD,)),
    O("input", "--input", Optional[str], None, "uint8: an engine fed camera frames (N x H x W x "
      "C; preprocessing in the graph, added if the detector lacks it); float: the preprocessed "
      "input only. Writes that single-entry detector beside DETECTOR and builds it.", (BUILD,),
      one_of(EXPORT_INPUTS)),
    O("frame_size", "--frame-size", Optional[str], None, "With --input uint8: the camera "
      "frame, HxW (fixed, e.g. 480x640), or a range MINHxMINW:OPTHxOPTW:MAXHxMAXW (an "
      "optimization profile over H and W).", (BUILD,), _frame_check),
    # demo
    O("skip_lite0", "--skip-lite0", bool, False, "Only the digits benchmark.", (DEMO,)),
    O("retrain", "--retrain", bool, False, "Train the digits CNN here (needs torch; numbers "
      "differ from the README's shipped model).", (DEMO,)),
    # deploy
    O("name", "--name", Optional[str], None, "Model name (default: the file's).", (TRITON,)),
    O("name", "--name", Optional[str], None, "File name stem (default: the detector's).",
      (DEEPSTREAM,)),
    O("input", "--input", Optional[str], None, "The input served: image (uint8 frames; the "
      "default when the detector has it) or float.", (TRITON,),
      one_of(("image", "uint8", "float"))),
    O("kind", "--kind", Optional[str], None, "Instance group kind: gpu, cpu or auto (default "
      "gpu; cpu with --backend python).", (TRITON,), one_of(TRITON_KINDS)),
    O("instances", "--instances", int, 1, "Model instances.", (TRITON,), at_least(1)),
    O("backend", "--backend", str, "onnxruntime", "onnxruntime (the model file; TensorRT for "
      "engines) or python (ONNX Runtime on the CPU and one exact float64 stream monitor per "
      "sequence id).", (TRITON,), one_of(TRITON_BACKENDS)),
    O("half", "--half", bool, False, "network-mode=2: nvinfer builds FP16 (the thresholds were "
      "calibrated in float32).", (DEEPSTREAM,)),
    O("device", "--device", int, 0, "gpu-id.", (DEEPSTREAM,), at_least(0)),
)
del O


def options_for(command: str) -> dict[str, Option]:
    """The rows of one command by Python name (one row per name and command)."""
    if command not in COMMANDS:
        raise KeyError(command)
    rows: dict[str, Option] = {}
    for opt in TABLE:
        if command in opt.commands:
            if opt.name in rows:
                raise RuntimeError(f"option table: {opt.name} twice for {command}")
            rows[opt.name] = opt
    return rows


def option(command: str, name: str) -> Option:
    return options_for(command)[name]


# (command's last word, option name) -> the generated help its click option gets once built
# (click would render a help given to the typer option at every start-up of the CLI)
GENERATED_HELP: dict[tuple[str, str], GeneratedHelp] = {}


def cli_option(command: str, name: str):
    """The typer.Option of a table row, so the CLI cannot drift from the table."""
    import typer
    opt = option(command, name)
    flag = f"{opt.flag}/--no-{opt.flag[2:]}" if opt.negatable else opt.flag
    flag_only = opt.type in (bool, Optional[bool])  # takes no value: no <bool> in --help
    generated = isinstance(opt.help, GeneratedHelp)
    if generated:
        GENERATED_HELP[(command.split()[-1], name)] = opt.help
    return typer.Option(opt.default, flag, *opt.aliases, help=None if generated else opt.help,
                        **({"metavar": ""} if flag_only else {}))


def spell(command: str, name: str, caller: str) -> str:
    """An option as the caller writes it: `tpr` from Python, `--tpr` on the command line."""
    return option(command, name).spell(caller)


def check_value(command: str, name: str, value, caller: str = "python"):
    """Run a row's check; one EdgeoodError line in the caller's vocabulary."""
    opt = option(command, name)
    if value is REQUIRED:
        raise EdgeoodError(f"{opt.spell(caller)} is required")
    if name in ("arl", "delta", "stride") and value is not None:
        from edgeood.stats.monitor import check_arl, check_delta, check_stride
        prefix = "--" if caller == "cli" else ""
        return {"arl": check_arl, "delta": check_delta, "stride": check_stride}[name](
            value, prefix)
    problem = opt.check(value) if opt.check else None
    if problem:
        raise EdgeoodError(f"{opt.spell(caller)} {value} {problem}")
    return value


@dataclass(frozen=True)
class Config:
    """Base of the per-command configs: built and checked from the table by from_kwargs."""

    command: ClassVar[str] = ""
    renamed: ClassVar[dict[str, str]] = {}  # old Python names still accepted

    @classmethod
    def from_kwargs(cls, caller: str = "python", **kwargs) -> "Config":
        if caller not in CALLERS:
            raise ValueError(f"caller must be one of {CALLERS}")
        names = [f.name for f in fields(cls) if f.name != "caller"]
        for old, new in cls.renamed.items():
            if old in kwargs:
                value = kwargs.pop(old)
                if kwargs.get(new) is None:
                    kwargs[new] = value
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            k = unknown[0]
            raise EdgeoodError(f"{cls.command}() got an unknown option {k!r}"
                               f"{did_you_mean(k, names)}; it takes {', '.join(names)}")
        rows = options_for(cls.command)
        values = {n: check_value(cls.command, n, kwargs.get(n, rows[n].default), caller)
                  for n in names}
        return cls(caller=caller, **values)

    def spell(self, name: str) -> str:
        return spell(self.command, name, self.caller)

    def as_kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "caller"}


@dataclass(frozen=True)
class ExportConfig(Config):
    command: ClassVar[str] = EXPORT
    renamed: ClassVar[dict[str, str]] = {"tune_ood": "ood_val"}
    caller: str
    data: Any
    methods: Any
    primary: str | None
    tpr: float
    recipe: Any
    imgsz: Any
    mean: Any
    std: Any
    batch: int
    out: Any
    keep_taps: bool
    params: Any
    opset: int
    seed: int
    logits: str | None
    penultimate: str | None
    tune: bool
    ood_val: Any
    progress: bool
    arl: float | None
    delta: float | None
    stride: int | None
    stream_monitor: bool
    monitor_methods: Any
    input: str
    half: bool
    int8: bool
    int8_method: str
    strict: bool
    names: Any
    scale: float | None
    resize: bool | None


@dataclass(frozen=True)
class CalibrateConfig(Config):
    command: ClassVar[str] = CALIBRATE
    caller: str
    data: Any
    tpr: float | None
    batch: int
    out: Any
    seed: int | None
    progress: bool
    arl: float | None
    delta: float | None
    stride: int | None
    stream_monitor: bool | None
    monitor_methods: Any
    device: str | None
    scorer: Any
    strict: bool


@dataclass(frozen=True)
class BuildConfig(Config):
    command: ClassVar[str] = BUILD
    caller: str
    half: bool
    int8: bool
    batch: int | None
    dynamic: bool
    workspace: float | None
    timing_cache: Any
    device: str
    out: Any
    tf32: bool
    force: bool
    input: str | None
    frame_size: Any  # ((min H, min W), (opt H, opt W), (max H, max W)) or None

    @classmethod
    def from_kwargs(cls, caller: str = "python", **kwargs) -> "BuildConfig":
        from dataclasses import replace
        cfg = super().from_kwargs(caller, **kwargs)
        return replace(cfg, frame_size=parse_frame_size(cfg.frame_size))


@dataclass(frozen=True)
class TritonConfig(Config):
    command: ClassVar[str] = TRITON
    caller: str
    out: Path
    name: str | None
    batch: int | None
    input: str | None
    kind: str | None
    instances: int
    backend: str


@dataclass(frozen=True)
class DeepStreamConfig(Config):
    command: ClassVar[str] = DEEPSTREAM
    caller: str
    out: Path
    batch: int
    half: bool
    device: int
    name: str | None


DeployConfig = TritonConfig  # the first deploy target; DeepStreamConfig is the other


@dataclass(frozen=True)
class WatchConfig(Config):
    command: ClassVar[str] = WATCH
    caller: str
    arl: float | None
    delta: float | None
    stride: int | None
    methods: str | None
    rearm: bool
    state: Path | None
    max_frames: int | None
    fps: float
    fail_on_alarm: bool
    batch: int
    strict: bool


@dataclass(frozen=True)
class ProfileConfig(Config):
    command: ClassVar[str] = PROFILE
    caller: str
    batch: int
    warmup: int
    iterations: int
    imgsz: int | None
    percentile: Any
    device: str | None
    tf32: bool
    cuda_graph: bool
    layers: int


CONFIGS: tuple[type[Config], ...] = (ExportConfig, CalibrateConfig, BuildConfig, TritonConfig,
                                     DeepStreamConfig, WatchConfig, ProfileConfig)
