"""The simulation of a quantized model.

:class:`~.fakequant.QuantSim` wraps a float model with fake quantizers per
layer, keeps the quantized weights as compact codes (:mod:`.wcodes`),
re-runs only the part of the model an edit can change (:mod:`.incremental`),
and evaluates float against quantized with streaming metrics (:mod:`.evaluate`).
Every re-check, trace, sensitivity run and export goes through it.

Imports: numerics, model, algorithms.
"""
