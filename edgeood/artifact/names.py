"""Names and limits that the exporter, calibration, runtime, inspection and checks share.

Each one lives here only: output names of a detector, the p-value reference size, TensorRT's
TopK limit and the default export opset.
"""
from __future__ import annotations

import re

LOGITS = "logits"
IS_OOD = "is_ood"
SCORE_PREFIX = "score_"
PVALUE_PREFIX = "pvalue_"
TAP_PREFIX = "tap_"
# the stream monitor folded into the graph (--stream-monitor): one stream per batch slot
MONITOR_STATE = "monitor_state"          # input [batch, 1] float32: R_{t-1} (0 at a stream start)
MONITOR_STATE_OUT = "monitor_state_out"  # output [batch, 1] float32: R_t, fed back next frame
STREAM_ALARM = "stream_alarm"            # output [batch] bool: R_t >= A

MAX_REFERENCE = 5000   # sorted ID scores kept per method for conformal p-values (and ECDFs)
TOPK_LIMIT = 3839      # TensorRT's ONNX parser: TopK needs K < 3840
DEFAULT_OPSET = 17     # opset of nn.Module exports and of upgraded old models
IMAGE_INPUT = "image"  # --input uint8: camera frames, uint8 N x H x W x C (in-graph preprocessing)


def score_name(method: str) -> str:
    return SCORE_PREFIX + method


def pvalue_name(method: str) -> str:
    return PVALUE_PREFIX + method


def tap_name(key: str) -> str:
    """The output name of a kept tap: tap_<key> with every non-alphanumeric run as '_'."""
    return TAP_PREFIX + re.sub(r"[^0-9A-Za-z_]+", "_", key).strip("_")


def method_of(output: str, prefix: str) -> str | None:
    """'score_energy' -> 'energy' for prefix SCORE_PREFIX; None when the prefix differs."""
    return output[len(prefix):] if output.startswith(prefix) else None
