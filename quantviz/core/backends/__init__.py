"""Optional real-quantization backends (torchao, ONNX Runtime)."""
