"""Questions asked of the simulation: which layers matter, and what to choose.

Sensitivity sweeps and their dispatcher (:mod:`.sensitivity`, :mod:`.methods`),
cheap proxies and how well they rank (:mod:`.proxies`, :mod:`.ranking`),
candidate settings and the mixed-precision search (:mod:`.candidates`,
:mod:`.search`), the layer-by-layer error trace (:mod:`.trace`) and the same
work fanned out as Ray tasks (:mod:`.raysweep`).

Imports: numerics, model, algorithms, sim.
"""
