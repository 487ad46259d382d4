"""The detector's metadata: a versioned JSON document stored in the ONNX model's
metadata_props["edgeood"] and in a '<file>.json' sidecar; typed reading, validation and
atomic saving of both.

DetectorMetadata types what the code reads (methods with their threshold, reference size and
calibration count; primary, tpr, precision, the engine section, ...) and keeps every key it
does not model in `extra`, so DetectorMetadata.from_dict(d).to_dict() == d, key order
included: files round-trip unchanged. Writers still build a plain dict and validate it here
before saving.

Schema version: stays 1. The typed reader changes no key or meaning of the JSON, so a bump
would only make detectors written by this version unreadable by earlier releases. Documents
pass through `migrate` on reading (a table of per-version upgrades, empty while 1 is the only
schema); a newer or unknown schema is refused in one line.

One source of truth: for an .onnx detector the embedded copy is the metadata. The sidecar is
still written beside it (readable without ONNX, e.g. by jq or a serving script), but a sidecar
that disagrees with the embedded copy is refused on reading, naming the first field that
differs. An engine has no embedded copy: its sidecar is its only metadata. Thresholds and
p-value references are also graph constants; edgeood.artifact.truth checks the metadata
against the graph (the graph decides).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgeood.artifact.files import staging_dir
from edgeood.errors import EdgeoodError

if TYPE_CHECKING:  # onnx is imported where a model is read or written: the typed metadata
    import onnx    # alone needs no onnx (the stream monitor reads it inside a Triton model)

SCHEMA_VERSION = 1
KEY = "edgeood"
MAX_PROTO_BYTES = 2_000_000_000
# schema upgrades: MIGRATIONS[v] turns a version-v document into a version-(v + 1) one
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def _bad(field_name: str, problem: str) -> EdgeoodError:
    return EdgeoodError(f"the detector metadata's {field_name} {problem}; re-export the detector "
                        "with this edgeood (or restore the file edgeood wrote)")


def _number(value: Any, field_name: str, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
        raise _bad(field_name, f"is {value!r}, not a{'n integer' if integer else ' number'}")
    return value


def _mapping(value: Any, field_name: str, optional: bool = True) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise _bad(field_name, f"is {type(value).__name__}, not an object")
    return value


def _ordered(order: tuple[str, ...], values: dict[str, Any],
             extra: dict[str, Any]) -> dict[str, Any]:
    """Keys in their original order; a modelled key absent from the original only when set."""
    out: dict[str, Any] = {}
    for k in order:
        if k in values:
            out[k] = values[k]
        elif k in extra:
            out[k] = extra[k]
    for k, v in values.items():
        if k not in out and v is not None:
            out[k] = v
    for k, v in extra.items():
        if k not in out:
            out[k] = v
    return out


@dataclass
class MethodEntry:
    """One method's entry: what calibration sets, typed; its parameters as they were."""

    threshold: float | None = None
    reference_size: int | None = None
    calibration_count: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()

    TYPED = ("threshold", "reference_size", "calibration_count")

    @classmethod
    def from_dict(cls, name: str, d: Any) -> MethodEntry:
        d = _mapping(d, f"methods.{name}", optional=False)
        return cls(_number(d.get("threshold"), f"methods.{name}.threshold"),
                   _number(d.get("reference_size"), f"methods.{name}.reference_size", True),
                   _number(d.get("calibration_count"), f"methods.{name}.calibration_count",
                           True),
                   {k: v for k, v in d.items() if k not in cls.TYPED}, tuple(d))

    def to_dict(self) -> dict[str, Any]:
        typed = {"threshold": self.threshold, "reference_size": self.reference_size,
                 "calibration_count": self.calibration_count}
        return _ordered(self.order, typed, self.params)


@dataclass
class DetectorMetadata:
    """A detector's (or an engine sidecar's) metadata, typed where the code reads it."""

    schema_version: int
    methods: dict[str, MethodEntry]
    primary: str
    edgeood_version: str | None = None
    input: dict[str, Any] | None = None
    preprocessing: dict[str, Any] | None = None
    head: dict[str, Any] | None = None
    source: dict[str, Any] | None = None
    tpr: float | None = None
    precision: str | None = None
    calibration: dict[str, Any] | None = None
    monitor: dict[str, Any] | None = None
    outputs: list[str] | None = None
    io: dict[str, Any] | None = None
    taps: dict[str, Any] | None = None
    pvalue_references: dict[str, Any] | None = None
    engine: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()

    SECTIONS = ("input", "preprocessing", "head", "source", "calibration", "monitor", "io",
                "taps", "pvalue_references", "engine")

    @classmethod
    def from_dict(cls, d: Any) -> DetectorMetadata:
        """The typed view of a (current-schema) document, validated; one line per problem."""
        d = _mapping(d, "document", optional=False)
        for key in ("schema_version", "methods", "primary"):
            if key not in d:
                raise _bad(key, "is missing")
        version = _number(d["schema_version"], "schema_version", integer=True)
        methods = _mapping(d["methods"], "methods", optional=False)
        entries = {str(m): MethodEntry.from_dict(m, e) for m, e in methods.items()}
        primary = d["primary"]
        if not isinstance(primary, str) or primary not in entries:
            raise _bad("primary", f"{primary!r} is not one of its methods "
                       f"({', '.join(entries) or 'none'})")
        outputs = d.get("outputs")
        if outputs is not None and not (isinstance(outputs, list)
                                        and all(isinstance(o, str) for o in outputs)):
            raise _bad("outputs", "is not a list of output names")
        precision = d.get("precision")
        if precision is not None and not isinstance(precision, str):
            raise _bad("precision", f"is {precision!r}, not a name")
        typed = {k: _mapping(d.get(k), k) for k in cls.SECTIONS}
        modelled = {"schema_version", "edgeood_version", "methods", "primary", "tpr",
                    "precision", "outputs", *cls.SECTIONS}
        return cls(version, entries, primary, edgeood_version=d.get("edgeood_version"),
                   tpr=_number(d.get("tpr"), "tpr"), precision=precision, outputs=outputs,
                   extra={k: v for k, v in d.items() if k not in modelled}, order=tuple(d),
                   **typed)

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "schema_version": self.schema_version, "edgeood_version": self.edgeood_version,
            "source": self.source, "input": self.input, "preprocessing": self.preprocessing,
            "head": self.head, "methods": {m: e.to_dict() for m, e in self.methods.items()},
            "primary": self.primary, "tpr": self.tpr, "precision": self.precision,
            "calibration": self.calibration, "monitor": self.monitor, "outputs": self.outputs,
            "io": self.io, "taps": self.taps, "pvalue_references": self.pvalue_references,
            "engine": self.engine}
        return _ordered(self.order, values, self.extra)

    # -- what readers ask
    @property
    def thresholds(self) -> dict[str, float]:
        """Each calibrated method's threshold (only the primary one is also in the graph)."""
        return {m: float(e.threshold) for m, e in self.methods.items()
                if e.threshold is not None}

    @property
    def reference_sizes(self) -> dict[str, int]:
        return {m: int(e.reference_size) for m, e in self.methods.items()
                if e.reference_size is not None}

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    @property
    def graph_precision(self) -> str:
        return str(self.precision or "float32")

    @property
    def engine_precision(self) -> str | None:
        return None if self.engine is None else self.engine.get("precision")

    @property
    def build_options(self) -> dict[str, Any]:
        return dict((self.engine or {}).get("build_options") or {})


def migrate(meta: dict[str, Any], where: str | Path = "the detector") -> dict[str, Any]:
    """A document of any supported schema as a current one; others refused in one line."""
    version = meta.get("schema_version")
    while isinstance(version, int) and version in MIGRATIONS:
        meta = MIGRATIONS[version](meta)
        if not (isinstance(meta.get("schema_version"), int) and meta["schema_version"] > version):
            raise EdgeoodError(f"{where}: the schema {version} upgrade did not raise the schema "
                               "version; report this as an edgeood bug")
        version = meta["schema_version"]
    if version != SCHEMA_VERSION:
        raise EdgeoodError(f"{where} has metadata schema {version}; this edgeood reads schema "
                           f"{SCHEMA_VERSION}: re-export it with this version")
    return meta


def validate(meta: dict[str, Any], where: str | Path = "the detector") -> DetectorMetadata:
    """The typed metadata of a document about to be written or just read."""
    try:
        return DetectorMetadata.from_dict(meta)
    except EdgeoodError as e:
        raise EdgeoodError(f"{where}: {e}") from None


def sidecar_path(path: str | Path) -> Path:
    return Path(str(path) + ".json")


def dumps(meta: dict[str, Any]) -> str:
    return json.dumps(meta, indent=2, sort_keys=False, allow_nan=True)


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The dotted path of the first value that differs between two JSON documents (NaN equals
    NaN), or None when they agree."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in [*a, *(k for k in b if k not in a)]:
            if k not in a or k not in b:
                return f"{where}{k}"
            diff = first_difference(a[k], b[k], f"{where}{k}.")
            if diff is not None:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return where.rstrip(".") or "(document)"
        for i, (x, y) in enumerate(zip(a, b)):
            diff = first_difference(x, y, f"{where}{i}.")
            if diff is not None:
                return diff
        return None
    same = a == b or (isinstance(a, float) and isinstance(b, float)
                      and math.isnan(a) and math.isnan(b))
    return None if same else (where.rstrip(".") or "(document)")


def embed(model: onnx.ModelProto, meta: dict[str, Any]) -> None:
    """Put the metadata into metadata_props (replacing an earlier copy)."""
    keep = [p for p in model.metadata_props if p.key != KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    model.metadata_props.add(key=KEY, value=json.dumps(meta, sort_keys=False))


def save_detector(model: onnx.ModelProto, meta: dict[str, Any], path: str | Path,
                  max_bytes: int | None = None) -> Path:
    """Save the detector and its sidecar; neither appears unless both were written. Models
    over ONNX's 2 GB protobuf limit keep their weights in '<file>.data' (external data)."""
    path = Path(path)
    if not path.parent.exists():
        raise EdgeoodError(f"output folder {path.parent} does not exist; create it or pass --out")
    validate(meta, path)
    embed(model, meta)
    limit = MAX_PROTO_BYTES if max_bytes is None else max_bytes
    external = too_big(model, limit)
    with staging_dir(path.parent, path.name) as staging:
        data_name = path.name + ".data"
        if external:
            save_external(model, staging / path.name)
        else:
            import onnx
            onnx.save_model(model, str(staging / path.name))
        (staging / (path.name + ".json")).write_text(dumps(meta))
        if external:
            os.replace(staging / data_name, path.parent / data_name)
        elif (path.parent / data_name).exists():
            os.unlink(path.parent / data_name)  # a stale weights file from an earlier save
        os.replace(staging / path.name, path)
        os.replace(staging / (path.name + ".json"), sidecar_path(path))
    return path


def save_external(model: onnx.ModelProto, path: Path) -> Path:
    """Save with every tensor over 1 kB in one '<name>.data' file beside the model."""
    import onnx
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return path


def too_big(model: onnx.ModelProto, limit: int) -> bool:
    try:
        return bool(model.ByteSize() > limit)
    except (ValueError, OverflowError):  # protobuf refuses to size messages over 2 GB
        return True


def session_source(model: onnx.ModelProto, workdir: str,
                   max_bytes: int | None = None) -> bytes | Path:
    """What ONNX Runtime can load: serialized bytes, or (over 2 GB) a file with external data."""
    limit = MAX_PROTO_BYTES if max_bytes is None else max_bytes
    if not too_big(model, limit):
        return bytes(model.SerializeToString())
    return save_external(model, Path(workdir) / "model.onnx")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a detector as a plain dict (current schema): from the ONNX file itself,
    else from its sidecar; for an engine, its sidecar. A sidecar that disagrees with the
    embedded copy is refused. DetectorMetadata.from_dict gives the typed, validated view."""
    return read_with_model(path)[0]


def read_with_model(path: str | Path) -> tuple[dict[str, Any], onnx.ModelProto | None]:
    """(read_metadata, the ONNX model it was read from, weights not loaded; None for an
    engine): one parse for callers that also check the graph."""
    path = Path(path)
    if not path.is_file():
        raise EdgeoodError(f"{path}: no such file; pass a detector written by edgeood export")
    meta = None
    model = None
    if path.suffix.lower() == ".onnx":
        try:
            import onnx
            model = onnx.load(str(path), load_external_data=False)
        except Exception:
            raise EdgeoodError(f"{path} is not a readable ONNX file; pass a detector written by "
                               "edgeood export") from None
        meta = embedded(model, path)
        if meta is not None:
            check_sidecar(path, meta)
    if meta is None and sidecar_path(path).is_file():
        try:
            meta = json.loads(sidecar_path(path).read_text())
        except ValueError:
            raise EdgeoodError(f"{sidecar_path(path)} is not valid JSON (truncated?); it is the "
                               f"only copy of {path.name}'s metadata: restore it, or rebuild / "
                               "re-export") from None
    if meta is None:
        raise EdgeoodError(f"{path} carries no edgeood metadata; make a detector from it with "
                           f"'edgeood export {path} --data ID_DIR'")
    if not isinstance(meta, dict):
        raise EdgeoodError(f"{path}: its edgeood metadata is not a JSON object; re-export it "
                           "with this edgeood")
    return migrate(meta, path), model


def read_typed(path: str | Path) -> DetectorMetadata:
    """read_metadata, typed and validated."""
    return validate(read_metadata(path), path)


def embedded(model: onnx.ModelProto, path: str | Path = "the detector") -> Any:
    """The metadata embedded in a model (parsed JSON), or None."""
    props = {p.key: p.value for p in model.metadata_props}
    if KEY not in props:
        return None
    try:
        return json.loads(props[KEY])
    except ValueError:
        raise EdgeoodError(f"{path}: its embedded edgeood metadata is not valid JSON; "
                           "re-export the detector") from None


def check_sidecar(path: Path, meta: Any) -> None:
    """Refuse an .onnx detector whose '<file>.json' sidecar says something else than the
    metadata embedded in the file (the embedded copy is the one edgeood reads)."""
    side = sidecar_path(path)
    if not side.is_file():
        return
    fix = (f"delete {side.name} (the copy embedded in {path.name} is the one edgeood reads; the "
           "sidecar is rewritten on the next calibrate) or restore it")
    try:
        copy = json.loads(side.read_text())
    except ValueError:
        raise EdgeoodError(f"{side} is not valid JSON; {fix}") from None
    diff = first_difference(meta, copy)
    if diff is not None:
        raise EdgeoodError(f"{side}: the sidecar's {diff} disagrees with the metadata embedded "
                           f"in {path.name}; {fix}")


def read_constants(path: str | Path, prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    """The detector's initializers whose names start with one of prefixes (all without), as
    NumPy arrays: the statistics methods keep in the graph (Method.graph_arrays)."""
    import onnx.numpy_helper
    model = onnx.load(str(path))
    return {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer
            if not prefixes or i.name.startswith(prefixes)}
