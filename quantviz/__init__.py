"""quantviz: look inside a neural network's quantization and tune it by hand.

Importing quantviz loads neither Qt nor CUDA. Layers: ``core`` (torch +
numpy), ``io`` (config, exports), ``session`` (state, no Qt), ``cli`` and
``gui`` (the only package that imports Qt).
"""
__version__ = "0.1.0"
