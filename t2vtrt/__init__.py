"""t2v-trt: text-to-video diffusion -> ONNX -> TensorRT / ONNX Runtime artifacts, and a thin runtime."""

__version__ = "0.1.0"
