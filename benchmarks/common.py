"""What the benchmarks share: single-threaded ONNX Runtime sessions that do not spin (many
sessions are timed round-robin; idle thread pools must not steal the CPU), the EfficientNet-Lite0
baseline classifier, and the command-line options."""
from __future__ import annotations

import argparse

import onnx

from edgeood.graph.head import find_head
from edgeood.graph.model import prepare, to_model
from edgeood.graph.taps import tapped
from edgeood.runtime.onnxruntime.backend import OrtBackend
from edgeood.zoo import efficientnet_lite0 as lite0

THREADS = 1
NO_SPIN = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


def session(model) -> OrtBackend:
    """One intra-op thread: on a shared 2-core machine thread-pool wake-ups dominate the noise."""
    return OrtBackend(model, threads=THREADS, config=NO_SPIN)


def lite0_graph():
    """(source path, constant-folded graph, classifier head) of EfficientNet-Lite0."""
    src = lite0.model_path()
    graph = prepare(onnx.load(str(src)))
    return src, graph, find_head(graph)


def tapped_model(graph, names) -> bytes:
    """The graph with exactly these outputs, serialized (the baseline classifier:
    [head.logits])."""
    return to_model(tapped(graph, names)).SerializeToString()


def tapped_session(graph, names) -> OrtBackend:
    """A session of tapped_model(graph, names)."""
    return session(tapped_model(graph, names))


def parser(out: str, rounds: int, per_round: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--per-round", type=int, default=per_round)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--out", default=out)
    ap.add_argument("--threads", type=int, default=THREADS,
                    help="ONNX Runtime intra-op threads (set common.THREADS from it)")
    return ap


def run_info() -> dict:
    """When and where a result was measured (every results JSON carries it as "run")."""
    import datetime
    import os
    import platform
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.platform(), "processor": platform.processor() or None,
            "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        import onnxruntime
        info["onnxruntime"] = onnxruntime.__version__
        info["load_average_1min"] = os.getloadavg()[0]
    except (ImportError, OSError):
        pass
    return info


def save_result(path, result: dict) -> None:
    """Write a benchmark's JSON with its run info, atomically (a half-written results file
    would break the docs build)."""
    import json
    from pathlib import Path

    from edgeood.artifact.files import atomic_write
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), json.dumps({**result, "run": run_info()}, indent=2))
