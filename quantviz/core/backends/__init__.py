"""Optional real-quantization backends (torchao, ONNX Runtime).

Imports: numerics, model.
"""
