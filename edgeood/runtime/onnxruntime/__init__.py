"""The ONNX Runtime backend: sessions, execution providers, graph fixes for a fixed batch."""
