"""A model as data: what it is made of, what it is fed and what its outputs mean.

The layer inventory and BatchNorm folding (:mod:`.layers`, :mod:`.graphlayers`),
data sets and calling a model on a batch (:mod:`.data`), which output the
metrics read and which tokens are real (:mod:`.readout`, :mod:`.lmmetrics`),
the exact size of a model under a config (:mod:`.size`), and the plumbing that
keeps big models cheap on a CPU (:mod:`.cpucompute`, :mod:`.allocator`,
:mod:`.fingerprint`).

Imports: numerics.
"""
