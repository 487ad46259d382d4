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


def _version(value: bool):
    if value:
        typer.echo(f"edgeood {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version.")):
    _state["debug"] = _state["debug"] or debug


def command(fn):
    """Register a command whose errors print as one line and exit non-zero."""
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
    return app.command()(wrapper)


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
    as_json: bool = JSON, quiet: bool = QUIET,
):
    """Fold OOD scoring into MODEL and calibrate it on ID images."""
    from edgeood.api import export as run_export
    res = run_export(str(model), data=str(data) if data else None, methods=methods,
                     primary=primary, tpr=tpr, recipe=recipe, imgsz=imgsz, batch=batch, out=out,
                     keep_taps=keep_taps, params=list(param or []), opset=opset, seed=seed,
                     logits=logits, penultimate=penultimate, tune=tune,
                     ood_val=str(ood_val) if ood_val else None, progress=not (quiet or as_json))
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
    as_json: bool = JSON, quiet: bool = QUIET,
):
    """Re-fit thresholds and p-value references of DETECTOR on new ID images."""
    from edgeood.api import calibrate as run_calibrate
    res = run_calibrate(detector, str(data), tpr=tpr, batch=batch, out=out,
                        progress=not (quiet or as_json))
    if as_json:
        return _print_json({"path": str(res.path), "metadata": res.metadata})
    if not quiet:
        _table(f"{res.path}", ["method (* = primary)", "threshold", "fitted"],
               _method_rows(res.metadata))
    typer.echo(f"wrote {res.path}")


@command
def run(
    detector: Path = typer.Argument(..., help="A detector (.onnx)."),
    source: Path = typer.Argument(..., help="An image, a folder of images, or a .npy/.npz."),
    batch: int = BATCH, as_json: bool = JSON, quiet: bool = QUIET,
):
    """Classify SOURCE and flag OOD images."""
    from edgeood.data import open_source
    from edgeood.runtime import load
    det = load(detector)
    src = open_source(str(source))
    res = det.run_source(src, batch, progress=not (quiet or as_json))
    names = [str(f) for f in src.files] if src.files is not None else \
        [f"{src.name}[{i}]" for i in range(len(src))]
    rows = res.rows(names)
    n_ood = int(res.is_ood.sum()) if res.is_ood is not None else None
    if as_json:
        return _print_json({"detector": str(detector), "primary": det.primary, "images": rows,
                            "ood_count": n_ood})
    p = det.primary
    if not quiet:
        _table(f"{source} ({p})", ["image", "label", "score", "p-value", "OOD"],
               [[r["source"], r["label"], r["scores"][p], r.get("pvalues", {}).get(p, float("nan")),
                 "yes" if r.get("is_ood") else "no"] for r in rows[:200]])
    typer.echo(f"{len(rows)} images, {n_ood if n_ood is not None else 'n/a'} flagged OOD by {p}")


@command
def eval(  # noqa: A001 - the command is called eval
    detector: Path = typer.Argument(..., help="A detector (.onnx)."),
    id_data: Path = typer.Option(..., "--id", help="ID test images."),
    ood: List[Path] = typer.Option(..., "--ood", help="OOD images (repeat for several sets)."),
    batch: int = BATCH, as_json: bool = JSON, quiet: bool = QUIET,
):
    """AUROC, FPR@95TPR, AUPR-in/out per method and OOD set, and the ID false-alarm rate."""
    from edgeood.evaluate import evaluate
    report = evaluate(detector, str(id_data), {str(p): str(p) for p in ood}, batch,
                      progress=not (quiet or as_json))
    if as_json:
        return _print_json(report)
    print_report(report)


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
    as_json: bool = JSON,
):
    """Show a detector's metadata, outputs and sizes."""
    from edgeood.inspect import describe
    info = describe(detector)
    if as_json:
        return _print_json(info)
    meta = info["metadata"]
    typer.echo(f"{detector}: {info['file_bytes'] / 1e6:.2f} MB, {info['constant_bytes'] / 1e6:.2f} MB "
               f"of constants ({info['head_constant_bytes'] / 1e3:.1f} kB in scoring heads)")
    typer.echo(f"input {meta['input']['name']} {meta['input']['shape']}, preprocessing "
               f"mean {meta['preprocessing']['mean']} std {meta['preprocessing']['std']} "
               f"size {meta['preprocessing']['size']} {meta['preprocessing']['color']}")
    typer.echo("outputs: " + ", ".join(f"{o['name']}{o['shape']}" for o in info["outputs"]))
    for name, d in meta["methods"].items():
        for w in d.get("warnings", []):
            typer.echo(f"warning: {w}")
    cal = meta.get("calibration")
    typer.echo(f"calibration: {cal['count']} images (hash {cal['hash']}), tpr {meta['tpr']}"
               if cal else "calibration: none (run edgeood calibrate)")
    _table("methods", ["method (* = primary)", "threshold", "fitted"], _method_rows(meta))
    _print_details(meta)


@command
def check(
    model: Path = typer.Argument(..., help="An ONNX model or detector."),
    as_json: bool = JSON,
):
    """Check a graph against TensorRT's ONNX parser limits (exit 1 when something fails)."""
    from edgeood.graph.model import load_model
    from edgeood.graph.trt_check import check_model
    problems = check_model(load_model(model))
    if as_json:
        _print_json({"model": str(model), "ok": not problems, "problems": problems})
    else:
        for p in problems:
            typer.echo(f"- {p}")
        typer.echo(f"{model}: {'within' if not problems else 'outside'} TensorRT's parser limits")
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
    as_json: bool = JSON,
):
    """Latency percentiles and throughput with ONNX Runtime."""
    from edgeood.profile import profile as run_profile
    pcts = sorted({50.0, 90.0, 99.0, *(percentile or [])})
    res = run_profile(model, batch, warmup, iterations, imgsz, pcts)
    if as_json:
        return _print_json(res)
    lat = res["latency_ms"]
    typer.echo(f"{model} batch {batch} on {res['providers'][0]}: " +
               ", ".join(f"p{p:g} {lat[f'p{p:g}']:.2f} ms" for p in pcts) +
               f", mean {lat['mean']:.2f} ms, {res['throughput_ips']:.1f} images/s")


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


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
