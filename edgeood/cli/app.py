"""The edgeood command line (typer): export, calibrate, run, eval, inspect, check, profile, demo.

Every command has --json (machine-readable output on stdout) and --quiet (no progress bars).
Errors are one line on stderr and a non-zero exit; `edgeood --debug ...` shows tracebacks.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgeood.version import __version__
from edgeood.errors import EdgeoodError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fold OOD scoring into a classifier's ONNX graph, calibrate it, run it.")
_state = {"debug": bool(os.environ.get("EDGEOOD_DEBUG"))}

JSON = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars or tables.")
BATCH = typer.Option(32, "--batch", help="Images per inference batch.")
DEVICE = typer.Option(None, "--device", help="ONNX Runtime provider for .onnx detectors: cpu, "
                      "cuda or tensorrt (default: CUDA where a session gets it, else CPU); "
                      "engines run on TensorRT.")
TF32 = typer.Option(False, "--tf32", help="Allow TF32 on the GPU (off: float32 stays float32).")
CUDA_GRAPH = typer.Option(False, "--cuda-graph", help="Replay one captured CUDA graph (fixed "
                          "shapes: batches padded to --batch).")
ARL = typer.Option(None, "--arl", help="Stream alarm level A: mean sampled frames between false "
                   "alarms (default 10000; calibrate: kept).")
DELTA = typer.Option(None, "--delta", help="Stream monitor: chance that the reference set breaks "
                     "the guarantee (default 0.01).")
STRIDE = typer.Option(None, "--stride", help="Stream monitor: use every k-th frame (default 1).")
MONITOR_METHODS = typer.Option(None, "--monitor-methods", help="Methods the stream monitor bets "
                               "on, comma-separated or 'all' (default: the primary).")


def _version(value: bool):
    if value:
        typer.echo(f"edgeood {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version.")):
    _state["debug"] = _state["debug"] or debug


def command(fn, on: typer.Typer | None = None):
    """Register a command (on `app`, or the sub-app `on`) whose errors print as one line and
    exit non-zero."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except EdgeoodError as exc:
            if _state["debug"]:
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)
        except Exception as exc:  # an edgeood bug or an unexpected library failure
            if _state["debug"]:
                raise
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            typer.echo(f"error: {type(exc).__name__}: {msg} (rerun with 'edgeood --debug' for "
                       "the traceback)", err=True)
            raise typer.Exit(1)
    return (on or app).command()(wrapper)


def _print_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=_jsonable))


def _jsonable(v):
    import numpy as np
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    return str(v)


def _table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=title)
    for c in columns:
        t.add_column(c, justify="left" if c in (columns[0],) else "right")
    for r in rows:
        t.add_row(*[f"{v:.6g}" if isinstance(v, float) else str(v) for v in r])
    Console(width=max(120, len(columns) * 14)).print(t)


def _method_rows(meta: dict) -> list[list]:
    from edgeood.methods.base import method_class
    return [[name + (" *" if name == meta["primary"] else ""), d.get("threshold", float("nan")),
             method_class(name).summary(d)] for name, d in meta["methods"].items()]


def _print_details(meta: dict) -> None:
    """The tables some methods add below the method table (e.g. a per-block statistic)."""
    from edgeood.methods.base import method_class
    for name, d in meta["methods"].items():
        detail = method_class(name).detail_table(d)
        if detail:
            _table(*detail)


@command
def export(
    model: Path = typer.Argument(..., help="The classifier: an .onnx file."),
    data: Optional[Path] = typer.Option(None, "--data", help="ID images: folder, .npy or .npz."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods."),
    primary: Optional[str] = typer.Option(None, "--primary", help="Method behind is_ood."),
    tpr: float = typer.Option(0.95, "--tpr", help="ID acceptance rate at the threshold."),
    recipe: Optional[str] = typer.Option(None, "--recipe", help="Recipe name or .toml path."),
    imgsz: Optional[str] = typer.Option(None, "--imgsz", help="Input size: S or H,W."),
    batch: int = BATCH,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Detector path."),
    keep_taps: bool = typer.Option(False, "--keep-taps", help="Also output tapped tensors."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="METHOD.NAME=VALUE."),
    opset: int = typer.Option(17, "--opset", help="Opset for exporting nn.Modules."),
    seed: int = typer.Option(0, "--seed", help="Seed for jigsaw images and subsampling."),
    logits: Optional[str] = typer.Option(None, "--logits", help="Logits tensor name."),
    penultimate: Optional[str] = typer.Option(None, "--penultimate", help="Feature tensor name."),
    tune: bool = typer.Option(False, "--tune",
                              help="Search the tune space of the methods that have one "
                                   "(AdaSCALE's p_max) against jigsaw images or --ood-val."),
    ood_val: Optional[Path] = typer.Option(None, "--ood-val", "--tune-ood",
                                           help="OOD validation images (tuning, GROOD/layer "
                                                "energy's OOD side)."),
    arl: Optional[float] = ARL, delta: Optional[float] = DELTA, stride: Optional[int] = STRIDE,
    stream_monitor: bool = typer.Option(False, "--stream-monitor",
                                        help="Fold the stream alarm into the graph as state "
                                             "tensors (Triton / DeepStream): input "
                                             "monitor_state, outputs monitor_state_out and "
                                             "stream_alarm."),
    monitor_methods: Optional[str] = MONITOR_METHODS,
    input_kind: str = typer.Option("float", "--input",
                                   help="float (N x C x H x W, preprocessed) or uint8: also the "
                                        "input 'image', camera frames N x H x W x C that the "
                                        "graph casts, resizes, normalises and transposes."),
    half: bool = typer.Option(False, "--half", help="float16 backbone, float32 heads (Casts "
                              "at the taps); statistics and thresholds fitted on it."),
    int8: bool = typer.Option(False, "--int8", help="int8 Q/DQ backbone calibrated on --data "
                              "(>= 300 images), float32 heads."),
    int8_method: str = typer.Option("percentile", "--int8-method",
                                    help="int8 activation ranges: percentile (99.999, "
                                         "default), minmax or entropy."),
    as_json: bool = JSON, quiet: bool = QUIET,
):
    """Fold OOD scoring into MODEL and calibrate it on ID images."""
    from edgeood.api import export as run_export
    res = run_export(str(model), data=str(data) if data else None, methods=methods,
                     primary=primary, tpr=tpr, recipe=recipe, imgsz=imgsz, batch=batch, out=out,
                     keep_taps=keep_taps, params=list(param or []), opset=opset, seed=seed,
                     logits=logits, penultimate=penultimate, tune=tune,
                     ood_val=str(ood_val) if ood_val else None, progress=not (quiet or as_json),
                     arl=arl, delta=delta, stride=stride, stream_monitor=stream_monitor,
                     monitor_methods=monitor_methods, input=input_kind, half=half, int8=int8,
                     int8_method=int8_method)
    if as_json:
        return _print_json({"path": str(res.path), "metadata": res.metadata})
    if not quiet:
        _table(f"{res.path}", ["method (* = primary)", "threshold", "fitted"],
               _method_rows(res.metadata))
        _print_details(res.metadata)
    typer.echo(f"wrote {res.path}")
    if res.metadata["calibration"] is None:
        typer.echo(f"next: edgeood calibrate {res.path} --data ID_DIR")
    else:
        typer.echo(f"next: edgeood eval {res.path} --id ID_TEST_DIR --ood OOD_DIR")


@command
def calibrate(
    detector: Path = typer.Argument(..., help="A detector written by edgeood export."),
    data: Path = typer.Option(..., "--data", help="ID images: folder, .npy or .npz."),
    tpr: Optional[float] = typer.Option(None, "--tpr", help="ID acceptance rate (default: kept)."),
    batch: int = BATCH,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write here instead of in place."),
    arl: Optional[float] = ARL, delta: Optional[float] = DELTA, stride: Optional[int] = STRIDE,
    stream_monitor: Optional[bool] = typer.Option(None, "--stream-monitor/--no-stream-monitor",
                                                  help="Fold the stream alarm into the graph "
                                                       "(default: as before)."),
    monitor_methods: Optional[str] = MONITOR_METHODS,
    device: Optional[str] = DEVICE,
    as_json: bool = JSON, quiet: bool = QUIET,
):
    """Re-fit thresholds and p-value references of DETECTOR on new ID images (on the target
    itself: --device cuda, or an engine, which is then rebuilt)."""
    from edgeood.api import calibrate as run_calibrate
    res = run_calibrate(detector, str(data), tpr=tpr, batch=batch, out=out,
                        progress=not (quiet or as_json), arl=arl, delta=delta, stride=stride,
                        stream_monitor=stream_monitor, monitor_methods=monitor_methods,
                        device=device)
    if as_json:
        return _print_json({"path": str(res.path), "metadata": res.metadata})
    if not quiet:
        _table(f"{res.path}", ["method (* = primary)", "threshold", "fitted"],
               _method_rows(res.metadata))
    typer.echo(f"wrote {res.path}")


@command
def run(
    detector: Path = typer.Argument(..., help="A detector (.onnx) or an engine with its sidecar."),
    source: Path = typer.Argument(..., help="An image, a folder of images, or a .npy/.npz."),
    batch: int = BATCH, device: Optional[str] = DEVICE, tf32: bool = TF32,
    cuda_graph: bool = CUDA_GRAPH, as_json: bool = JSON, quiet: bool = QUIET,
):
    """Classify SOURCE and flag OOD images."""
    from edgeood.data import open_source
    from edgeood.runtime import load
    det = load(detector, device=device, tf32=tf32, cuda_graph=cuda_graph, batch=batch)
    runs_on = getattr(det.backend, "runs_on", "")
    src = open_source(str(source))
    res = det.run_source(src, batch, progress=not (quiet or as_json))
    names = [str(f) for f in src.files] if src.files is not None else \
        [f"{src.name}[{i}]" for i in range(len(src))]
    rows = res.rows(names)
    n_ood = int(res.is_ood.sum()) if res.is_ood is not None else None
    if as_json:
        return _print_json({"detector": str(detector), "primary": det.primary, "images": rows,
                            "ood_count": n_ood, "runs_on": runs_on,
                            "providers": det.backend.providers})
    p = det.primary
    if not quiet:
        _table(f"{source} ({p})", ["image", "label", "score", "p-value", "OOD"],
               [[r["source"], r["label"], r["scores"][p], r.get("pvalues", {}).get(p, float("nan")),
                 "yes" if r.get("is_ood") else "no"] for r in rows[:200]])
    typer.echo(f"{len(rows)} images, {n_ood if n_ood is not None else 'n/a'} flagged OOD by {p}"
               + (f"; {runs_on}" if runs_on else ""))


@command
def eval(  # noqa: A001 - the command is called eval
    detector: List[Path] = typer.Argument(..., help="One or more detectors (.onnx), e.g. the "
                                          "float32, float16 and int8 exports of one model."),
    id_data: Path = typer.Option(..., "--id", help="ID test images."),
    ood: List[Path] = typer.Option(..., "--ood", help="OOD images (repeat for several sets)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write PNG score histograms and "
                                        "ROC curves (and a per-precision overlay) here."),
    batch: int = BATCH, device: Optional[str] = DEVICE, as_json: bool = JSON,
    quiet: bool = QUIET,
):
    """AUROC, FPR@95TPR, AUPR-in/out per method and OOD set, and the ID false-alarm rate; with
    several detectors side by side (drift against the first) at each one's own threshold."""
    from edgeood.tools.evaluate import evaluate, evaluate_many
    oods = {str(p): str(p) for p in ood}
    if device is not None:
        from edgeood.runtime import load
        detector = [load(d, device=device) for d in detector]
    if len(detector) == 1 and plot is None:
        report = evaluate(detector[0], str(id_data), oods, batch,
                          progress=not (quiet or as_json))
        if as_json:
            return _print_json(report)
        return print_report(report)
    result = evaluate_many(detector, str(id_data), oods, batch, progress=not (quiet or as_json),
                           keep_scores=plot is not None)
    written = []
    if plot is not None:
        from edgeood.tools.report import write_plots
        written = [str(p) for p in write_plots(result, plot)]
    scores = result.pop("scores", None)  # noqa: F841 - arrays are not printed
    if as_json:
        return _print_json(result if len(detector) > 1 else
                           {**result["reports"][0], "plots": written})
    if len(detector) == 1:
        print_report(result["reports"][0])
    else:
        print_comparison(result)
    for p in written:
        typer.echo(f"wrote {p}")


def print_comparison(result: dict) -> None:
    """Per method and OOD set: AUROC / FPR@95 of each detector side by side, the AUROC drift
    against the first, and each detector's ID false-alarm rate at its own threshold."""
    labels = result["detectors"]
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    drift = lambda v: "-" if v is None else f"{100 * v:+.2f}"  # noqa: E731
    cols = (["method", "OOD set"] + [f"AUROC {lab}" for lab in labels] +
            [f"drift {lab}" for lab in labels[1:]] + [f"FPR@95 {lab}" for lab in labels])
    rows = [[r["method"], r["ood"]] + [pct(v) for v in r["auroc"]] +
            [drift(v) for v in r["auroc_drift"][1:]] + [pct(v) for v in r["fpr95"]]
            for r in result["comparison"]]
    _table(f"{len(labels)} detectors (ID: {result['id']}, {result['id_count']} images)", cols,
           rows)
    methods = list(dict.fromkeys(r["method"] for r in result["comparison"]))
    fa = {r["method"]: r["false_alarm"] for r in result["comparison"]}
    tpr = result["reports"][0]["tpr"]
    _table(f"ID false-alarm rate at each detector's own threshold (target "
           f"{100 * (1 - tpr):.1f}%)", ["method"] + labels,
           [[m] + [pct(v) for v in fa[m]] for m in methods])


def print_report(report: dict) -> None:
    rows = []
    for r in report["results"]:
        rows.append([r["method"], r["ood"]] + [f"{100 * r[k]:.2f}" for k in
                                               ("auroc", "fpr95", "aupr_in", "aupr_out")])
    _table(f"{report['detector']} (ID: {report['id']}, {report['id_count']} images)",
           ["method", "OOD set", "AUROC", "FPR@95", "AUPR-in", "AUPR-out"], rows)
    if report.get("false_alarm"):
        _table(f"ID false-alarm rate at the stored thresholds (target {100 * (1 - report['tpr']):.1f}%)",
               ["method", "false alarms %"],
               [[m, f"{100 * v:.2f}"] for m, v in report["false_alarm"].items()])


@command
def inspect(
    detector: Path = typer.Argument(..., help="A detector (.onnx) or an engine with sidecar."),
    fps: float = typer.Option(30.0, "--fps", help="Frame rate for the stream monitor's mean "
                              "time between false alarms."),
    as_json: bool = JSON,
):
    """Show a detector's metadata, outputs and sizes."""
    from edgeood.tools.inspect import describe, monitor_lines
    info = describe(detector, fps)
    if as_json:
        return _print_json(info)
    meta = info["metadata"]
    eng = meta.get("engine")
    if eng:  # a TensorRT engine: what its sidecar says
        typer.echo(f"{detector}: TensorRT {eng['tensorrt_version']} plan, "
                   f"{info['file_bytes'] / 1e6:.2f} MB, {eng['gpu']['name']} (compute "
                   f"capability {eng['gpu']['compute_capability']}), {eng['device']}, "
                   f"{eng['precision']}, built from {eng['source']['name']}")
    else:
        typer.echo(f"{detector}: {info['file_bytes'] / 1e6:.2f} MB, "
                   f"{info['constant_bytes'] / 1e6:.2f} MB of constants "
                   f"({info['head_constant_bytes'] / 1e3:.1f} kB in scoring heads)")
    typer.echo(f"input {meta['input']['name']} {meta['input']['shape']}, preprocessing "
               f"mean {meta['preprocessing']['mean']} std {meta['preprocessing']['std']} "
               f"size {meta['preprocessing']['size']} {meta['preprocessing']['color']}")
    outputs = [t for t in eng["io"] if t["mode"] == "output"] if eng else info["outputs"]
    typer.echo("outputs: " + ", ".join(f"{o['name']}{o['shape']}" for o in outputs))
    target = (meta.get("calibration") or {}).get("target")
    if target:
        from edgeood.runtime.backend import describe_target
        typer.echo(f"calibration target: {describe_target(target)}")
    for name, d in meta["methods"].items():
        for w in d.get("warnings", []):
            typer.echo(f"warning: {w}")
    cal = meta.get("calibration")
    typer.echo(f"calibration: {cal['count']} images (hash {cal['hash']}), tpr {meta['tpr']}"
               if cal else "calibration: none (run edgeood calibrate)")
    _table("methods", ["method (* = primary)", "threshold", "fitted"], _method_rows(meta))
    _print_details(meta)
    for line in monitor_lines(meta, fps):
        typer.echo(line)


@command
def watch(
    detector: Path = typer.Argument(..., help="A detector (.onnx)."),
    source: str = typer.Argument(..., help="A video file or camera index (OpenCV), a folder "
                                 "of images (name order), or a .npy/.npz of frames."),
    arl: Optional[float] = typer.Option(None, "--arl", help="Alarm level A (default: the "
                                        "detector's)."),
    delta: Optional[float] = typer.Option(None, "--delta", help="Default: the detector's."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Use every k-th frame "
                                         "(default: the detector's)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Methods to bet on, "
                                          "comma-separated or 'all' (default: the detector's)."),
    rearm: bool = typer.Option(False, "--rearm", help="Restart the statistic after an alarm "
                               "instead of holding it."),
    state: Optional[Path] = typer.Option(None, "--state", help="JSON file: continue the "
                                         "stream saved there (its settings win), save it at "
                                         "the end."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after N frames."),
    fps: float = typer.Option(30.0, "--fps", help="Frame rate, for the mean time between "
                              "false alarms in the summary."),
    fail_on_alarm: bool = typer.Option(False, "--fail-on-alarm", help="Exit 3 when the alarm "
                                       "rang."),
    batch: int = BATCH, as_json: bool = JSON, quiet: bool = QUIET,
):
    """Stream-level shift alarm over SOURCE: a live status line (frame, statistic, alarm), or
    --json lines per frame."""
    import time
    from edgeood.runtime import load
    from edgeood.stats.monitor import StreamMonitor, human_duration
    from edgeood.tools.watch import watch as run_watch
    det = load(detector)
    if state is not None and state.is_file():
        try:
            saved = json.loads(state.read_text())
        except ValueError:
            raise EdgeoodError(f"{state} is not a JSON monitor state; delete it to start a "
                               "fresh stream") from None
        monitor = StreamMonitor.from_dict(saved, detector=det)
    else:
        monitor = StreamMonitor.from_detector(det, arl, delta, stride, methods, rearm)
    live = not (as_json or quiet) and sys.stderr.isatty()
    last, frame = 0.0, None
    try:
        for frame in run_watch(det, monitor, source, batch, max_frames):
            if as_json:
                typer.echo(json.dumps(frame.to_dict()))
                continue
            if frame.rang and not quiet:
                if live:
                    sys.stderr.write("\n")
                typer.echo(f"ALARM at frame {frame.frame} ({frame.source}): statistic "
                           f"{frame.statistic:.4g} >= A = {monitor.arl:g}; the stream has left "
                           "the ID distribution")
            if live and (time.monotonic() - last > 0.1 or frame.rang):
                last = time.monotonic()
                sys.stderr.write(f"\rframe {frame.frame}  statistic {frame.statistic:10.4g} / "
                                 f"{monitor.arl:g}  alarm {'YES' if frame.alarm else 'no '}  "
                                 f"frame {'OOD' if frame.is_ood else 'ok '}")
                sys.stderr.flush()
    except KeyboardInterrupt:
        pass
    if live:
        sys.stderr.write("\n")
    if state is not None:
        from edgeood.artifact.metadata import dumps
        tmp = state.with_name(state.name + ".tmp")
        tmp.write_text(dumps(monitor.to_dict()))
        os.replace(tmp, state)
    summary = {"frames": monitor.frames, "sampled": monitor.sampled, "alarm": monitor.alarm,
               "alarms": monitor.alarms, "alarm_frame": monitor.alarm_frame,
               "statistic": monitor.statistic, "max_statistic": monitor.max_statistic,
               "arl": monitor.arl, "stride": monitor.stride, "methods": monitor.methods}
    if as_json:
        typer.echo(json.dumps({"summary": summary}))
    elif not quiet or monitor.alarms:
        mtbf = human_duration(monitor.mean_time_to_false_alarm(fps))
        typer.echo(f"{monitor.frames} frames ({monitor.sampled} sampled, stride "
                   f"{monitor.stride}), {', '.join(monitor.methods)}: " +
                   (f"alarm at frame {monitor.alarm_frame}" + (f" ({monitor.alarms} alarms)"
                                                               if monitor.alarms > 1 else "")
                    if monitor.alarms else f"no alarm (largest statistic "
                    f"{monitor.max_statistic:.3g} < A = {monitor.arl:g})") +
                   f"; mean time between false alarms >= {mtbf} at {fps:g} fps")
    if fail_on_alarm and monitor.alarms:
        raise typer.Exit(3)


@command
def check(
    model: Path = typer.Argument(..., help="An ONNX model or detector."),
    target: Optional[str] = typer.Option(None, "--target", help="A TensorRT version's parser: "
                                         "trt8.6, trt10 or trt11 (opset range, Q/DQ forms, "
                                         "INT64, strongly typed rules)."),
    as_json: bool = JSON,
):
    """Check a graph against TensorRT's ONNX parser limits (exit 1 when something fails)."""
    from edgeood.graph.model import load_model
    from edgeood.tensorrt.check import check_model, check_target
    from edgeood.tensorrt.rewrite import tensorrt_model, topk_note
    graph = load_model(model)
    notes = topk_note(graph)
    graph = tensorrt_model(graph)  # what every edgeood path hands TensorRT's parser
    if target is None:
        problems = check_model(graph)
    else:
        problems, target_notes = check_target(graph, target)
        notes += target_notes
    if as_json:
        _print_json({"model": str(model), "ok": not problems, "problems": problems,
                     "notes": notes, **({"target": target} if target else {})})
    else:
        for p in problems:
            typer.echo(f"- {p}")
        for n in notes:
            typer.echo(f"note: {n}")
        where = f"{target}'s" if target else "TensorRT's"
        typer.echo(f"{model}: {'within' if not problems else 'outside'} {where} parser limits")
    if problems:
        raise typer.Exit(1)


@command
def profile(
    model: Path = typer.Argument(..., help="A model or detector (.onnx)."),
    batch: int = typer.Option(1, "--batch", help="Batch size."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs first."),
    iterations: int = typer.Option(100, "--iterations", help="Timed runs."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="Input size for dynamic models."),
    percentile: Optional[List[float]] = typer.Option(None, "--percentile",
                                                     help="Extra latency percentiles."),
    device: Optional[str] = DEVICE, tf32: bool = TF32, cuda_graph: bool = CUDA_GRAPH,
    layers: int = typer.Option(0, "--layers", help="TensorRT engines: show the N slowest "
                               "layers (TensorRT's profiler)."),
    as_json: bool = JSON,
):
    """Latency percentiles and throughput (ONNX Runtime or a TensorRT engine), with the
    PRE / NET / POST breakdown for detectors."""
    from edgeood.tools.profile import profile as run_profile
    pcts = sorted({50.0, 90.0, 99.0, *(percentile or [])})
    res = run_profile(model, batch, warmup, iterations, imgsz, pcts, device=device, tf32=tf32,
                      cuda_graph=cuda_graph, layers=layers)
    if as_json:
        return _print_json(res)
    lat = res["latency_ms"]
    typer.echo(f"{model} batch {batch} on {res['providers'][0]}: " +
               ", ".join(f"p{p:g} {lat[f'p{p:g}']:.2f} ms" for p in pcts) +
               f", mean {lat['mean']:.2f} ms, {res['throughput_ips']:.1f} images/s")
    stages = res.get("stages")
    if stages:
        _table(f"PRE / NET / POST per batch of {batch} ({stages['frames']} frames; "
               f"{res['runs_on']})", ["stage", *[f"p{p:g} ms" for p in pcts], "mean ms"],
               [[name.upper(), *[stages[key][f"p{p:g}"] for p in pcts], stages[key]["mean"]]
                for key, name in (("pre", "pre"), ("net", "net"), ("post", "post"),
                                  ("total", "total"))])
        typer.echo(f"end to end: {stages['throughput_ips']:.1f} images/s")
    if res.get("layers"):
        _table(f"slowest layers (TensorRT profiler, {res['layers_total_ms']:.3f} ms in all)",
               ["layer", "ms"], [[r["layer"], r["ms"]] for r in res["layers"]])


@command
def build(
    detector: Path = typer.Argument(..., help="A detector (.onnx) written by edgeood export."),
    half: bool = typer.Option(False, "--half", help="float16: a --half detector builds "
                              "strongly typed; on a float32 one TensorRT 10's FP16 flag "
                              "(scoring head kept float32)."),
    int8: bool = typer.Option(False, "--int8", help="int8 from the detector's Q/DQ nodes "
                              "(export with --int8 first)."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Batch of the engine (the "
                                        "maximum with --dynamic; default: the detector's, or 1)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic batch: optimization profile "
                                 "min 1, opt = max = --batch."),
    workspace: Optional[float] = typer.Option(None, "--workspace", help="Builder workspace "
                                              "limit in GB (default: TensorRT's)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache file "
                                                "(one per TensorRT version: .trt<ver> is added)."),
    device: str = typer.Option("gpu", "--device", help="gpu, or dla:N (Jetson DLA core N, GPU "
                               "fallback)."),
    tf32: bool = TF32,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Engine path (default "
                                       "<stem>.b<batch>.trt<ver>.<gpu|dla0>.<precision>.engine)."),
    print_trtexec: bool = typer.Option(False, "--print-trtexec", help="Print the same build as a "
                                       "trtexec command line, and build nothing."),
    trt_version: Optional[str] = typer.Option(None, "--trt-version", help="With --print-trtexec "
                                              "where TensorRT is not installed: the version to "
                                              "build for (e.g. 10.3 on JetPack 6)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when a matching engine "
                               "exists."),
    input_: Optional[str] = typer.Option(None, "--input", help="uint8: an engine fed camera "
                                         "frames (N x H x W x C; preprocessing in the graph, "
                                         "added if the detector lacks it); float: the "
                                         "preprocessed input only. Writes that single-entry "
                                         "detector beside DETECTOR and builds it."),
    as_json: bool = JSON,
):
    """A TensorRT engine (plain plan that trtexec, DeepStream and Triton load) + <engine>.json."""
    if input_ is not None:
        from edgeood.graph.preprocess import build_entry
        detector = build_entry(detector, input_, detector.with_name(
            f"{detector.name.removesuffix('.onnx')}.{input_}.onnx"))
        typer.echo(f"wrote the {input_}-entry detector {detector}", err=True)
    from edgeood.tensorrt.builder import (TrtFeatures, build_engine, installed_features, trtexec_line,
                                validate_build)
    features = installed_features()
    if trt_version is not None:
        if features is not None and not print_trtexec:
            raise EdgeoodError("--trt-version names the TensorRT of another machine and goes "
                               "with --print-trtexec; this build uses the installed TensorRT "
                               f"{features.version}")
        features = TrtFeatures.assumed(trt_version)
    if features is None and print_trtexec:
        raise EdgeoodError("TensorRT is not installed here: pass --trt-version (e.g. 10.3 for "
                           "JetPack 6) to print the trtexec command for that version")
    req = validate_build(detector, half, int8, batch, dynamic, workspace, timing_cache, device,
                         out, tf32, features)
    if print_trtexec:
        from edgeood.tensorrt.rewrite import write_tensorrt_ready
        source = write_tensorrt_ready(req.detector)
        if source != req.detector:
            typer.echo(f"wrote {source}: the detector with log-sum-exp max-shifted, as "
                       "TensorRT's parser needs it (give trtexec this file)", err=True)
        line = trtexec_line(req, source)
        if as_json:
            return _print_json({"trtexec": line, "engine": str(req.out),
                                "build_options": req.options.as_dict()})
        typer.echo(line)
        typer.echo("# trtexec writes the plan only; edgeood.load needs the sidecar that "
                   "edgeood build writes (DeepStream and Triton need the plan only)", err=True)
        return
    res = build_engine(req, log=lambda line: typer.echo(line, err=True), force=force)
    if as_json:
        return _print_json({"path": str(res.path), "reused": res.reused,
                            "gpu_fallback_layers": res.gpu_fallback,
                            "engine": res.metadata["engine"]})
    eng = res.metadata["engine"]
    typer.echo(f"{'reused' if res.reused else 'wrote'} {res.path} (TensorRT "
               f"{eng['tensorrt_version']}, {eng['gpu']['name']}, {eng['device']}, "
               f"{eng['precision']}{'' if res.reused else f', {res.seconds:.0f} s'})")
    typer.echo(f"next: edgeood profile {res.path} --batch {req.options.max_batch}")


@command
def demo(
    out: Path = typer.Option(Path("edgeood_demo"), "--out", "-o", help="Output folder."),
    skip_lite0: bool = typer.Option(False, "--skip-lite0", help="Only the digits benchmark."),
    retrain: bool = typer.Option(False, "--retrain", help="Train the digits CNN here (needs "
                                 "torch; numbers differ from the README's shipped model)."),
    as_json: bool = JSON, quiet: bool = QUIET,
):
    """The embedded benchmark: digits CNN with every method, then EfficientNet-Lite0."""
    from edgeood.zoo.demo import run_demo
    result = run_demo(out, lite0=not skip_lite0, progress=not (quiet or as_json),
                      echo=(lambda *_: None) if as_json else typer.echo,
                      show=None if (as_json or quiet) else print_report, retrain=retrain)
    if as_json:
        _print_json(result)


deploy_app = typer.Typer(no_args_is_help=True, help="Serving files from a detector or an "
                         "engine's sidecar: a Triton model repository, a DeepStream config.")
app.add_typer(deploy_app, name="deploy")
ENTRY = typer.Option(None, "--input", help="The input served: image (uint8 frames; the default "
                     "when the detector has it) or float.")


def deploy_command(fn):
    return command(fn, deploy_app)


@deploy_command
def triton(
    detector: Path = typer.Argument(..., help="A detector (.onnx) or an engine (.engine/.plan) "
                                    "with its .json sidecar."),
    out: Path = typer.Option(..., "--out", "-o", help="The model repository folder."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name (default: the file's)."),
    batch: Optional[int] = typer.Option(None, "--batch", help="max_batch_size (dynamic "
                                        "batching; default 8, an engine's profile maximum)."),
    entry: Optional[str] = ENTRY,
    kind: Optional[str] = typer.Option(None, "--kind", help="Instance group kind: gpu, cpu or "
                                       "auto (default gpu; cpu with --backend python)."),
    instances: int = typer.Option(1, "--instances", help="Model instances."),
    backend: str = typer.Option("onnxruntime", "--backend", help="onnxruntime (the model file; "
                                "TensorRT for engines) or python (ONNX Runtime on the CPU and "
                                "one exact float64 stream monitor per sequence id)."),
    as_json: bool = JSON,
):
    """A Triton model repository: REPO/NAME/config.pbtxt and 1/model.onnx or 1/model.plan."""
    from edgeood.deploy.triton import triton_repository
    from edgeood.deploy.triton_python import BACKENDS, triton_python_repository
    if backend not in BACKENDS:
        raise EdgeoodError(f"--backend {backend} must be one of {', '.join(BACKENDS)}")
    if backend == "python":
        res = triton_python_repository(detector, out, name, batch, entry, kind, instances)
    else:
        res = triton_repository(detector, out, name, batch, entry, kind or "gpu", instances)
    if as_json:
        return _print_json({"repository": str(res.repository), "model_dir": str(res.model_dir),
                            "config": str(res.config), "model": str(res.model),
                            "input": res.entry})
    typer.echo(f"wrote {res.model_dir} ({res.config.name}, {res.model.relative_to(res.model_dir)})")
    typer.echo(f"next: tritonserver --model-repository {res.repository.resolve()}")
    typer.echo(f"then: python -m edgeood.deploy.client {res.model_dir.name} IMAGES "
               "--url localhost:8001")


@deploy_command
def deepstream(
    detector: Path = typer.Argument(..., help="A detector (.onnx) or an engine (.engine/.plan) "
                                    "with its .json sidecar."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the config, model and probe."),
    batch: int = typer.Option(1, "--batch", help="nvinfer batch-size."),
    half: bool = typer.Option(False, "--half", help="network-mode=2: nvinfer builds FP16 (the "
                              "thresholds were calibrated in float32)."),
    device: int = typer.Option(0, "--device", help="gpu-id."),
    name: Optional[str] = typer.Option(None, "--name", help="File name stem (default: the "
                                       "detector's)."),
    as_json: bool = JSON,
):
    """A DeepStream nvinfer config (network-type=100, output-tensor-meta=1) and a probe app."""
    from edgeood.deploy.deepstream import deepstream_config
    res = deepstream_config(detector, out, batch, half, device, name)
    if as_json:
        return _print_json({"config": str(res.config), "model": str(res.model),
                            "spec": str(res.spec), "probe": str(res.probe),
                            "properties": res.properties})
    typer.echo(f"wrote {res.config}, {res.model.name}, {res.spec.name}, {res.probe.name}")
    typer.echo(f"next: python3 {res.probe} --config {res.config} --uri file:///path/clip.mp4 "
               "(or --csi, --usb /dev/video0)")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
