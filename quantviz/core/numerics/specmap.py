"""A config's resolved settings, immutable, and the one computation of what changed.

:class:`SpecMap` maps layer names to :class:`~.spec.LayerSpec` in inventory
order and cannot be changed, so the session, the re-check worker, the
simulation and the trace can share one object per config instead of copies.
:meth:`SpecMap.changed_from` says which layers differ from another map; it
calls :func:`diff_specs` (the one function that compares settings) once per
pair of maps and remembers the answer on the newer map, so every reader of one
edit (the session's ``ConfigChange``, ``QuantSim.apply``, the re-check's
cached base, the trace) gets the same list from a single comparison.
"""
from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Iterable, Iterator

from .spec import LayerSpec


def diff_specs(old: Mapping, new: Mapping) -> tuple[str, ...]:
    """The layers whose spec differs between ``old`` and ``new``: ``new``'s in its order (absent in
    ``old`` counts as changed), then those only ``old`` names."""
    return (tuple(n for n, s in new.items() if old.get(n) != s)
            + tuple(n for n in old if n not in new))


class SpecMap(Mapping):
    """``{layer name: LayerSpec}``, read-only; compare with :meth:`changed_from`."""

    __slots__ = ("_d", "_diffs", "__weakref__")

    def __init__(self, specs: Mapping[str, LayerSpec] | Iterable[tuple[str, LayerSpec]] = ()):
        self._d = dict(specs)
        self._diffs: dict[int, tuple] = {}  # id(old) -> (weakref to old, changed names)

    @classmethod
    def of(cls, specs) -> "SpecMap":
        """``specs`` itself when it is a SpecMap, else a SpecMap of it."""
        return specs if isinstance(specs, SpecMap) else cls(specs)

    def __getitem__(self, name: str) -> LayerSpec:
        return self._d[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, name) -> bool:
        return name in self._d

    def get(self, name, default=None):
        return self._d.get(name, default)

    def __eq__(self, other) -> bool:
        if isinstance(other, SpecMap):
            other = other._d
        return self._d == other

    __hash__ = None  # like a dict

    def __repr__(self) -> str:
        return f"SpecMap({self._d!r})"

    def __reduce__(self):  # pickled without the remembered diffs
        return (SpecMap, (self._d,))

    def changed_from(self, old: Mapping | None) -> tuple[str, ...]:
        """Layers whose spec differs from ``old`` (every layer when ``old`` is None), computed once
        per ``old`` map (:func:`diff_specs`)."""
        if old is None:
            return tuple(self._d)
        if old is self:
            return ()
        hit = self._diffs.get(id(old))
        if hit is not None and hit[0]() is old:
            return hit[1]
        changed = diff_specs(old, self)
        if isinstance(old, SpecMap):
            if len(self._diffs) >= 8:
                self._diffs.clear()
            self._diffs[id(old)] = (weakref.ref(old), changed)
        return changed


__all__ = ["SpecMap", "diff_specs"]
