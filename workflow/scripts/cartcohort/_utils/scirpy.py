"""Import scirpy once, with its two tiny numba kernels in ``index_chains`` replaced.

scirpy 0.22.5 JIT-compiles ``_awkward_isin``/``_awkward_len`` (numba, no cache) on
every call of :func:`scirpy.pp.index_chains` in a new process: ~4.5 s of CPU per
process, i.e. most of the cost of a per-library QC job. scirpy's own source carries
the pure-awkward equivalents (commented "alternative implementations ... that work
without the need for numba"); we install exactly those. Results are identical
(``tests/test_scirpy_compat.py``); on large libraries they are as fast as numba.
"""

from __future__ import annotations

import functools
import operator
from types import ModuleType


def _awkward_len(arr):
    import awkward as ak

    return ak.num(arr, axis=1)


def _awkward_isin(arr, haystack):
    import awkward as ak

    haystack = tuple(haystack)
    if not haystack:
        return ak.zeros_like(arr, dtype=bool)
    return functools.reduce(operator.or_, (arr == el for el in haystack))


@functools.cache
def load_scirpy() -> ModuleType:
    """Return the scirpy module with the numba-free ``index_chains`` kernels installed."""
    import scirpy
    from scirpy.pp import _index_chains

    _index_chains._awkward_isin = _awkward_isin
    _index_chains._awkward_len = _awkward_len
    return scirpy
