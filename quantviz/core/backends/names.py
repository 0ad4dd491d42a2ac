"""The deployment backends' names (torch-free, so the CLI's parser can list them without importing torch)."""
BACKENDS = ("torchao", "pt2e", "onnxruntime")
