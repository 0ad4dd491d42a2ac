"""The Qt-free engine: torch + numpy only, in rooms that say what they hold.

========== ====================================================================
room       holds
========== ====================================================================
numerics   the number grid and its math: integer and float/block formats,
           clip ranges, observers, resolved specs, the one SQNR
model      a model as data: its layer inventory, data sets and batching, what
           its outputs mean (readout, LM metrics), size, CPU compute helpers
sources    opening models and data files (demo, recipes, TorchScript, torch.export,
           pickles, Hugging Face folders)
algorithms per-layer PTQ algorithms (AdaRound, GPTQ, AWQ, SmoothQuant, ...)
sim        the simulation of a quantized model (:class:`~.sim.fakequant.QuantSim`),
           its weight codes, suffix re-checks and evaluation
analysis   questions asked of the simulation: sensitivity, proxies, ranking,
           search, the error trace, Ray fan-out
training   quantization-aware training
backends   real quantization in other runtimes (torchao, pt2e, ONNX Runtime)
========== ====================================================================

Three small modules sit beside the rooms and are shared by all of them:
:mod:`.errors`, :mod:`.progress` and :mod:`.fmt`. Each room's docstring ends
with an ``Imports:`` line naming the rooms it may use; ``tests/test_architecture.py``
holds every module to it.
"""
