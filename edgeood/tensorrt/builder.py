"""TensorRT engine builder: detector.onnx -> a plain serialized plan (what trtexec, Triton and
DeepStream load: nothing prepended) plus `<engine>.json` (the detector's metadata, the source's
sha256, the TensorRT version, the GPU and the build options).

TensorRT 10 (JetPack 6 ships 10.3) and TensorRT 11, told apart by the installed version and by
feature checks on the enums (hasattr), never by catching errors:
- networks are always explicit batch: EXPLICIT_BATCH is never passed (deprecated in 10,
  removed in 11);
- a detector exported with --half / --int8 builds as a strongly typed network on both: its
  precision is the graph's own float16 tensors and Q/DQ nodes (TensorRT 11 has no FP16 / INT8
  builder flags and no calibrators);
- `--half` on a float32 detector sets the FP16 builder flag where it exists (10), keeps the
  scoring head in float32 (layer precisions + PREFER_PRECISION_CONSTRAINTS), and is refused on
  11 with the fix (export with --half);
- TF32 is cleared unless --tf32: GPU numerics equal the CPU's for the float32 parts.
Everything but `build_engine` runs without TensorRT and is tested here; `build_engine` is
type-checked (mypy --strict) against tensorrt-stubs.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Protocol

from edgeood.artifact.names import IMAGE_INPUT, LOGITS
from edgeood.errors import EdgeoodError, did_you_mean, spell
from edgeood.artifact.metadata import dumps, read_metadata, sidecar_path, validate
from edgeood.artifact.truth import check_graph
from edgeood.artifact.files import (ENGINE_SUFFIXES, atomic_write, file_sha256, is_engine,
                                    staging_dir)
from edgeood.runtime.tensorrt.cuda import GpuInfo, gpu_info
from edgeood.artifact.tensors import Dim, TensorSpec
from edgeood.runtime.tensorrt.backend import (dims, engine_tensor, require_tensorrt,
                                              tensorrt_or_none)
from edgeood.version import __version__

if TYPE_CHECKING:
    import onnx
    import tensorrt as trt

Frame = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]

PRECISIONS = ("float32", "float16", "int8")
PRECISION_TAG = {"float32": "fp32", "float16": "fp16", "int8": "int8"}
Log = Callable[[str], None]


def _logged(line: str) -> None:
    """The default build log: warnings of the "edgeood" logger (on stderr by default)."""
    logging.getLogger(__name__).warning(line.removeprefix("warning: "))


# --- what the installed (or named) TensorRT offers --------------------------------------------
@dataclass(frozen=True)
class TrtFeatures:
    """The TensorRT features the builder depends on, read off the module (hasattr) or, for
    --print-trtexec where TensorRT is absent, assumed from a version number."""

    version: str
    fp16_flag: bool             # BuilderFlag.FP16 (10; removed in 11)
    strongly_typed_flag: bool   # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    tf32_flag: bool             # BuilderFlag.TF32
    precision_constraints: bool  # BuilderFlag.PREFER_PRECISION_CONSTRAINTS (removed in 11)
    dla: bool                   # DeviceType.DLA

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def always_strongly_typed(self) -> bool:
        """TensorRT 11 removed weak typing: every network is strongly typed."""
        return self.major >= 11

    @classmethod
    def of(cls, module: ModuleType) -> TrtFeatures:
        flags = module.BuilderFlag
        return cls(version=str(module.__version__),
                   fp16_flag=hasattr(flags, "FP16"),
                   strongly_typed_flag=hasattr(module.NetworkDefinitionCreationFlag,
                                               "STRONGLY_TYPED"),
                   tf32_flag=hasattr(flags, "TF32"),
                   precision_constraints=hasattr(flags, "PREFER_PRECISION_CONSTRAINTS"),
                   dla=hasattr(module.DeviceType, "DLA"))

    @classmethod
    def assumed(cls, version: str) -> TrtFeatures:
        if not re.fullmatch(r"\d+(\.\d+){0,3}", version or ""):
            raise EdgeoodError(f"{spell('trt_version')} {version!r} is not a TensorRT version; "
                               f"e.g. 10.3 "
                               "(JetPack 6) or 10.13")
        major = int(version.split(".")[0])
        if major < 10:
            raise EdgeoodError(f"{spell('trt_version')} {version}: edgeood builds for TensorRT "
                               f"10 and 11")
        weak = major < 11
        return cls(version, fp16_flag=weak, strongly_typed_flag=True, tf32_flag=True,
                   precision_constraints=weak, dla=True)


def installed_features() -> TrtFeatures | None:
    module = tensorrt_or_none()
    return TrtFeatures.of(module) if module is not None else None


def version_tag(version: str) -> str:
    """'10.3.0.30' -> '10.3.0' (the part engines are named by)."""
    return ".".join(version.split(".")[:3])


# --- the request, validated before any work ---------------------------------------------------
@dataclass(frozen=True)
class BuildOptions:
    precision: str         # what the engine computes in: float32 | float16 | int8
    strongly_typed: bool   # types come from the graph (float16 tensors, Q/DQ)
    fp16_flag: bool        # TensorRT 10's FP16 builder flag (--half on a float32 detector)
    max_batch: int
    dynamic: bool          # optimization profile min 1, opt = max = max_batch
    workspace_gb: float | None
    device: str            # gpu | dla0 | dla1 ...
    tf32: bool
    # the camera frames of a uint8 `image` entry: ((min H, min W), (opt H, opt W), (max H,
    # max W)); all equal for a fixed frame size. None: no such entry, or its size is the model's
    frame_size: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None

    @property
    def dla_core(self) -> int | None:
        return int(self.device[3:]) if self.device.startswith("dla") else None

    @property
    def tag(self) -> str:
        return PRECISION_TAG[self.precision]

    @property
    def target_precision(self) -> str:
        """The precision the calibration target records (TF32 counts: it moves scores)."""
        return "tf32" if self.tf32 and self.precision == "float32" else self.precision

    def as_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "strongly_typed": self.strongly_typed,
                "fp16_flag": self.fp16_flag, "max_batch": self.max_batch,
                "dynamic": self.dynamic, "workspace_gb": self.workspace_gb,
                "device": self.device, "tf32": self.tf32,
                # only when set: engines built before --frame-size keep their build key
                **({"frame_size": {k: list(s) for k, s in zip(("min", "opt", "max"),
                                                               self.frame_size)}}
                   if self.frame_size is not None else {})}


@dataclass
class BuildRequest:
    detector: Path
    metadata: dict[str, Any]
    options: BuildOptions
    out: Path
    timing_cache: Path | None
    inputs: list[TensorSpec]
    features: TrtFeatures
    head_nodes: frozenset[str] = field(default_factory=frozenset)
    head_tensors: frozenset[str] = field(default_factory=frozenset)

    def profile_shapes(self) -> dict[str, tuple[list[int], list[int], list[int]]]:
        """(min, opt, max) of every input with a symbolic batch axis: min 1 (--dynamic) or the
        batch, opt = max = the batch. With both a float and a uint8 `image` entry (in-graph
        preprocessing) either may be fed an empty batch, so min is 0 there. The camera frames
        of a uint8 `image` entry take --frame-size: min/opt/max H and W of its range."""
        o = self.options
        entries = sum(1 for i in self.inputs if len(i.shape) == 4)
        shapes = {}
        for inp in self.inputs:
            if not inp.shape or isinstance(inp.shape[0], int):
                continue
            low = 1 if o.dynamic else o.max_batch
            if entries > 1 and len(inp.shape) == 4:
                low = 0
            if inp.name == IMAGE_INPUT and o.frame_size is not None:
                c = inp.dims()[3]  # fixed: validate_build refuses a free channel axis
                (h0, w0), (h1, w1), (h2, w2) = o.frame_size
                shapes[inp.name] = ([low, h0, w0, c], [o.max_batch, h1, w1, c],
                                    [o.max_batch, h2, w2, c])
                continue
            rest = list(inp.dims()[1:])  # fixed: validate_build refuses other image inputs
            shapes[inp.name] = ([low, *rest], [o.max_batch, *rest], [o.max_batch, *rest])
        return shapes

    @property
    def timing_cache_file(self) -> Path | None:
        return timing_cache_path(self.timing_cache, self.features.version) \
            if self.timing_cache is not None else None


def parse_device(device: str) -> str:
    """'gpu' | 'dla:N' -> 'gpu' | 'dlaN' (the name's device tag)."""
    d = (device or "gpu").strip().lower()
    if d == "gpu":
        return "gpu"
    m = re.fullmatch(r"dla:?(\d+)", d)
    if m:
        return f"dla{int(m.group(1))}"
    raise EdgeoodError(f"{spell('device')} {device} is not gpu or dla:N (e.g. dla:0 on a Jetson "
                       f"Orin)"
                       f"{did_you_mean(d, ['gpu', 'dla:0', 'dla:1'])}")


def read_inputs(path: Path, model: onnx.ModelProto | None = None) -> list[TensorSpec]:
    """The detector's graph inputs (a dim that is not a positive number is dynamic); from
    `model` when given (a detector not written yet)."""
    import onnx
    if model is None:
        model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims: list[Dim] = []
        for d in vi.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") and d.dim_value > 0
                        else (d.dim_param or None))
        elem = vi.type.tensor_type.elem_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "float32"
        out.append(TensorSpec(vi.name, dtype, tuple(dims), "input"))
    return out


def head_of(path: Path, logits: str = "logits", model: onnx.ModelProto | None = None
            ) -> tuple[frozenset[str], frozenset[str]]:
    """(node names, tensor names) of the scoring head: every node the logits do not depend
    on (scores, p-values, decision, AdaSCALE's gradient pass). Under the FP16 builder flag
    these stay float32."""
    import onnx
    if model is None:
        model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    backbone: set[int] = set()
    todo = [logits]
    seen: set[str] = set()
    while todo:
        t = todo.pop()
        if t in seen or t not in producer:
            continue
        seen.add(t)
        node = producer[t]
        backbone.add(id(node))
        todo.extend(node.input)
    head = [n for n in graph.node if id(n) not in backbone]
    return (frozenset(n.name for n in head if n.name),
            frozenset(o for n in head for o in n.output))


def validate_build(detector: str | Path, half: bool = False, int8: bool = False,
                   batch: int | None = None, dynamic: bool = False,
                   workspace: float | None = None, timing_cache: str | Path | None = None,
                   device: str = "gpu", out: str | Path | None = None, tf32: bool = False,
                   features: TrtFeatures | None = None, frame_size: Frame | None = None,
                   model: onnx.ModelProto | None = None,
                   meta: dict[str, Any] | None = None) -> BuildRequest:
    """Every build argument checked up front (one line per problem). features: the TensorRT
    to build for (default: the installed one). model and meta: a detector in memory that is
    written to `detector` only once it validates (edgeood.tensorrt.entry); frame_size: the
    min/opt/max camera frame (H, W) of its uint8 `image` input."""
    path = Path(detector)
    if is_engine(path):
        raise EdgeoodError(f"{path} is already an engine; pass the .onnx detector it was built "
                           "from")
    if path.suffix.lower() != ".onnx":
        raise EdgeoodError(f"{path}: edgeood build takes an .onnx detector (written by edgeood "
                           "export)")
    if model is None and not path.is_file():
        raise EdgeoodError(f"{path}: no such file; pass a detector written by edgeood export")
    if half and int8:
        raise EdgeoodError(f"{spell('half')} and {spell('int8')} exclude each other; pass one")
    if batch is not None and batch < 1:
        raise EdgeoodError(f"{spell('batch')} {batch} must be >= 1")
    if workspace is not None and not workspace > 0:
        raise EdgeoodError(f"{spell('workspace')} {workspace} must be > 0 (GB)")
    dev = parse_device(device)
    if meta is None:
        meta = read_metadata(path)
    # the engine bakes the graph's threshold; the sidecar must agree
    check_graph(path, meta, model)
    if features is None:
        features = installed_features()
        if features is None:
            raise EdgeoodError("edgeood build needs TensorRT, which is not installed here "
                               "(JetPack ships it; desktop: pip install 'edgeood[trt]'); to "
                               "print the trtexec command for another machine pass "
                               "--print-trtexec --trt-version 10.3")
    if features.major < 10:
        raise EdgeoodError(f"TensorRT {features.version} is installed; edgeood builds with "
                           "TensorRT 10 or 11 (JetPack 6.1 and later ship 10.3)")
    given = validate(meta, path).graph_precision
    if given not in PRECISIONS:
        raise EdgeoodError(f"{path} declares precision {given!r}; edgeood builds "
                           f"{', '.join(PRECISIONS)} detectors")
    fp16_flag = False
    if given == "int8":
        if half:
            raise EdgeoodError(f"{path} is an int8 (Q/DQ) detector; drop --half")
        precision = "int8"
    elif int8:
        raise EdgeoodError(f"{spell('int8')} builds from the detector's own Q/DQ nodes "
                           f"(calibrators are "
                           f"deprecated in TensorRT 10 and gone in 11) and {path.name} is "
                           f"{given}: export it with --int8 (edgeood export MODEL --int8 --data "
                           "ID_DIR), then build")
    elif given == "float16":
        precision = "float16"
    elif half:
        if not features.fp16_flag:
            raise EdgeoodError(f"TensorRT {features.version} has no FP16 builder flag (strongly "
                               f"typed networks only): export the detector with --half (its "
                               "float16 tensors set the precision), then build it")
        precision, fp16_flag = "float16", True
    else:
        precision = "float32"
    inputs = read_inputs(path, model)
    images = [i for i in inputs if len(i.shape) == 4]
    if not images:
        raise EdgeoodError(f"{path} has no 4-D image input; pass a detector written by "
                           "edgeood export")
    b0 = images[0].shape[0]
    if isinstance(b0, int):
        if batch is not None and batch != b0:
            raise EdgeoodError(f"{path.name} has a fixed batch of {b0}; pass --batch {b0} or "
                               "re-export it with a dynamic batch axis")
        if dynamic:
            raise EdgeoodError(f"{spell('dynamic')} needs a detector with a dynamic batch axis; "
                               f"{path.name} has a fixed batch of {b0}")
        max_batch = b0
    else:
        max_batch = batch or 1
    for inp in inputs:
        bad = [d for d in inp.shape[1:] if not isinstance(d, int)]
        if inp.name == IMAGE_INPUT and len(inp.shape) == 4:
            frame = [d for d in inp.shape[1:3] if not isinstance(d, int)]
            if frame and frame_size is None:
                raise EdgeoodError(f"the uint8 input {inp.name} takes camera frames of any "
                                   "height and width (the graph resizes them); a "
                                   "TensorRT engine needs the frame size: pass --frame-size "
                                   "HxW (e.g. 480x640), or a range MIN:OPT:MAX (e.g. "
                                   "240x320:480x640:1080x1920)")
            if frame_size is not None and not frame and \
                    any(tuple(s) != tuple(inp.shape[1:3]) for s in frame_size):
                raise EdgeoodError(f"{spell('frame_size')}: input {inp.name} of {path.name} takes "
                                   f"{inp.shape[1]}x{inp.shape[2]} frames only")
            bad = [d for d in inp.shape[3:] if not isinstance(d, int)]
        if bad:
            raise EdgeoodError(f"input {inp.name} of {path.name} has dynamic dimensions "
                               f"{['?' if d is None else d for d in inp.shape]}; TensorRT "
                               "engines here need a fixed image "
                               "size: re-export with --imgsz")
    if frame_size is not None and not any(i.name == IMAGE_INPUT for i in inputs):
        raise EdgeoodError(f"{spell('frame_size')} is the camera frame of a uint8 image input and "
                           f"{path.name} has none: add --input uint8 (or drop --frame-size)")
    if dev != "gpu":
        if precision == "float32":
            raise EdgeoodError("DLA runs float16 and int8 only: add --half (or export the "
                               "detector with --half / --int8)")
        if dynamic:
            raise EdgeoodError("DLA engines need fixed shapes: drop --dynamic")
        if frame_size is not None and len(set(frame_size)) > 1:
            raise EdgeoodError("DLA engines need fixed shapes: pass one --frame-size HxW")
        if not features.dla:
            raise EdgeoodError(f"TensorRT {features.version} has no DLA support: use --device "
                               "gpu")
    options = BuildOptions(precision=precision, strongly_typed=not fp16_flag,
                           fp16_flag=fp16_flag, max_batch=max_batch, dynamic=bool(dynamic),
                           workspace_gb=float(workspace) if workspace is not None else None,
                           device=dev, tf32=bool(tf32),
                           frame_size=_frame_of(inputs, frame_size))
    cache = Path(timing_cache) if timing_cache is not None else None
    if cache is not None and not cache.parent.exists():
        raise EdgeoodError(f"{spell('timing_cache')} folder {cache.parent} does not exist; "
                           f"create it "
                           "first")
    target = Path(out) if out is not None else default_engine_path(path, options,
                                                                    features.version)
    if target.suffix.lower() not in ENGINE_SUFFIXES:
        raise EdgeoodError(f"{spell('out')} {target}: an engine file ends in "
                           f"{', '.join(ENGINE_SUFFIXES)}")
    if not target.parent.exists():
        raise EdgeoodError(f"output folder {target.parent} does not exist; create it or pass "
                           "--out")
    nodes, tensors = head_of(path, LOGITS, model) if fp16_flag else (frozenset(), frozenset())
    return BuildRequest(path, meta, options, target, cache, inputs, features, nodes, tensors)


def _frame_of(inputs: list[TensorSpec], frame_size: Frame | None) -> Frame | None:
    """The frame size the engine records: the range asked for, for an `image` input."""
    if frame_size is None or not any(i.name == IMAGE_INPUT for i in inputs):
        return None
    low, opt, high = (tuple(int(v) for v in s) for s in frame_size)
    return (low[0], low[1]), (opt[0], opt[1]), (high[0], high[1])


# --- names, keys and files --------------------------------------------------------------------
def default_engine_path(detector: Path, options: BuildOptions, version: str) -> Path:
    """jetson-inference's spirit: <stem>.b<maxbatch>.trt<ver>.<gpu|dla0>.<fp32|fp16|int8>.engine"""
    name = detector.name
    stem = name[:-5] if name.lower().endswith(".onnx") else detector.stem
    return detector.with_name(f"{stem}.b{options.max_batch}.trt{version_tag(version)}."
                              f"{options.device}.{options.tag}.engine")


def timing_cache_path(path: Path, version: str) -> Path:
    """The timing cache of one TensorRT version: FILE -> FILE's stem + .trt<ver> + suffix
    (a cache from another version is of no use and may be refused)."""
    tag = f"trt{version_tag(version)}"
    if f".{tag}." in f".{path.name}.":
        return path
    return path.with_name(f"{path.stem}.{tag}{path.suffix or '.cache'}")


def detector_sha256(path: Path) -> str:
    """sha256 of the detector file (and of its external-data file, when it has one)."""
    data = Path(str(path) + ".data")
    if not data.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for p in (path, data):
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def build_key(options: BuildOptions, source_sha256: str, version: str,
              gpu: dict[str, str]) -> dict[str, Any]:
    """What decides whether an existing engine can be reused (jetson-inference keeps a
    .sha256sum next to its engines for the same purpose)."""
    return {"source_sha256": source_sha256, "tensorrt_version": version, "gpu": gpu,
            "build_options": options.as_dict()}


def existing_key(engine: Path) -> dict[str, Any] | None:
    """The build key an engine's sidecar records, or None (no engine, no sidecar, unreadable,
    or the plan no longer matches the sidecar)."""
    side = sidecar_path(engine)
    if not engine.is_file() or not side.is_file():
        return None
    try:
        section = json.loads(side.read_text()).get("engine") or {}
    except (OSError, ValueError):
        return None
    if section.get("plan_sha256") != file_sha256(engine):
        return None
    return {"source_sha256": (section.get("source") or {}).get("sha256"),
            "tensorrt_version": section.get("tensorrt_version"), "gpu": section.get("gpu"),
            "build_options": section.get("build_options")}


def engine_metadata(req: BuildRequest, key: dict[str, Any], io: list[TensorSpec],
                    plan: bytes, gpu_fallback: list[str]) -> dict[str, Any]:
    """The sidecar: the detector's metadata plus an "engine" section."""
    meta = copy.deepcopy(req.metadata)
    o = req.options
    cache = req.timing_cache_file
    meta["engine"] = {
        "format": "TensorRT serialized plan (no header)",
        "source": {"path": os.path.relpath(req.detector.resolve(), req.out.resolve().parent),
                   "name": req.detector.name, "sha256": key["source_sha256"]},
        "tensorrt_version": key["tensorrt_version"],
        "gpu": key["gpu"],
        "device": o.device,
        "dla_core": o.dla_core,
        "precision": o.precision,
        "target_precision": o.target_precision,
        "build_options": key["build_options"],
        "io": [t.to_engine_io() for t in io],
        "gpu_fallback_layers": gpu_fallback,
        "timing_cache": str(cache) if cache is not None else None,
        "plan_sha256": hashlib.sha256(plan).hexdigest(),
        "plan_bytes": len(plan),
        "built_by": f"edgeood {__version__}",
    }
    return meta


def write_engine(out: Path, plan: bytes, meta: dict[str, Any]) -> Path:
    """The plan (as TensorRT wrote it, nothing prepended) and its sidecar; neither appears
    unless both were written."""
    validate(meta, sidecar_path(out))
    with staging_dir(out.parent, out.name) as staging:
        (staging / out.name).write_bytes(plan)
        (staging / (out.name + ".json")).write_text(dumps(meta))
        os.replace(staging / out.name, out)
        os.replace(staging / (out.name + ".json"), sidecar_path(out))
    return out


# --- trtexec ----------------------------------------------------------------------------------
def trtexec_command(req: BuildRequest, onnx_file: Path | None = None) -> list[str]:
    """The same build through trtexec (TensorRT's command-line builder), reading onnx_file
    (the detector's TensorRT-ready copy, edgeood.tensorrt.rewrite) or the detector."""
    o, f = req.options, req.features
    cmd = ["trtexec", f"--onnx={onnx_file or req.detector}", f"--saveEngine={req.out}"]
    shapes = req.profile_shapes()
    for flag, i in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
        if shapes:
            cmd.append(f"{flag}=" + ",".join(f"{name}:{'x'.join(str(d) for d in dims[i])}"
                                             for name, dims in shapes.items()))
    if o.strongly_typed and not f.always_strongly_typed:
        cmd.append("--stronglyTyped")  # 11: always on, the flag is gone
    if o.fp16_flag:
        cmd.append("--fp16")
        if req.head_nodes and f.precision_constraints:
            cmd.append("--precisionConstraints=prefer")
            cmd.append("--layerPrecisions=" + ",".join(f"{n}:fp32"
                                                       for n in sorted(req.head_nodes)))
    if f.tf32_flag and not o.tf32:
        cmd.append("--noTF32")
    if o.workspace_gb:
        cmd.append(f"--memPoolSize=workspace:{int(round(o.workspace_gb * 1024))}M")
    cache = req.timing_cache_file
    if cache is not None:
        cmd.append(f"--timingCacheFile={cache}")
    if o.dla_core is not None:
        cmd += [f"--useDLACore={o.dla_core}", "--allowGPUFallback"]
    cmd.append("--skipInference")
    return cmd


def trtexec_line(req: BuildRequest, onnx_file: Path | None = None) -> str:
    return shlex.join(trtexec_command(req, onnx_file))


# --- the TensorRT part ------------------------------------------------------------------------
class ParserErrorLike(Protocol):
    """The part of TensorRT's ParserError that edgeood reads (node_name / node_operator exist
    from TensorRT 10.0; tensorrt-stubs types get_error() loosely, so this declares them)."""

    def desc(self) -> str: ...
    def node(self) -> int: ...


def format_parser_error(err: ParserErrorLike) -> str:
    """One line per ONNX parser error, naming the node: "node 'x/TopK_12' (TopK): ..."."""
    desc = " ".join(str(err.desc()).split())
    index = int(err.node())
    name = str(getattr(err, "node_name", lambda: "")() or "")
    op = str(getattr(err, "node_operator", lambda: "")() or "")
    if name or index >= 0:
        where = f"node '{name}'" if name else f"node #{index}"
        return f"{where}{f' ({op})' if op else ''}: {desc}"
    return desc


def network_flags(flag_type: Any, strongly_typed: bool, features: TrtFeatures) -> int:
    """create_network()'s flags. Never EXPLICIT_BATCH (networks are always explicit batch in
    10; the flag is gone in 11). STRONGLY_TYPED on 10 when asked; on 11 strong typing is always
    on and the flag deprecated. The bit comes from the enum's own value (1 on 10, 0 on 11)."""
    if strongly_typed and features.strongly_typed_flag and not features.always_strongly_typed:
        return 1 << int(flag_type.STRONGLY_TYPED)
    return 0


@dataclass
class BuildResult:
    path: Path
    metadata: dict[str, Any]
    reused: bool
    seconds: float = 0.0
    gpu_fallback: list[str] = field(default_factory=list)


def _layers(network: trt.INetworkDefinition) -> list[trt.ILayer]:
    return [network.get_layer(i) for i in range(network.num_layers)]


def network_io(network: trt.INetworkDefinition) -> list[TensorSpec]:
    specs = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        specs.append(engine_tensor(t.name, "input", dims(t.shape), t.dtype.name))
    for i in range(network.num_outputs):
        t = network.get_output(i)
        specs.append(engine_tensor(t.name, "output", dims(t.shape), t.dtype.name))
    return specs


def keep_head_fp32(network: trt.INetworkDefinition, nodes: frozenset[str],
                   tensors: frozenset[str]) -> int:
    """Under the FP16 flag: the scoring head's float layers compute and output float32.
    Returns how many layers were pinned."""
    import tensorrt as trt
    floats = (trt.DataType.FLOAT, trt.DataType.HALF)
    pinned = 0
    for layer in _layers(network):
        outs = [layer.get_output(i) for i in range(layer.num_outputs)]
        if layer.name not in nodes and not any(o.name in tensors for o in outs):
            continue
        if not outs or not all(o.dtype in floats for o in outs):
            continue
        layer.precision = trt.DataType.FLOAT
        for i in range(layer.num_outputs):
            layer.set_output_type(i, trt.DataType.FLOAT)
        pinned += 1
    return pinned


def build_engine(req: BuildRequest, log: Log = _logged, force: bool = False) -> BuildResult:
    """Build (or reuse) the engine of a validated request."""
    require_tensorrt("edgeood build")
    import tensorrt as trt
    features = TrtFeatures.of(trt)
    version = features.version
    gpu: GpuInfo = gpu_info()
    key = build_key(req.options, detector_sha256(req.detector), version, gpu.as_dict())
    if not force and existing_key(req.out) == key:
        meta = json.loads(sidecar_path(req.out).read_text())
        return BuildResult(req.out, meta, reused=True,
                           gpu_fallback=list(meta["engine"].get("gpu_fallback_layers", [])))
    o = req.options
    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    # the parser builds ScatterElements with a reduction (WeiPer's histogram) as a plugin
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    network = builder.create_network(
        network_flags(trt.NetworkDefinitionCreationFlag, o.strongly_typed, features))
    parser = trt.OnnxParser(network, logger)
    # from a path, so that external data (<detector>.onnx.data) is found next to it; the
    # parser reads a copy with log-sum-exp max-shifted (edgeood.tensorrt.rewrite)
    from edgeood.tensorrt.rewrite import tensorrt_ready
    with tensorrt_ready(req.detector) as source:
        parsed = parser.parse_from_file(str(source))
    if not parsed:
        lines = [format_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        for line in lines:
            log(f"  {line}")
        first = lines[0] if lines else "no details"
        raise EdgeoodError(f"TensorRT {version}'s ONNX parser rejected {req.detector.name} "
                           f"({len(lines)} error{'s' if len(lines) != 1 else ''}, listed "
                           f"above; first: {first}); check it with edgeood check "
                           f"{req.detector}")
    config = builder.create_builder_config()
    if o.workspace_gb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                     int(o.workspace_gb * (1 << 30)))
    if features.tf32_flag:
        if o.tf32:
            config.set_flag(trt.BuilderFlag.TF32)
        else:
            config.clear_flag(trt.BuilderFlag.TF32)
    if o.fp16_flag:
        if not features.fp16_flag:  # validated for another TensorRT than this one
            raise EdgeoodError(f"TensorRT {version} has no FP16 builder flag: export the "
                               "detector with --half")
        config.set_flag(trt.BuilderFlag.FP16)
        if keep_head_fp32(network, req.head_nodes, req.head_tensors) and \
                features.precision_constraints:
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    shapes = req.profile_shapes()
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, trt.Dims(low), trt.Dims(opt), trt.Dims(high))
        config.add_optimization_profile(profile)
    cache_file = req.timing_cache_file
    cache: trt.ITimingCache | None = None
    if cache_file is not None:
        data = cache_file.read_bytes() if cache_file.is_file() else b""
        cache = config.create_timing_cache(data)
        if not config.set_timing_cache(cache, False):
            log(f"warning: {cache_file} does not match TensorRT {version} on {gpu.name}; "
                "starting a new timing cache")
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
    fallback: list[str] = []
    core = o.dla_core
    if core is not None:
        if builder.num_DLA_cores <= core:
            raise EdgeoodError(f"{spell('device')} dla:{core}: this device has "
                               f"{builder.num_DLA_cores} "
                               "DLA cores")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        fallback = [layer.name for layer in _layers(network) if not config.can_run_on_DLA(layer)]
        if fallback:
            log(f"{len(fallback)} of {network.num_layers} layers fall back from DLA {core} to "
                f"the GPU: {', '.join(fallback[:20])}{' ...' if len(fallback) > 20 else ''}")
    io = network_io(network)
    built: trt.IHostMemory | None = builder.build_serialized_network(network, config)
    if built is None:
        raise EdgeoodError(f"TensorRT {version} could not build an engine from "
                           f"{req.detector.name} (its log above says why)")
    plan = bytes(built)
    if cache is not None and cache_file is not None:
        atomic_write(cache_file, bytes(cache.serialize()))
    meta = engine_metadata(req, key, io, plan, fallback)
    write_engine(req.out, plan, meta)
    return BuildResult(req.out, meta, reused=False, seconds=time.perf_counter() - t0,
                       gpu_fallback=fallback)
