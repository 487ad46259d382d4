"""Send frames to an edgeood detector served by Triton (`edgeood deploy triton`) and print the
class, the primary score, its p-value and the OOD decision per frame.

    tritonserver --model-repository REPO
    python samples/triton_client.py MODEL IMAGES [--url localhost:8000] [--metadata FILE]

IMAGES: an image, a folder of images or a .npy/.npz (uint8 N x H x W x C). A model served on
the uint8 `image` input gets the frames as they are; one served on the float input gets them
preprocessed on this side (pass --metadata REPO/MODEL/edgeood.json). A model with the in-graph stream monitor is sequence-batched:
the frames are one stream (--sequence-id), sent one per request, and `stream_alarm` is printed.
Needs `pip install tritonclient[http]`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

TYPES = {"TYPE_UINT8": ("UINT8", np.uint8), "TYPE_FP32": ("FP32", np.float32),
         "TYPE_FP16": ("FP16", np.float16), "TYPE_BOOL": ("BOOL", np.bool_),
         "TYPE_INT64": ("INT64", np.int64), "TYPE_INT32": ("INT32", np.int32)}


def request(config: dict, batch: np.ndarray, client_module):
    """(inputs, outputs) of one request for a model config (as a dict, Triton's JSON form)."""
    (inp,) = config["input"]
    triton_type, np_type = TYPES[inp["data_type"]]
    x = np.ascontiguousarray(batch, dtype=np_type)
    if int(config.get("max_batch_size", 0)) == 0:
        x = x[0]  # no batch axis in the request
    tensor = client_module.InferInput(inp["name"], list(x.shape), triton_type)
    tensor.set_data_from_numpy(x)
    outputs = [client_module.InferRequestedOutput(o["name"]) for o in config["output"]]
    return [tensor], outputs


def load_frames(path: str, metadata: dict | None, float_input: bool) -> np.ndarray:
    from edgeood.data import Preprocess, open_source
    src = open_source(path)
    pre = Preprocess.from_dict(metadata["preprocessing"]) if metadata else None
    if float_input:
        if pre is None:
            raise SystemExit("the model takes the float input: pass --metadata edgeood.json")
        return np.concatenate([b.x for b in src.batches(pre, 32)])
    if src.files is not None:
        from edgeood.data import read_image
        channels = pre.channels if pre else 3
        return np.stack([read_image(f, channels) for f in src.files])
    return np.asarray(src.array)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("images")
    ap.add_argument("--url", default="localhost:8000")
    ap.add_argument("--metadata", help="REPO/MODEL/edgeood.json (for the float input)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sequence-id", type=int, default=1, help="the stream (monitor models)")
    args = ap.parse_args(argv)
    import tritonclient.http as client_module

    client = client_module.InferenceServerClient(args.url)
    config = client.get_model_config(args.model)
    params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
    meta = json.loads(Path(args.metadata).read_text()) if args.metadata else None
    float_input = config["input"][0]["data_type"] != "TYPE_UINT8"
    frames = load_frames(args.images, meta, float_input)
    primary = params.get("primary")
    sequence = "sequence_batching" in config
    step = 1 if sequence or int(config.get("max_batch_size", 0)) == 0 else args.batch
    for start in range(0, len(frames), step):
        batch = frames[start:start + step]
        inputs, outputs = request(config, batch, client_module)
        kw = {}
        if sequence:
            kw = {"sequence_id": args.sequence_id, "sequence_start": start == 0,
                  "sequence_end": start + step >= len(frames)}
        res = client.infer(args.model, inputs, outputs=outputs, **kw)
        logits = res.as_numpy("logits").reshape(len(batch), -1)
        score = res.as_numpy(f"score_{primary}").reshape(-1)
        pvalue = res.as_numpy(f"pvalue_{primary}")
        is_ood = res.as_numpy("is_ood")
        alarm = res.as_numpy("stream_alarm") if sequence else None
        for i in range(len(batch)):
            line = (f"frame {start + i}: class {int(logits[i].argmax())} {primary} "
                    f"{score[i]:.3f}")
            if pvalue is not None:
                line += f" p={float(pvalue.reshape(-1)[i]):.3f}"
            if is_ood is not None:
                line += f" {'OOD' if bool(is_ood.reshape(-1)[i]) else 'ok'}"
            if alarm is not None:
                line += f" stream alarm {'YES' if bool(alarm.reshape(-1)[i]) else 'no'}"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
