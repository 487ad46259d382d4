"""The TensorRT engine backend and its CUDA helpers (imported only when an engine is loaded)."""
