"""ONNX surgery: loading and preparing models, taps, head building helpers."""
