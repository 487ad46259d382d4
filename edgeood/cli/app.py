"""The edgeood command line (typer): export, calibrate, run, eval, inspect, watch, check,
profile, build, demo, deploy triton|deepstream.

It only parses, calls the API and prints. Every option is a row of edgeood.config.TABLE
(`opt(COMMAND, name)`), so flags, defaults and help cannot drift from what the API checks.
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
from typer.core import TyperCommand, TyperGroup

from edgeood.version import __version__
from edgeood.config import (BUILD, CALIBRATE, CHECK, DEEPSTREAM, DEMO, EVAL, EXPORT, INSPECT,
                            PROFILE, RUN, TRITON, WATCH, cli_option)
from edgeood.errors import EdgeoodError, called_from



class _BareHelp:
    """--help takes no value: show no <bool> beside it (as for every flag of the table)."""

    def get_help_option(self, ctx):
        opt = super().get_help_option(ctx)  # type: ignore[misc]
        if opt is not None:
            opt.metavar = ""
        return opt


class _Command(_BareHelp, TyperCommand):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from edgeood.config import GENERATED_HELP
        for p in self.params:  # a help made from code (the methods list): made when shown
            if (self.name, p.name) in GENERATED_HELP:
                p.help = GENERATED_HELP[(self.name, p.name)]


class _Group(_BareHelp, TyperGroup):
    pass


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  cls=_Group,
                  help="Fold OOD scoring into a classifier's ONNX graph, calibrate it, run it.")
_state = {"debug": bool(os.environ.get("EDGEOOD_DEBUG"))}



def opt(command: str, name: str):
    """The typer option of a row of the options table (edgeood.config.TABLE)."""
    return cli_option(command, name)


def _version(value: bool):
    if value:
        typer.echo(f"edgeood {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.",
                                     metavar=""),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version.", metavar="")):
    _state["debug"] = _state["debug"] or debug


def command(fn, on: typer.Typer | None = None):
    """Register a command (on `app`, or the sub-app `on`) whose errors print as one line and
    exit non-zero."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with called_from("cli"):
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
    return (on or app).command(cls=_Command)(wrapper)


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
    from edgeood.methods.presentation import presentation
    return [[name + (" *" if name == meta["primary"] else ""), d.get("threshold", float("nan")),
             presentation(name).summary(d)] for name, d in meta["methods"].items()]


def _print_details(meta: dict) -> None:
    """The tables some methods add below the method table (e.g. a per-block statistic)."""
    from edgeood.methods.presentation import presentation
    for name, d in meta["methods"].items():
        detail = presentation(name).detail_table(d)
        if detail:
            _table(*detail)


@command
def export(
    model: Path = typer.Argument(..., help="The classifier: an .onnx file."),
    data: Optional[Path] = opt(EXPORT, "data"),
    methods: Optional[str] = opt(EXPORT, "methods"),
    primary: Optional[str] = opt(EXPORT, "primary"),
    names: Optional[Path] = opt(EXPORT, "names"),
    tpr: float = opt(EXPORT, "tpr"),
    recipe: Optional[str] = opt(EXPORT, "recipe"),
    imgsz: Optional[str] = opt(EXPORT, "imgsz"),
    batch: int = opt(EXPORT, "batch"),
    out: Optional[Path] = opt(EXPORT, "out"),
    keep_taps: bool = opt(EXPORT, "keep_taps"),
    params: Optional[List[str]] = opt(EXPORT, "params"),
    opset: int = opt(EXPORT, "opset"),
    seed: int = opt(EXPORT, "seed"),
    logits: Optional[str] = opt(EXPORT, "logits"),
    penultimate: Optional[str] = opt(EXPORT, "penultimate"),
    tune: bool = opt(EXPORT, "tune"),
    ood_val: Optional[Path] = opt(EXPORT, "ood_val"),
    arl: Optional[float] = opt(EXPORT, "arl"),
    delta: Optional[float] = opt(EXPORT, "delta"),
    stride: Optional[int] = opt(EXPORT, "stride"),
    stream_monitor: bool = opt(EXPORT, "stream_monitor"),
    monitor_methods: Optional[str] = opt(EXPORT, "monitor_methods"),
    input: str = opt(EXPORT, "input"),
    half: bool = opt(EXPORT, "half"),
    int8: bool = opt(EXPORT, "int8"),
    int8_method: str = opt(EXPORT, "int8_method"),
    mean: Optional[str] = opt(EXPORT, "mean"),
    std: Optional[str] = opt(EXPORT, "std"),
    scale: Optional[float] = opt(EXPORT, "scale"),  # not a method name: the pixel scale
    resize: Optional[bool] = opt(EXPORT, "resize"),
    strict: bool = opt(EXPORT, "strict"),
    as_json: bool = opt(EXPORT, "as_json"), quiet: bool = opt(EXPORT, "quiet"),
):
    """Fold OOD scoring into MODEL and calibrate it on ID images."""
    from edgeood.api import export as run_export
    res = run_export(str(model), caller="cli", data=str(data) if data else None,
                     methods=methods, primary=primary, tpr=tpr, recipe=recipe, imgsz=imgsz,
                     batch=batch, out=out, keep_taps=keep_taps, params=list(params or []),
                     opset=opset, seed=seed, logits=logits, penultimate=penultimate, tune=tune,
                     ood_val=str(ood_val) if ood_val else None, progress=not (quiet or as_json),
                     arl=arl, delta=delta, stride=stride, stream_monitor=stream_monitor,
                     monitor_methods=monitor_methods, input=input, half=half, int8=int8,
                     int8_method=int8_method, mean=mean, std=std, scale=scale, resize=resize,
                     strict=strict, names=names)
    if as_json:
        return _print_json({"path": str(res.path), "metadata": res.metadata})
    if not quiet:
        _table(f"{res.path}", ["method (* = primary)", "threshold", "fitted"],
               _method_rows(res.metadata))
        _print_details(res.metadata)
    _print_preprocessing(res.metadata)
    typer.echo(f"wrote {res.path}")
    if res.metadata["calibration"] is not None:
        typer.echo(calibration_line(res.metadata["calibration"]))
    if res.metadata["calibration"] is None:
        typer.echo(f"next: edgeood calibrate {res.path} --data ID_DIR")
    else:
        typer.echo(f"next: edgeood eval {res.path} --id ID_TEST_DIR --ood OOD_DIR")


def _print_preprocessing(meta: dict) -> None:
    """The export summary's preprocessing line (and where it came from) and the classifier's
    sanity check on the calibration images."""
    from edgeood.pipeline.preprocessing import classifier_line, summary
    typer.echo(summary(meta["preprocessing"]))
    check = (meta.get("calibration") or {}).get("classifier")
    if check:
        typer.echo(classifier_line(check))


@command
def calibrate(
    detector: Path = typer.Argument(..., help="A detector written by edgeood export."),
    data: Path = opt(CALIBRATE, "data"),
    tpr: Optional[float] = opt(CALIBRATE, "tpr"),
    batch: int = opt(CALIBRATE, "batch"),
    out: Optional[Path] = opt(CALIBRATE, "out"),
    arl: Optional[float] = opt(CALIBRATE, "arl"),
    delta: Optional[float] = opt(CALIBRATE, "delta"),
    stride: Optional[int] = opt(CALIBRATE, "stride"),
    stream_monitor: Optional[bool] = opt(CALIBRATE, "stream_monitor"),
    monitor_methods: Optional[str] = opt(CALIBRATE, "monitor_methods"),
    device: Optional[str] = opt(CALIBRATE, "device"),
    strict: bool = opt(CALIBRATE, "strict"),
    as_json: bool = opt(CALIBRATE, "as_json"), quiet: bool = opt(CALIBRATE, "quiet"),
):
    """Re-fit thresholds and p-value references of DETECTOR on new ID images (on the target
    itself: --device cuda, or an engine, which is then rebuilt)."""
    from edgeood.api import calibrate as run_calibrate
    res = run_calibrate(detector, str(data), caller="cli", tpr=tpr, batch=batch, out=out,
                        progress=not (quiet or as_json), arl=arl, delta=delta, stride=stride,
                        stream_monitor=stream_monitor, monitor_methods=monitor_methods,
                        device=device, strict=strict)
    if as_json:
        return _print_json({"path": str(res.path), "metadata": res.metadata})
    if not quiet:
        _table(f"{res.path}", ["method (* = primary)", "threshold", "fitted"],
               _method_rows(res.metadata))
    typer.echo(f"wrote {res.path}")
    if res.metadata.get("calibration"):
        typer.echo(calibration_line(res.metadata["calibration"]))


def calibration_line(cal: dict) -> str:
    """How many images the thresholds and references were fitted on (and how many were
    skipped as unreadable)."""
    skipped = cal.get("skipped") or 0
    return (f"calibrated on {cal.get('count')} images of {cal.get('source')}"
            + (f" ({skipped} unreadable skipped)" if skipped else ""))


RUN_ROWS = 200  # rows of `edgeood run`'s table without --all


def _label(row: dict) -> str:
    """The class index, and its name when the detector stores class names."""
    return f"{row['label']} {row['name']}" if "name" in row else str(row["label"])


@command
def run(
    detector: Path = typer.Argument(..., help="A detector (.onnx) or an engine with its sidecar."),
    source: Path = typer.Argument(..., help="An image, a folder of images, or a .npy/.npz."),
    batch: int = opt(RUN, "batch"), device: Optional[str] = opt(RUN, "device"),
    tf32: bool = opt(RUN, "tf32"), cuda_graph: bool = opt(RUN, "cuda_graph"),
    strict: bool = opt(RUN, "strict"), all_rows: bool = opt(RUN, "all_rows"),
    as_json: bool = opt(RUN, "as_json"), quiet: bool = opt(RUN, "quiet"),
):
    """Classify SOURCE and flag OOD images."""
    from edgeood.data import open_source
    from edgeood.runtime import load
    det = load(detector, device=device, tf32=tf32, cuda_graph=cuda_graph, batch=batch)
    runs_on = det.backend.runs_on
    src = open_source(str(source), strict=strict)
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
    shown = rows if all_rows else rows[:RUN_ROWS]
    if not quiet:
        _table(f"{source} ({p})", ["image", "label", "score", "p-value", "OOD"],
               [[r["source"], _label(r), r["scores"][p], r.get("pvalues", {}).get(p, float("nan")),
                 "yes" if r.get("is_ood") else "no"] for r in shown])
    typer.echo(f"{len(rows)} images, {n_ood if n_ood is not None else 'n/a'} flagged OOD by {p}"
               + (f"; {runs_on}" if runs_on else ""))
    if not quiet and len(shown) < len(rows):
        typer.echo(f"rows {len(shown)}-{len(rows) - 1} not shown (the table stops at "
                   f"{RUN_ROWS}); --all prints every row, --json writes them all")


@command
def eval(  # noqa: A001 - the command is called eval
    detector: List[Path] = typer.Argument(..., help="One or more detectors (.onnx), e.g. the "
                                          "float32, float16 and int8 exports of one model."),
    id_data: Path = opt(EVAL, "id_data"),
    ood: List[Path] = opt(EVAL, "ood"),
    plot: Optional[Path] = opt(EVAL, "plot"),
    batch: int = opt(EVAL, "batch"), device: Optional[str] = opt(EVAL, "device"),
    strict: bool = opt(EVAL, "strict"),
    as_json: bool = opt(EVAL, "as_json"), quiet: bool = opt(EVAL, "quiet"),
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
                          progress=not (quiet or as_json), strict=strict)
        if as_json:
            return _print_json(report)
        return print_report(report)
    result = evaluate_many(detector, str(id_data), oods, batch, progress=not (quiet or as_json),
                           keep_scores=plot is not None, strict=strict)
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
    against the first (only between variants of one model: the same source sha256), and each
    detector's ID false-alarm rate at its own threshold."""
    labels = result["detectors"]
    same = result.get("same_source", True)
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    drift = lambda v: "-" if v is None else f"{100 * v:+.2f}"  # noqa: E731
    cols = (["method", "OOD set"] + [f"AUROC {lab}" for lab in labels] +
            ([f"drift {lab}" for lab in labels[1:]] if same else []) +
            [f"FPR@95 {lab}" for lab in labels])
    rows = [[r["method"], r["ood"]] + [pct(v) for v in r["auroc"]] +
            ([drift(v) for v in r["auroc_drift"][1:]] if same else []) +
            [pct(v) for v in r["fpr95"]]
            for r in result["comparison"]]
    _table(f"{len(labels)} detectors (ID: {result['id']}, {result['id_count']} images)", cols,
           rows)
    if not same:
        typer.echo("the detectors come from different source models (their source sha256 "
                   "differs): side by side, without the AUROC drift of precision variants")
    methods = list(dict.fromkeys(r["method"] for r in result["comparison"]))
    fa = {r["method"]: r["false_alarm"] for r in result["comparison"]}
    tpr = result["reports"][0]["tpr"]
    _table(f"ID false-alarm rate at each detector's own threshold (target "
           f"{100 * (1 - tpr):.1f}%)", ["method"] + labels,
           [[m] + [pct(v) for v in fa[m]] for m in methods])
    _echo_below_chance([dict(p, method=f"{p['method']} ({lab})") for lab, rep in
                        zip(labels, result["reports"]) for p in rep.get("below_chance", [])])


def _echo_below_chance(pairs: list[dict]) -> None:
    from edgeood.tools.evaluate import below_chance_hint
    hint = below_chance_hint(pairs)
    if hint:
        typer.echo(hint)


def print_report(report: dict) -> None:
    rows = []
    for r in report["results"]:
        rows.append([r["method"], r["ood"]] + [f"{100 * r[k]:.2f}" for k in
                                               ("auroc", "fpr95", "aupr_in", "aupr_out")])
    _table(f"{report['detector']} (ID: {report['id']}, {report['id_count']} images)",
           ["method", "OOD set", "AUROC", "FPR@95", "AUPR-in", "AUPR-out"], rows)
    if report.get("false_alarm"):
        target = 100 * (1 - report["tpr"])
        _table(f"ID false-alarm rate at the stored thresholds (target {target:.1f}%)",
               ["method", "false alarms %"],
               [[m, f"{100 * v:.2f}"] for m, v in report["false_alarm"].items()])
    _echo_below_chance(report.get("below_chance", []))


@command
def inspect(
    detector: Path = typer.Argument(..., help="A detector (.onnx) or an engine with sidecar."),
    fps: float = opt(INSPECT, "fps"),
    as_json: bool = opt(INSPECT, "as_json"), quiet: bool = opt(INSPECT, "quiet"),
):
    """Show a detector's metadata, outputs and sizes."""
    from edgeood.tools.inspect import describe, header_lines, monitor_lines
    info = describe(detector, fps)
    if as_json:
        return _print_json(info)
    meta = info["metadata"]
    for line in header_lines(detector, info):
        typer.echo(line)
    if quiet:
        return
    _table("methods", ["method (* = primary)", "threshold", "fitted"], _method_rows(meta))
    _print_details(meta)
    for line in monitor_lines(meta, fps):
        typer.echo(line)


@command
def watch(
    detector: Path = typer.Argument(..., help="A detector (.onnx)."),
    source: str = typer.Argument(..., help="A video file or camera index (OpenCV), a folder "
                                 "of images (name order), or a .npy/.npz of frames."),
    arl: Optional[float] = opt(WATCH, "arl"),
    delta: Optional[float] = opt(WATCH, "delta"),
    stride: Optional[int] = opt(WATCH, "stride"),
    methods: Optional[str] = opt(WATCH, "methods"),
    rearm: bool = opt(WATCH, "rearm"),
    state: Optional[Path] = opt(WATCH, "state"),
    max_frames: Optional[int] = opt(WATCH, "max_frames"),
    fps: float = opt(WATCH, "fps"),
    fail_on_alarm: bool = opt(WATCH, "fail_on_alarm"),
    batch: int = opt(WATCH, "batch"),
    strict: bool = opt(WATCH, "strict"),
    as_json: bool = opt(WATCH, "as_json"), quiet: bool = opt(WATCH, "quiet"),
):
    """Stream-level shift alarm over SOURCE: a live status line (frame, statistic, alarm), or
    --json lines per frame."""
    import time
    from edgeood.config import WatchConfig
    from edgeood.runtime import load
    from edgeood.tools import watch as w
    cfg = WatchConfig.from_kwargs("cli", arl=arl, delta=delta, stride=stride, methods=methods,
                                  rearm=rearm, state=state, max_frames=max_frames, fps=fps,
                                  fail_on_alarm=fail_on_alarm, batch=batch, strict=strict)
    det = load(detector)
    monitor = w.open_monitor(det, cfg.state, cfg.arl, cfg.delta, cfg.stride, cfg.methods,
                             cfg.rearm)
    live = not (as_json or quiet) and sys.stderr.isatty()
    last, frame = 0.0, None
    try:
        for frame in w.watch(det, monitor, source, cfg.batch, cfg.max_frames,
                                 cfg.strict):
            if as_json:
                typer.echo(json.dumps(frame.to_dict()))
                continue
            if frame.rang and not quiet:
                if live:
                    sys.stderr.write("\n")
                typer.echo(w.alarm_line(frame, monitor.arl))
            if live and (time.monotonic() - last > 0.1 or frame.rang):
                last = time.monotonic()
                sys.stderr.write(w.status_line(frame, monitor.arl))
                sys.stderr.flush()
    except KeyboardInterrupt:
        pass
    if live:
        sys.stderr.write("\n")
    w.save_state(monitor, cfg.state)
    if as_json:
        typer.echo(json.dumps({"summary": w.summary(monitor)}))
    elif not quiet or monitor.alarms:
        typer.echo(w.summary_line(monitor, cfg.fps))
    if cfg.fail_on_alarm and monitor.alarms:
        raise typer.Exit(3)


@command
def check(
    model: Path = typer.Argument(..., help="An ONNX model or detector."),
    target: Optional[str] = opt(CHECK, "target"),
    as_json: bool = opt(CHECK, "as_json"), quiet: bool = opt(CHECK, "quiet"),
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
        for n in ([] if quiet else notes):
            typer.echo(f"note: {n}")
        where = f"{target}'s" if target else "TensorRT's"
        typer.echo(f"{model}: {'within' if not problems else 'outside'} {where} parser limits")
    if problems:
        raise typer.Exit(1)


@command
def profile(
    model: Path = typer.Argument(..., help="A model or detector (.onnx)."),
    batch: int = opt(PROFILE, "batch"),
    warmup: int = opt(PROFILE, "warmup"),
    iterations: int = opt(PROFILE, "iterations"),
    imgsz: Optional[int] = opt(PROFILE, "imgsz"),
    percentile: Optional[List[float]] = opt(PROFILE, "percentile"),
    device: Optional[str] = opt(PROFILE, "device"), tf32: bool = opt(PROFILE, "tf32"),
    cuda_graph: bool = opt(PROFILE, "cuda_graph"),
    layers: int = opt(PROFILE, "layers"),
    as_json: bool = opt(PROFILE, "as_json"), quiet: bool = opt(PROFILE, "quiet"),
):
    """Latency percentiles and throughput (ONNX Runtime or a TensorRT engine), with the
    PRE / NET / POST breakdown for detectors."""
    from edgeood.config import ProfileConfig
    from edgeood.tools.profile import profile as run_profile
    cfg = ProfileConfig.from_kwargs("cli", batch=batch, warmup=warmup, iterations=iterations,
                                    imgsz=imgsz, percentile=percentile, device=device,
                                    tf32=tf32, cuda_graph=cuda_graph, layers=layers)
    pcts = sorted({50.0, 90.0, 99.0, *(cfg.percentile or [])})
    res = run_profile(model, cfg.batch, cfg.warmup, cfg.iterations, cfg.imgsz, pcts,
                      device=cfg.device, tf32=cfg.tf32, cuda_graph=cfg.cuda_graph,
                      layers=cfg.layers)
    if as_json:
        return _print_json(res)
    lat = res["latency_ms"]
    typer.echo(f"{model} batch {batch} on {res['providers'][0]}: " +
               ", ".join(f"p{p:g} {lat[f'p{p:g}']:.2f} ms" for p in pcts
                         if lat[f"p{p:g}"] is not None) +
               f", mean {lat['mean']:.2f} ms, {res['throughput_ips']:.1f} images/s")
    stages = res.get("stages")
    if quiet:
        return
    if stages:
        _table(f"PRE / NET / POST per batch of {batch} ({stages['frames']} frames; "
               f"{res['runs_on']})", ["stage", *[f"p{p:g} ms" for p in pcts], "mean ms"],
               [[name.upper(), *[_or_dash(stages[key][f"p{p:g}"]) for p in pcts],
                 stages[key]["mean"]]
                for key, name in (("pre", "pre"), ("net", "net"), ("post", "post"),
                                  ("total", "total"))])
        typer.echo(f"end to end: {stages['throughput_ips']:.1f} images/s")
    if res.get("layers"):
        _table(f"slowest layers (TensorRT profiler, {res['layers_total_ms']:.3f} ms in all)",
               ["layer", "ms"], [[r["layer"], r["ms"]] for r in res["layers"]])


def _or_dash(value):
    """A table cell: "-" where a percentile had too few runs to be reported."""
    return "-" if value is None else value


@command
def build(
    detector: Path = typer.Argument(..., help="A detector (.onnx) written by edgeood export."),
    half: bool = opt(BUILD, "half"),
    int8: bool = opt(BUILD, "int8"),
    batch: Optional[int] = opt(BUILD, "batch"),
    dynamic: bool = opt(BUILD, "dynamic"),
    workspace: Optional[float] = opt(BUILD, "workspace"),
    timing_cache: Optional[Path] = opt(BUILD, "timing_cache"),
    device: str = opt(BUILD, "device"),
    tf32: bool = opt(BUILD, "tf32"),
    out: Optional[Path] = opt(BUILD, "out"),
    print_trtexec: bool = opt(BUILD, "print_trtexec"),
    trt_version: Optional[str] = opt(BUILD, "trt_version"),
    force: bool = opt(BUILD, "force"),
    input: Optional[str] = opt(BUILD, "input"),
    frame_size: Optional[str] = opt(BUILD, "frame_size"),
    as_json: bool = opt(BUILD, "as_json"), quiet: bool = opt(BUILD, "quiet"),
):
    """A TensorRT engine (plain plan that trtexec, DeepStream and Triton load) + <engine>.json."""
    from edgeood.api import build_config, validate_build
    from edgeood.config import BuildConfig
    from edgeood.tensorrt.versions import features_for
    cfg = BuildConfig.from_kwargs("cli", half=half, int8=int8, batch=batch, dynamic=dynamic,
                                  workspace=workspace, timing_cache=timing_cache, device=device,
                                  out=out, tf32=tf32, force=force, input=input,
                                  frame_size=frame_size)
    features = features_for(trt_version, print_trtexec)

    def log(line: str) -> None:
        typer.echo(line, err=True)
    if print_trtexec:
        from edgeood.tensorrt.builder import trtexec_line
        from edgeood.tensorrt.rewrite import write_tensorrt_ready
        req = validate_build(detector, cfg, features)
        if input is not None:
            log(f"wrote the {input}-entry detector {req.detector}")
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
    res = build_config(detector, cfg, features, log=log)
    if as_json:
        return _print_json({"path": str(res.path), "reused": res.reused,
                            "gpu_fallback_layers": res.gpu_fallback,
                            "engine": res.metadata["engine"]})
    eng = res.metadata["engine"]
    typer.echo(f"{'reused' if res.reused else 'wrote'} {res.path} (TensorRT "
               f"{eng['tensorrt_version']}, {eng['gpu']['name']}, {eng['device']}, "
               f"{eng['precision']}{'' if res.reused else f', {res.seconds:.0f} s'})")
    if not quiet:
        top = eng["build_options"]["max_batch"]
        typer.echo(f"next: edgeood profile {res.path} --batch {top}")


@command
def demo(
    out: Path = opt(DEMO, "out"),
    skip_lite0: bool = opt(DEMO, "skip_lite0"),
    retrain: bool = opt(DEMO, "retrain"),
    as_json: bool = opt(DEMO, "as_json"), quiet: bool = opt(DEMO, "quiet"),
):
    """The embedded benchmark: digits CNN with every method, then EfficientNet-Lite0."""
    from edgeood.zoo.demo import run_demo
    result = run_demo(out, lite0=not skip_lite0, progress=not (quiet or as_json),
                      echo=(lambda *_: None) if as_json else typer.echo,
                      show=None if (as_json or quiet) else print_report, retrain=retrain)
    if as_json:
        _print_json(result)


deploy_app = typer.Typer(no_args_is_help=True, cls=_Group,
                         help="Serving files from a detector or an "
                         "engine's sidecar: a Triton model repository, a DeepStream config.")
app.add_typer(deploy_app, name="deploy")


def deploy_command(fn):
    return command(fn, deploy_app)


@deploy_command
def triton(
    detector: Path = typer.Argument(..., help="A detector (.onnx) or an engine (.engine/.plan) "
                                    "with its .json sidecar."),
    out: Path = opt(TRITON, "out"),
    name: Optional[str] = opt(TRITON, "name"),
    batch: Optional[int] = opt(TRITON, "batch"),
    input: Optional[str] = opt(TRITON, "input"),
    kind: Optional[str] = opt(TRITON, "kind"),
    instances: int = opt(TRITON, "instances"),
    backend: str = opt(TRITON, "backend"),
    as_json: bool = opt(TRITON, "as_json"), quiet: bool = opt(TRITON, "quiet"),
):
    """A Triton model repository: REPO/NAME/config.pbtxt and 1/model.onnx or 1/model.plan."""
    from edgeood.config import TritonConfig
    from edgeood.deploy.triton import triton_repository
    cfg = TritonConfig.from_kwargs("cli", out=out, name=name, batch=batch, input=input,
                                   kind=kind, instances=instances, backend=backend)
    if cfg.backend == "python":
        from edgeood.deploy.triton_python import triton_python_repository
        res = triton_python_repository(detector, cfg.out, cfg.name, cfg.batch, cfg.input,
                                       cfg.kind, cfg.instances)
    else:
        res = triton_repository(detector, cfg.out, cfg.name, cfg.batch, cfg.input,
                                cfg.kind or "gpu", cfg.instances)
    if as_json:
        return _print_json({"repository": str(res.repository), "model_dir": str(res.model_dir),
                            "config": str(res.config), "model": str(res.model),
                            "input": res.entry})
    typer.echo(f"wrote {res.model_dir} ({res.config.name}, {res.model.relative_to(res.model_dir)})")
    if quiet:
        return
    typer.echo(f"next: tritonserver --model-repository {res.repository.resolve()}")
    typer.echo(f"then: python -m edgeood.deploy.client {res.model_dir.name} IMAGES "
               "--url localhost:8001")


@deploy_command
def deepstream(
    detector: Path = typer.Argument(..., help="A detector (.onnx) or an engine (.engine/.plan) "
                                    "with its .json sidecar."),
    out: Path = opt(DEEPSTREAM, "out"),
    batch: int = opt(DEEPSTREAM, "batch"),
    half: bool = opt(DEEPSTREAM, "half"),
    device: int = opt(DEEPSTREAM, "device"),
    name: Optional[str] = opt(DEEPSTREAM, "name"),
    as_json: bool = opt(DEEPSTREAM, "as_json"), quiet: bool = opt(DEEPSTREAM, "quiet"),
):
    """A DeepStream nvinfer config (network-type=100, output-tensor-meta=1) and a probe app."""
    from edgeood.config import DeepStreamConfig
    from edgeood.deploy.deepstream import deepstream_config
    cfg = DeepStreamConfig.from_kwargs("cli", out=out, batch=batch, half=half, device=device,
                                       name=name)
    res = deepstream_config(detector, cfg.out, cfg.batch, cfg.half, cfg.device, cfg.name)
    if as_json:
        return _print_json({"config": str(res.config), "model": str(res.model),
                            "spec": str(res.spec), "probe": str(res.probe),
                            "properties": res.properties})
    typer.echo(f"wrote {res.config}, {res.model.name}, {res.spec.name}, {res.probe.name}")
    if quiet:
        return
    typer.echo(f"next: python3 {res.probe} --config {res.config} --uri file:///path/clip.mp4 "
               "(or --csi, --usb /dev/video0)")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
