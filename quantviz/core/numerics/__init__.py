"""The number grid and its math, for one tensor at a time.

Integer grids and their scale / zero point (:mod:`.qparams`), the one
quantize / clip / error kernel (:mod:`.quantize`), the float and block formats
(:mod:`.formats`, :mod:`.format_quant`), clip-range methods (:mod:`.ranges`),
streaming statistics (:mod:`.observers`), resolved per-layer settings
(:mod:`.spec`, :mod:`.describe`; a config's, immutable, with the one
comparison of what changed: :mod:`.specmap`), the live histogram previews
(:mod:`.preview`, :mod:`.format_preview`) and the SQNR every view reports
(:mod:`.sqnr`). Nothing here knows what a model is.

Imports: nothing but the shared modules.
"""
