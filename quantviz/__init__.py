"""quantviz: look inside a neural network's quantization and tune it by hand.

Importing quantviz loads neither Qt nor CUDA. Layers: ``core`` (torch +
numpy), ``io`` (config, exports), ``session`` (state, no Qt), ``cli`` and
``gui`` (the only package that imports Qt).

OpenMP threads wait passively unless the user chose otherwise: spin-waiting
workers steal the cores of a shared machine (a loop of small parallel regions
ran 21x slower beside two busy processes). It takes effect when quantviz is
imported before torch, as every quantviz entry point (CLI, app, Ray workers
started by quantviz) does.
"""
import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
