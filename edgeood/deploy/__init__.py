"""Serving generators, from a detector (.onnx) or an engine's sidecar alone: a Triton model
repository (edgeood.deploy.triton; the Python-backend flavour with exact per-stream alarms:
edgeood.deploy.triton_python; its client: python -m edgeood.deploy.client) and a DeepStream
nvinfer config with a probe sample (edgeood.deploy.deepstream)."""
from edgeood.deploy.deepstream import DeepStreamFiles, deepstream_config  # noqa: F401
from edgeood.deploy.triton import TritonRepository, config_text, triton_repository  # noqa: F401
from edgeood.deploy.triton_python import triton_python_repository  # noqa: F401
