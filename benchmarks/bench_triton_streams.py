"""Many camera streams through a real Triton server, `edgeood deploy triton --backend python`
(ONNX Runtime on the CPU, one exact float64 stream monitor per sequence id).

N concurrent streams (N = 1, 8, 32 by default) send digits frames over gRPC, one frame a
request, each stream switching from ID digits to far-OOD at its own known frame. Per N: served
frames/s, p50/p99 request latency, frames per model execution (how many streams' frames the
sequence batcher put in one batch), whether every stream's alarms equal its own StreamMonitor
run offline, and the ratio to raw ONNX Runtime throughput of the same model file (batches of the
server's max_batch_size, same intra-op threads), measured in the same run.
Needs the server of .ci/triton-setup.sh (.venv-triton); run from the repository root:

    PYTHONPATH=. python benchmarks/bench_triton_streams.py [--streams 1 8 32] [--frames 60]
        [--repeats 3] [--out benchmarks/results/triton_streams.json]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import edgeood
from common import save_result  # noqa: E402 (benchmarks/common.py)
from edgeood.deploy.client import Served, run_streams
from edgeood.deploy.triton_python import triton_python_repository
from edgeood.stats.monitor import StreamMonitor
from edgeood.zoo import digits
from tests.helpers.triton import TritonServer, camera_streams, find_server

MAX_BATCH = 8
THREADS = 1


def raw_ort_fps(model_path: Path, frames: np.ndarray, batch: int, seconds: float = 2.0) -> float:
    """Frames/s of ONNX Runtime on the served model file, batches of `batch` frames."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: frames[:batch] if i.name == "image" else np.zeros((batch, 1), np.float32)
            for i in sess.get_inputs()}  # the folded monitor's state: 0, as model.py feeds it
    for _ in range(20):
        sess.run(None, feed)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(None, feed)
        n += batch
    return n / (time.perf_counter() - t0)


def exact(det_path: Path, streams: list, outputs: list) -> dict:
    """Streams whose served alarms differ from StreamMonitor run offline on the stream alone."""
    det = edgeood.load(det_path, device="cpu")
    bad, max_rel = 0, 0.0
    for frames, out in zip(streams, outputs):
        p = det.backend.run(frames)
        mon = StreamMonitor.from_detector(det.metadata)
        steps = mon.update_batch({m: p[f"pvalue_{m}"] for m in mon.methods})
        bad += int(not np.array_equal(out["stream_alarm"], steps.alarm))
        diff = np.abs(out["stream_statistic"] - steps.statistic)
        rel = diff / np.maximum(steps.statistic, 1e-300)
        max_rel = max(max_rel, float(rel.max()))
    return {"streams_with_other_alarms": bad, "max_relative_statistic_difference": max_rel}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--frames", type=int, default=60, help="frames per stream")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/triton_streams.json")
    args = ap.parse_args()
    found = find_server()
    if isinstance(found, str):
        raise SystemExit(found)
    data = digits.load_data(seed=0)
    model = digits.model_path(seed=0, data=data)
    result: dict = {"model": "digits_cnn (uint8 frames, energy + msp, stream monitor on energy)",
                    "server": "tritonserver 2.51.0 (nvidia-pytriton 0.7.0), Python backend, "
                              "1 instance, KIND_CPU", "transport": "gRPC, 127.0.0.1",
                    "max_batch_size": MAX_BATCH, "intra_op_threads": THREADS,
                    "frames_per_stream": args.frames, "repeats": args.repeats,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                    "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        det = edgeood.export(model, data=data.val[0], methods=["energy", "msp"],
                             recipe="digits_cnn", out=tmp / "camera.onnx", input="uint8",
                             stream_monitor=True).path
        server = TritonServer(*found, tmp / "server")
        server.start()
        try:
            res = triton_python_repository(det, server.repository, "cams", max_batch=MAX_BATCH,
                                           threads=THREADS)
            server.load("cams")
            served = Served.grpc(server.grpc_url, "cams")
            onnx_file = res.model_dir / "1" / "model.onnx"
            first = 1
            run_streams(server.grpc_url, "cams", camera_streams(data, 4, 20)[0], first)  # warm
            first += 4
            for n in args.streams:
                streams, changes = camera_streams(data, n, args.frames)
                runs, raw = [], []
                for _ in range(args.repeats):
                    before = served.client.get_inference_statistics("cams", as_json=True)
                    run = run_streams(server.grpc_url, "cams", streams, first)
                    after = served.client.get_inference_statistics("cams", as_json=True)
                    first += n
                    ex = int(after["model_stats"][0]["execution_count"]) - \
                        int(before["model_stats"][0]["execution_count"])
                    runs.append((run, ex))
                    raw.append(raw_ort_fps(onnx_file, np.concatenate(streams), MAX_BATCH))
                run, executions = sorted(runs, key=lambda r: r[0].fps)[len(runs) // 2]
                fps = [r.fps for r, _ in runs]
                entry = {"frames": run.frames, "fps_median": statistics.median(fps),
                         "fps_all": fps,
                         "p50_ms": run.percentile(50) * 1e3, "p99_ms": run.percentile(99) * 1e3,
                         "frames_per_execution": run.frames / max(1, executions),
                         "raw_ort_fps_batch8": statistics.median(raw),
                         "ratio_to_raw_ort": statistics.median(fps) / statistics.median(raw),
                         "exactness": exact(det, streams, run.outputs),
                         "alarm_frames_after_change": [
                             int(np.argmax(o["stream_alarm"])) - c if o["stream_alarm"].any()
                             else None for o, c in zip(run.outputs, changes)]}
                result["runs"][str(n)] = entry
                print(f"{n:3d} streams: {entry['fps_median']:7.0f} frames/s, p50 "
                      f"{entry['p50_ms']:.2f} ms, p99 {entry['p99_ms']:.2f} ms, "
                      f"{entry['frames_per_execution']:.1f} frames/execution, raw ORT "
                      f"{entry['raw_ort_fps_batch8']:.0f} frames/s (ratio "
                      f"{entry['ratio_to_raw_ort']:.3f}), streams with other alarms: "
                      f"{entry['exactness']['streams_with_other_alarms']}")
        finally:
            server.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
