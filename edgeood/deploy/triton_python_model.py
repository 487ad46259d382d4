"""The model.py of `edgeood deploy triton --backend python`: Triton's Python backend runs the
detector with ONNX Runtime on the CPU and keeps one stream monitor per sequence.

Copied as REPO/<name>/1/model.py, next to triton_stream.py (the per-stream monitors), model.onnx
and stream.json (the served input, outputs and the monitor's configuration). The server's Python
needs numpy (1.x or 2.x) and onnxruntime, not edgeood.

A request is one frame of one stream (Triton's sequence batcher takes requests of batch size
1), identified by the sequence batcher's correlation id (control input CORRID); START resets
the stream's statistic to 0, END frees its state, and a stream not seen for
max_sequence_idle_microseconds is freed at the next execution (Triton itself refuses its
requests from then on until one carries START). The requests of one execution (several
streams, interleaved by the sequence batcher) run through ONNX Runtime as one batch; the
monitors are then updated request by request, in arrival order.
"""
from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np

STREAM_OUTPUTS = ("stream_alarm", "stream_statistic", "stream_frame")


def _sibling(name: str):
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"edgeood_served_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort
        import triton_python_backend_utils as pb
        self.pb = pb
        config = json.loads(args["model_config"])
        here = Path(__file__).parent
        settings = json.loads((here / "stream.json").read_text())
        params = {k: v.get("string_value") for k, v in config.get("parameters", {}).items()}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads") or 0)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(here / settings["model"]), opts,
                                            providers=["CPUExecutionProvider"])
        self.input = settings["input"]
        self.state = settings.get("state_input")
        self.outputs = list(settings["outputs"])
        self.pvalues = {m: f"pvalue_{m}" for m in settings["monitor"]["methods"]}
        self.idle_s = int(config["sequence_batching"]["max_sequence_idle_microseconds"]) / 1e6
        # freed a little after Triton's own timeout (it times the requests' arrival, this the
        # executions'), so that Triton always ends an idle sequence first
        self.streams = _sibling("triton_stream").Streams(
            settings["monitor"], self.idle_s + min(1.0, 0.1 * self.idle_s))
        self.log = pb.Logger

    def _control(self, request, name: str):
        t = self.pb.get_input_tensor_by_name(request, name)
        return None if t is None else t.as_numpy().reshape(-1)[0]

    def execute(self, requests):
        pb = self.pb
        now = time.monotonic()
        for key in self.streams.sweep(now):
            self.log.log_info(f"edgeood: stream {key} idle for more than {self.idle_s:g} s "
                              "(max_sequence_idle_microseconds), its monitor state freed")
        try:
            xs = [pb.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
            x = xs[0] if len(xs) == 1 else np.concatenate(xs)
            feed = {self.input: x}
            if self.state:
                feed[self.state] = np.zeros((len(x), 1), np.float32)
            outs = dict(zip(self.outputs, self.session.run(self.outputs, feed)))
        except Exception as e:  # every request of the batch gets the error
            return [pb.InferenceResponse(error=pb.TritonError(f"edgeood: {e}"))
                    for _ in requests]
        responses, at = [], 0
        for request, xi in zip(requests, xs):
            part = slice(at, at + len(xi))
            at += len(xi)
            key = int(self._control(request, "CORRID") or 0)
            if self._control(request, "START"):
                self.streams.start(key, now)
            frames = self.streams.live[key].frames if key in self.streams.live else 0
            stat, alarm = self.streams.update(
                key, {m: outs[name][part] for m, name in self.pvalues.items()}, now)
            if self._control(request, "END"):
                self.streams.end(key)
            tensors = [pb.Tensor(name, np.ascontiguousarray(outs[name][part]))
                       for name in self.outputs]
            tensors += [pb.Tensor("stream_alarm", alarm),
                        pb.Tensor("stream_statistic", stat),
                        pb.Tensor("stream_frame", frames + np.arange(len(xi), dtype=np.int64))]
            responses.append(pb.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self):
        self.streams.live.clear()
