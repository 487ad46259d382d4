"""Send frames to a detector served by Triton (`edgeood deploy triton`) and print the class, the
primary score, its p-value and the OOD decision per frame (and the stream alarm of a sequence
model).

    python -m edgeood.deploy.client MODEL IMAGES [--url 127.0.0.1:8001] [--protocol grpc|http]
                                    [--metadata REPO/MODEL/edgeood.json] [--sequence-id 1]

IMAGES: an image, a folder of images or a .npy/.npz (uint8 N x H x W x C). A model served on the
uint8 `image` input gets the frames as they are; one served on the float input gets them
preprocessed here (pass --metadata). A sequence-batched model (the in-graph stream monitor, or
--backend python) gets the frames as one stream (--sequence-id), one frame per request.
Needs tritonclient (`pip install tritonclient[grpc]`, or [http] for --protocol http).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeood.errors import EdgeoodError

TYPES = {"TYPE_UINT8": ("UINT8", np.uint8), "TYPE_FP32": ("FP32", np.float32),
         "TYPE_FP16": ("FP16", np.float16), "TYPE_BOOL": ("BOOL", np.bool_),
         "TYPE_INT64": ("INT64", np.int64), "TYPE_INT32": ("INT32", np.int32),
         "TYPE_FP64": ("FP64", np.float64)}


def protocol_module(protocol: str = "grpc"):
    """tritonclient.grpc or tritonclient.http (one-line error when not installed)."""
    if protocol not in ("grpc", "http"):
        raise EdgeoodError(f"--protocol {protocol} must be grpc or http")
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except (ImportError, RuntimeError):
        raise EdgeoodError(f"tritonclient has no {protocol} client here: pip install "
                           f"'tritonclient[{protocol}]'") from None
    return module


class Served:
    """A model on a Triton server: its config (Triton's JSON form) and how to call it."""

    def __init__(self, url: str, model: str, protocol: str = "grpc"):
        self.module = protocol_module(protocol)
        self.protocol, self.model = protocol, model
        self.client = self.module.InferenceServerClient(url)
        if protocol == "grpc":
            self.config = self.client.get_model_config(model, as_json=True)["config"]
        else:
            self.config = self.client.get_model_config(model)

    @classmethod
    def grpc(cls, url: str, model: str) -> "Served":
        return cls(url, model, "grpc")

    @property
    def max_batch(self) -> int:
        return int(self.config.get("max_batch_size", 0))

    @property
    def sequence(self) -> bool:
        return "sequence_batching" in self.config

    @property
    def parameters(self) -> dict[str, str]:
        return {k: v["string_value"] for k, v in self.config.get("parameters", {}).items()}

    @property
    def input(self) -> dict:
        (inp,) = self.config["input"]
        return inp

    def outputs(self) -> list[dict]:
        return list(self.config["output"])

    def infer(self, frames: np.ndarray, sequence_id: int | None = None, start: bool = False,
              end: bool = False) -> dict[str, np.ndarray]:
        """One request: the frames (batch first) -> every output, batch first, in the model's
        own shape (a declared reshape applied, e.g. [batch] for per-frame outputs)."""
        inp = self.input
        triton_type, np_type = TYPES[inp["data_type"]]
        x = np.ascontiguousarray(frames, dtype=np_type)
        if self.max_batch == 0:
            x = x[0]  # no batch axis in the request
        tensor = self.module.InferInput(inp["name"], list(x.shape), triton_type)
        tensor.set_data_from_numpy(x)
        wanted = [self.module.InferRequestedOutput(o["name"]) for o in self.outputs()]
        kw = {}
        if sequence_id is not None:
            kw = {"sequence_id": int(sequence_id), "sequence_start": bool(start),
                  "sequence_end": bool(end)}
        res = self.client.infer(self.model, [tensor], outputs=wanted, **kw)
        n = len(frames) if self.max_batch else None
        out = {}
        for o in self.outputs():
            a = res.as_numpy(o["name"])
            if "reshape" in o:
                shape = [int(d) for d in o["reshape"].get("shape", [])]
                a = a.reshape(([n] if n is not None else []) + shape)
            out[o["name"]] = a
        return out

    def run(self, frames: np.ndarray, batch: int = 8) -> dict[str, np.ndarray]:
        """Frames in requests of `batch` (no sequence): outputs concatenated."""
        step = 1 if self.max_batch == 0 else max(1, min(batch, self.max_batch))
        parts = [self.infer(frames[i:i + step]) for i in range(0, len(frames), step)]
        return {k: np.concatenate([p[k] for p in parts]) if self.max_batch else
                np.stack([p[k] for p in parts]) for k in parts[0]}

    def stream(self, frames, sequence_id: int, end: bool = True, start: bool = True,
               latencies: list | None = None) -> dict[str, np.ndarray]:
        """The frames as one stream, one frame a request (START on the first unless
        start=False, END on the last when end): outputs concatenated; each request's
        round trip in seconds appended to `latencies`."""
        parts = []
        for i in range(len(frames)):
            t = time.perf_counter()
            parts.append(self.infer(frames[i:i + 1], sequence_id, start and i == 0,
                                    end and i == len(frames) - 1))
            if latencies is not None:
                latencies.append(time.perf_counter() - t)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@dataclass
class StreamsRun:
    """run_streams' result: each stream's outputs, each request's round trip (s), the wall
    time from the first request to the last answer (s)."""

    outputs: list
    latencies: list
    wall_s: float

    @property
    def frames(self) -> int:
        return sum(len(lat) for lat in self.latencies)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.concatenate([np.asarray(x) for x in self.latencies]), q))


def run_streams(url: str, model: str, streams: list, first_id: int = 1, end: bool = True,
                protocol: str = "grpc", timeout_s: float = 600.0) -> StreamsRun:
    """Concurrent cameras: stream k (an array of frames) is sequence first_id + k, sent frame
    by frame (the next after the answer) from its own thread and client, all released at
    once."""
    n = len(streams)
    outputs: list = [None] * n
    latencies: list = [[] for _ in range(n)]
    spans: list = [None] * n
    errors: list = []
    gate = threading.Barrier(n)

    def work(k: int) -> None:
        try:
            served = Served(url, model, protocol)
            gate.wait(timeout=60)
            t = time.perf_counter()
            outputs[k] = served.stream(streams[k], first_id + k, end=end,
                                       latencies=latencies[k])
            spans[k] = (t, time.perf_counter())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
            gate.abort()

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(n)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + timeout_s
    for th in threads:
        th.join(timeout=max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    if any(th.is_alive() for th in threads):
        raise EdgeoodError(f"{n} streams did not finish within {timeout_s:g} s")
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return StreamsRun(outputs, latencies, wall)


def load_frames(path: str, metadata: dict | None, float_input: bool) -> np.ndarray:
    from edgeood.data import Preprocess, open_source
    src = open_source(path)
    pre = Preprocess.from_dict(metadata["preprocessing"]) if metadata else None
    if float_input:
        if pre is None:
            raise EdgeoodError("the model takes the float input: pass --metadata "
                               "REPO/MODEL/edgeood.json")
        return np.concatenate([b.x for b in src.batches(pre, 32)])
    if src.files is not None:
        from edgeood.data import read_image
        channels = pre.channels if pre else 3
        return np.stack([read_image(f, channels) for f in src.files])
    return np.asarray(src.array)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeood.deploy.client",
                                 description=(__doc__ or "").splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("images")
    ap.add_argument("--url", default="127.0.0.1:8001", help="gRPC 8001, HTTP 8000")
    ap.add_argument("--protocol", default="grpc", choices=["grpc", "http"])
    ap.add_argument("--metadata", help="REPO/MODEL/edgeood.json (for the float input)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sequence-id", type=int, default=1, help="the stream (sequence models)")
    args = ap.parse_args(argv)
    try:
        served = Served(args.url, args.model, args.protocol)
        meta = json.loads(Path(args.metadata).read_text()) if args.metadata else None
        frames = load_frames(args.images, meta, served.input["data_type"] != "TYPE_UINT8")
        out = (served.stream(frames, args.sequence_id) if served.sequence
               else served.run(frames, args.batch))
    except EdgeoodError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    primary = served.parameters.get("primary")
    logits = out["logits"].reshape(len(frames), -1)
    for i in range(len(frames)):
        line = f"frame {i}: class {int(logits[i].argmax())}"
        if f"score_{primary}" in out:
            line += f" {primary} {float(out[f'score_{primary}'].reshape(-1)[i]):.3f}"
        if f"pvalue_{primary}" in out:
            line += f" p={float(out[f'pvalue_{primary}'].reshape(-1)[i]):.3f}"
        if "is_ood" in out:
            line += f" {'OOD' if bool(out['is_ood'].reshape(-1)[i]) else 'ok'}"
        if "stream_alarm" in out:
            line += f" stream alarm {'YES' if bool(out['stream_alarm'].reshape(-1)[i]) else 'no'}"
        if "stream_statistic" in out:
            line += f" R={float(out['stream_statistic'].reshape(-1)[i]):.3g}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
