"""Thin runtime: manifest + tokenizer + numpy sampler loop over ONNX Runtime / TensorRT engines. Never imports torch."""
