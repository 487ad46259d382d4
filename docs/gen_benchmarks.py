"""Benchmark tables for the docs, generated from benchmarks/results/*.json (never typed by hand).

Used by the MkDocs hook (docs/hooks.py), which replaces markers in the pages:

    <!-- generated: benchmarks -->      every table of benchmarks/results/ (docs/benchmarks.md)
    <!-- generated: cost:METHOD -->     one method's nodes, latency ratios and bytes
    <!-- generated: stream-table -->    the stream alarm's measured table
    <!-- generated: triton-streams -->  camera streams through a real Triton server
    <!-- generated: digits-table -->    the demo's digits table, copied from README.md
    <!-- generated: method-table -->    the registered methods (the method catalogue)

`python docs/gen_benchmarks.py` prints the benchmarks page's tables.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"
DIGITS_START, DIGITS_END = "<!-- digits-table:start -->", "<!-- digits-table:end -->"


@lru_cache(maxsize=None)
def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def rel(name: str) -> str:
    return f"`benchmarks/results/{name}`"


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join("" if c is None else str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def x(v, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}x"


def ms(v) -> str:
    return "" if v is None else f"{v:.1f} ms"


def mb(n) -> str:
    return "" if n is None else f"{n / 1e6:.1f} MB"


def provenance(name: str, data: dict) -> str:
    """Where and how a result was measured, as far as its JSON says."""
    parts = []
    for key in ("model", "runtime"):
        if key in data:
            parts.append(f"{key}: {data[key]}")
    threads = data.get("intra_op_threads", data.get("threads"))
    if threads is not None:
        parts.append(f"intra-op threads: {threads}")
    if "load_average_1min" in data:
        la = data["load_average_1min"]
        parts.append(f"1-min load average {la.get('start', 0):.2f} -> {la.get('end', 0):.2f}")
    return f"Recorded in {rel(name)} ({'; '.join(parts + [when_where(name, data)])})."


def when_where(name: str, data: dict) -> str:
    """The run's date and machine: its "run" entry (benchmarks/common.py save_result), else
    the date the results file was committed (git), the machine unrecorded."""
    run = data.get("run") or {}
    if run:
        return (f"run {run.get('date', '?')} on {run.get('machine', '?')}, "
                f"{run.get('cpus', '?')} CPUs")
    committed = committed_on(name)
    machine = "" if data.get("machine") else "; machine not recorded in the file"
    return (f"committed {committed}{machine}" if committed else
            "machine and date not recorded in the file")


@lru_cache(maxsize=None)
def committed_on(name: str) -> str | None:
    import subprocess
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs", "--", f"benchmarks/results/{name}"],
                             capture_output=True, text=True, cwd=REPO, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# --- per-method cost ----------------------------------------------------------------------------
FOLD_METHODS = ("energy", "msp", "maxlogit", "react", "scale", "featurenorm")


def cost_rows(method: str) -> tuple[list[list], str]:
    """Rows (what, batch 1, batch 8, batch 16) of a method's measured cost on EfficientNet-Lite0."""
    if method in FOLD_METHODS:
        name, d = "fold_lite0.json", load("fold_lite0.json")
        ratios = {b: d["batches"][b]["ratios"][method]["folded_over_classifier"]
                  for b in d["batches"]}
        rows = [["latency / classifier, p50 (min)"]
                + [f"{x(r['p50'])} ({x(r['min'])})" for r in ratios.values()],
                ["latency / host-side scoring, p50"]
                + [x(d["batches"][b]["ratios"][method]["folded_over_host"]["p50"])
                   for b in d["batches"]],
                ["nodes the head adds", d["added_nodes"][method]["added"], "", ""],
                ["bytes of constants", "a threshold and a p-value table (at most 5001 float32)",
                 "", ""]]
        return rows, name
    if method.startswith("weiper"):
        name, d = "weiper_lite0.json", load("weiper_lite0.json")
        key = f"folded:{method}:float32"
        rows = [["latency / classifier, p50 (min)"]
                + [f"{x(d['batches'][b]['over_classifier'][key])} "
                   f"({x(d['batches'][b]['over_classifier_min'][key])})" for b in d["batches"]],
                ["nodes the head adds", d["added_nodes"][key]["added"], "", ""],
                ["bytes W~ adds (float32 / float16 storage)",
                 f"{mb(d['bytes']['float32']['perturbation'])} / "
                 f"{mb(d['bytes']['float16']['perturbation'])}", "", ""],
                ["detector file (float32 / float16 storage)",
                 f"{mb(d['bytes']['float32']['detector_file'])} / "
                 f"{mb(d['bytes']['float16']['detector_file'])}", "", ""]]
        return rows, name
    if method.startswith("adascale"):
        name, d = "adascale_lite0.json", load("adascale_lite0.json")
        rows = [["latency / classifier, p50 (min)"]
                + [f"{x(d['batches'][b]['ratios'][method]['folded_over_classifier'])} "
                   f"({x(d['batches'][b]['ratios'][method]['folded_over_classifier_min'])})"
                   for b in d["batches"]],
                ["latency / PyTorch eager, p50"]
                + [x(d["batches"][b]["ratios"][method]["folded_over_torch_eager"])
                   for b in d["batches"]],
                ["nodes the head adds", d["added_nodes"][method]["added"], "", ""]]
        return rows, name
    if method in ("grood", "layer_energy"):
        name, d = "grood_lite0.json", load("grood_lite0.json")
        key = "grood:as_calibrated" if method == "grood" else "layer_energy"
        cells = {b: d["batches"][b]["over_classifier"][key] for b in d["batches"]}
        by_batch = [f"{x(cells[b]['p50'])} ({x(cells[b]['min'])})" if b in cells else "not measured"
                    for b in ("1", "8", "16")]
        rows = [["latency / classifier, p50 (min)", *by_batch]]
        if method == "grood":
            rows.append(["bank bytes as calibrated (48 rows)", mb(d["exported"]["bank_bytes"]),
                         "", ""])
            for n, b in d["bank_bytes"].items():
                r = d["batches"]["16"]["over_classifier"].get(f"grood:bank{n}")
                rows.append([f"bank of {n} rows (timing only): bytes; batch 16 p50 ratio",
                             mb(b), "", x(r["p50"]) if r else ""])
        return rows, name
    raise KeyError(method)


def cost(method: str) -> str:
    rows, name = cost_rows(method)
    return (table(["EfficientNet-Lite0, ONNX Runtime CPU", "batch 1", "batch 8", "batch 16"], rows)
            + f"\n\n{provenance(name, load(name))} Ratios are round-robin in one run on a shared "
            "machine: compare ratios, not milliseconds.")


# --- whole tables -------------------------------------------------------------------------------
def fold_table() -> str:
    d = load("fold_lite0.json")
    bs = list(d["batches"])
    header = ["method", "nodes"] + [f"batch {b}: folded / classifier" for b in bs] + \
             [f"batch {b}: folded / host" for b in bs]
    rows = []
    for m, entry in d["added_nodes"].items():
        r = [d["batches"][b]["ratios"][m] for b in bs]
        rows.append([m.replace("all_six", "all six in one detector"), entry["added"]]
                    + [f"{c['folded_over_classifier']['p50']:.3f} "
                       f"({c['folded_over_classifier']['min']:.3f})" for c in r]
                    + [f"{c['folded_over_host']['p50']:.3f}" if "folded_over_host" in c else ""
                       for c in r])
    clf = ", ".join(f"batch {b}: {ms(d['batches'][b]['latency']['classifier']['p50_ms'])}"
                    for b in bs)
    return (table(header, rows) + f"\n\np50 ratio (in brackets: ratio of the minimums). "
            f"Classifier p50 in this run: {clf}. {provenance('fold_lite0.json', d)}")


def latency_table(name: str, ratio_key: str, min_key: str | None) -> str:
    d = load(name)
    bs = list(d["batches"])
    variants = [v for v in d["batches"][bs[0]]["latency"] if v != "classifier"]
    rows = []
    for v in ["classifier", *variants]:
        row = [v]
        for b in bs:
            lat = d["batches"][b]["latency"].get(v)
            if lat is None:
                row.append("")
                continue
            cell = ms(lat.get("p50_ms"))
            if v != "classifier":
                clf = d["batches"][b]["latency"]["classifier"]
                cell += f", {x(lat['p50_ms'] / clf['p50_ms'])} ({x(lat['min_ms'] / clf['min_ms'])})"
            row.append(cell)
        nodes = d.get("added_nodes", {})
        key = v.removeprefix("folded:").removesuffix(":float32") if name != "weiper_lite0.json" else v
        row.append(nodes.get(key, nodes.get(v, {})).get("added", ""))
        rows.append(row)
    return (table(["variant"] + [f"batch {b}: p50, / classifier (min)" for b in bs]
                  + ["nodes added"], rows) + f"\n\n{provenance(name, d)}")


def grood_table() -> str:
    d = load("grood_lite0.json")
    rows = []
    for b, entry in d["batches"].items():
        for v, r in entry["over_classifier"].items():
            rows.append([b, v, x(r["p50"]), x(r["min"]), x(r.get("cpu_p50"))])
    goals = [[g, v["limit"], x(v["p50_ratio"]), "met" if v["met_by_p50"] else "not met"]
             for g, v in d.get("goals", {}).items()]
    banks = [[n, mb(b)] for n, b in d["bank_bytes"].items()]
    return "\n\n".join([
        table(["batch", "variant", "p50 / classifier", "min / classifier", "CPU time p50 / classifier"],
              rows),
        "Bank sizes (timing-only variants: synthetic prototypes and rows):\n\n"
        + table(["bank rows", "bytes (N D 4 + N 4)"], banks),
        table(["goal", "limit", "p50 ratio", ""], goals),
        provenance("grood_lite0.json", d) + (f" Note from the file: {d['note']}" if "note" in d else "")])


def precision_tables() -> str:
    d = load("precision.json")
    out = [f"Recorded in {rel('precision.json')} (runtime: {d.get('runtime', 'not recorded')}; "
           f"{when_where('precision.json', d)}). Note from the file: " + d.get("note", "")]
    for key, drift in d["drift"].items():
        precs = list(drift.get("export_seconds", {}))
        rows = [[c["method"], c["ood"], " / ".join(f"{100 * a:.2f}" for a in c["auroc"]),
                 " / ".join(f"{100 * a:+.2f}" for a in c["auroc_drift"][1:]),
                 " / ".join(f"{100 * a:.1f}" for a in c["false_alarm"])]
                for c in drift["comparison"]]
        out.append(f"**{key}** ({drift['model']}, {drift['id_count']} ID test images; "
                   f"precisions {' / '.join(precs)}):\n\n"
                   + table(["method", "OOD set", "AUROC %", "drift vs float32 (points)",
                            "ID false alarms %"], rows))
    lat = d.get("latency_lite0", {})
    rows = []
    for b, entry in lat.items():
        for prec, r in entry["ratios"].items():
            rows.append([b, prec, f"{r['detector_over_classifier']['min']:.3f} "
                                  f"({r['detector_over_classifier']['p50']:.3f})",
                         x(r.get("classifier_over_float32"))])
    if rows:
        out.append("EfficientNet-Lite0 latency (energy, msp, maxlogit, featurenorm in one detector):\n\n"
                   + table(["batch", "precision", "detector / classifier, min (p50)",
                            "classifier / float32 classifier"], rows))
    return "\n\n".join(out)


def stream_table() -> str:
    d = load("stream_monitor.json")
    rows = []
    for name, mon in d["monitors"].items():
        for a, r in mon.items():
            if a == "methods":
                continue
            rows.append([name, a, f"{100 * r['id_false_alarm_1000']:.1f}%",
                         f"{r['near']['median_delay']:.0f} / {r['near']['p90_delay']:.0f}",
                         f"{r['far']['median_delay']:.0f} / {r['far']['p90_delay']:.0f}",
                         f"{100 * r['still_false_alarm_stride1']:.1f}%",
                         f"{100 * r['still_false_alarm_stride10']:.1f}%"])
    det = d["detector"]
    return (table(["monitor", "A", "ID false alarms in 1000 frames", "near delay median / p90",
                   "far delay median / p90", "still scene (x10): stride 1", "stride 10"], rows)
            + f"\n\n{det['model']}, n = {det['reference_size']} reference scores, "
            f"{d['streams']} streams per cell, the switch to OOD after "
            f"{d['id_frames_before_switch']} ID frames (delay = OOD frames seen when the alarm "
            f"rings). Recorded in {rel('stream_monitor.json')} "
            f"({when_where('stream_monitor.json', d)}).")


def triton_table() -> str:
    """Streams through tritonserver's Python backend (benchmarks/bench_triton_streams.py):
    throughput and latency per number of concurrent streams, against raw ONNX Runtime."""
    d = load("triton_streams.json")
    rows = []
    for n, r in sorted(d["runs"].items(), key=lambda kv: int(kv[0])):
        rows.append([n, f"{r['fps_median']:.0f}", ms(r["p50_ms"]), ms(r["p99_ms"]),
                     f"{r['frames_per_execution']:.1f}", f"{r['raw_ort_fps_batch8']:.0f}",
                     f"{r['ratio_to_raw_ort']:.2f}",
                     str(r["exactness"]["streams_with_other_alarms"])])
    machine = d.get("machine", {})
    where = f"{machine.get('cpus', '?')} CPUs, {machine.get('platform', '?')}; " + \
        when_where("triton_streams.json", d)
    return (table(["streams", "frames/s", "p50", "p99", "frames per execution",
                   "raw ORT frames/s (batch 8)", "ratio to raw ORT",
                   "streams whose alarms differ from their offline monitor"], rows)
            + f"\n\n{d['model']}; {d['server']}; {d['transport']}; {d['frames_per_stream']} "
            f"frames per stream, median of {d['repeats']} runs. Recorded in "
            f"{rel('triton_streams.json')} ({where}).")


def digits_table() -> str:
    text = README.read_text(encoding="utf-8")
    return text.split(DIGITS_START, 1)[1].split(DIGITS_END, 1)[0].strip("\n")


def benchmarks() -> str:
    return "\n\n".join([
        "## Folded heads (`benchmarks/bench_fold.py`)", fold_table(),
        "## WeiPer (`benchmarks/bench_weiper.py`)",
        latency_table("weiper_lite0.json", "over_classifier", "over_classifier_min"),
        "## AdaSCALE (`benchmarks/bench_adascale.py`)",
        latency_table("adascale_lite0.json", "ratios", None),
        "## GROOD and layer energy (`benchmarks/bench_grood.py`)", grood_table(),
        "## Reduced precision (`benchmarks/bench_precision.py`)", precision_tables(),
        "## Stream alarm (`benchmarks/stream_monitor.py`)", stream_table(),
        "## Camera streams through Triton (`benchmarks/bench_triton_streams.py`)",
        triton_table()])


def registry() -> dict:
    """The registered methods: edgeood.methods.registry() where it exists, else REGISTRY."""
    import edgeood.methods as methods
    if callable(getattr(methods, "registry", None)):
        return dict(methods.registry())
    from edgeood.methods.registry import REGISTRY
    return dict(REGISTRY)


def method_table() -> str:
    """The catalogue's Markdown table where the package has one, else one built here."""
    try:
        from edgeood.methods.catalog import method_table as catalog_table
    except ImportError:
        catalog_table = None
    if catalog_table is not None:
        return catalog_table()
    rows = []
    for name, cls in sorted(registry().items()):
        defaults = ", ".join(f"`{k}={v!r}`" for k, v in dict(getattr(cls, "defaults", {})).items())
        rows.append([f"`{name}`", f"`{cls.__module__}`",
                     "yes" if getattr(cls, "needs_fit", False) else "no", defaults or "none"])
    return table(["method", "module", "fits on ID data", "hyperparameters (defaults)"], rows)


def render(markdown: str) -> str:
    """Replace every generated marker in a page."""
    import re

    def sub(match: re.Match) -> str:
        what = match.group(1)
        if what == "benchmarks":
            return benchmarks()
        if what == "stream-table":
            return stream_table()
        if what == "triton-streams":
            return triton_table()
        if what == "digits-table":
            return digits_table()
        if what == "method-table":
            return method_table()
        if what.startswith("cost:"):
            return cost(what.split(":", 1)[1])
        raise KeyError(f"unknown generated marker {what!r}")

    return re.sub(r"<!-- generated: ([\w:-]+) -->", sub, markdown)


if __name__ == "__main__":
    print(benchmarks())
