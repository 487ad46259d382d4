"""A stand-in for Triton's onnxruntime backend (no package ships libtriton_onnxruntime.so): copied
as <backend dir>/onnxruntime/model.py, Triton core runs it with the Python backend for every
`platform: "onnxruntime_onnx"` model. Like the real backend it refuses a config whose inputs,
outputs or sequence states disagree with the ONNX model (names, data types, dims after reshape,
the batch dimension), then runs the model file with ONNX Runtime on the CPU. Runs in the
server's own Python (numpy, onnxruntime; not edgeood). Not a test module."""
import json
from pathlib import Path

import numpy as np

TYPES = {"tensor(float)": "TYPE_FP32", "tensor(uint8)": "TYPE_UINT8", "tensor(bool)": "TYPE_BOOL",
         "tensor(int64)": "TYPE_INT64", "tensor(int32)": "TYPE_INT32",
         "tensor(float16)": "TYPE_FP16", "tensor(double)": "TYPE_FP64", "tensor(int8)": "TYPE_INT8"}


def _onnx_dims(shape):
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape]


def _matches(config_dims, model_dims):
    return len(config_dims) == len(model_dims) and all(
        c == m or m == -1 or c == -1 for c, m in zip(config_dims, model_dims))


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort
        config = json.loads(args["model_config"])
        name = config["name"]
        folder = Path(args["model_repository"]) / args["model_version"]
        path = folder / (config.get("default_model_filename") or "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.batched = int(config.get("max_batch_size", 0)) > 0
        model_in = {i.name: i for i in self.session.get_inputs()}
        model_out = {o.name: o for o in self.session.get_outputs()}
        states = (config.get("sequence_batching") or {}).get("state") or []
        self.states = {s["input_name"]: s for s in states}

        def check(kind, entry, model):
            if entry["name"] not in model:
                raise ValueError(f"unexpected inference {kind} '{entry['name']}', allowed "
                                 f"{kind}s are: {', '.join(sorted(model))}")
            tensor = model[entry["name"]]
            want = TYPES.get(tensor.type, tensor.type)
            if entry["data_type"] != want:
                raise ValueError(f"unexpected datatype {entry['data_type']} for inference {kind} "
                                 f"'{entry['name']}', expecting {want}")
            dims = [int(d) for d in (entry.get("reshape") or {}).get("shape", entry["dims"])] \
                if "reshape" in entry else [int(d) for d in entry["dims"]]
            full = ([-1] if self.batched else []) + dims
            got = _onnx_dims(tensor.shape)
            if self.batched and got and got[0] != -1:
                raise ValueError(f"model '{name}', tensor '{entry['name']}': for the model to "
                                 "support batching the shape should have at least 1 dimension "
                                 "and the first dimension must be -1; but shape expected by "
                                 f"the model is {got}")
            if not _matches(full, got):
                raise ValueError(f"model '{name}', tensor '{entry['name']}': the model expects "
                                 f"{len(got)} dimensions (shape {got}) but the model "
                                 f"configuration specifies {len(full)} dimensions (shape {full})")

        for entry in config.get("input", []):
            check("input", entry, model_in)
        for entry in config.get("output", []):
            check("output", entry, model_out)
        for s in states:
            for kind, key, model in (("input", "input_name", model_in),
                                     ("output", "output_name", model_out)):
                if s[key] not in model:
                    raise ValueError(f"state {kind} '{s[key]}' is not a model {kind}; the model "
                                     f"has {', '.join(sorted(model))}")
                check(kind, {"name": s[key], "data_type": s["data_type"], "dims": s["dims"]}, model)
        declared = {e["name"] for e in config.get("input", [])} | set(self.states)
        missing = sorted(set(model_in) - declared)
        if missing:
            raise ValueError(f"unable to load model '{name}', configuration expects "
                             f"{len(declared)} inputs, model provides {len(model_in)} "
                             f"(not in the config: {', '.join(missing)})")
        self.inputs = [e["name"] for e in config.get("input", [])]
        self.outputs = [e["name"] for e in config.get("output", [])]

    def execute(self, requests):
        import triton_python_backend_utils as pb
        try:
            feeds = []
            for r in requests:
                feed = {n: pb.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
                for st, s in self.states.items():  # no implicit state in the Python backend:
                    t = pb.get_input_tensor_by_name(r, st)  # the initial state when not given
                    n = len(next(iter(feed.values())))
                    feed[st] = t.as_numpy() if t is not None else np.zeros(
                        [n] + [max(1, int(d)) for d in s["dims"]], np.float32)
                feeds.append(feed)
            if self.batched and len(feeds) > 1:
                joined = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
                sizes = [len(next(iter(f.values()))) for f in feeds]
                outs = self.session.run(self.outputs, joined)
                parts, at = [], 0
                for n in sizes:
                    parts.append([o[at:at + n] for o in outs])
                    at += n
            else:
                parts = [self.session.run(self.outputs, f) for f in feeds]
        except Exception as e:
            return [pb.InferenceResponse(error=pb.TritonError(str(e))) for _ in requests]
        return [pb.InferenceResponse(output_tensors=[
            pb.Tensor(n, np.ascontiguousarray(o)) for n, o in zip(self.outputs, outs)])
            for outs in parts]
