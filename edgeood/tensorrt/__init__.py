"""The TensorRT build side: the engine builder, the trtexec command, the ONNX-parser checks and
the rewrites every TensorRT path applies (the engine runtime is edgeood.runtime.tensorrt)."""
