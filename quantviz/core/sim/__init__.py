"""The simulation of a quantized model.

:class:`~.fakequant.QuantSim` wraps a float model with fake quantizers per
layer (:mod:`.hooks`, :mod:`.activations`), keeps one record per layer
(:mod:`.layerstate`) and the quantized weights in a budgeted cache
(:mod:`.weightcache`), as compact codes where needed (:mod:`.wcodes`),
re-runs only the part of the model an edit can change (:mod:`.incremental`; a
transformer's decoder blocks from the first changed one: :mod:`.blocks`),
and evaluates float against quantized with streaming metrics (:mod:`.evaluate`).
Every re-check, trace, sensitivity run and export goes through it.

Imports: numerics, model, algorithms.
"""
