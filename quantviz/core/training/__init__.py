"""Quantization-aware training: the model is fine-tuned with its quantizers in
the loop (:mod:`.qat`), through trainable fake quantizers (:mod:`.qat_quant`).

Imports: numerics, model, sim.
"""
