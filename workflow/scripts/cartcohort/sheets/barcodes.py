"""Cell barcodes of one assay matched to those of another (TCR to GEX)."""

from __future__ import annotations

import re
from collections.abc import Iterable

_SUFFIX_RE = re.compile(r"-\d+$")


def barcode_core(barcode: str) -> str:
    """``barcode`` without a trailing GEM-well suffix (``-1``, ``-12``)."""
    return _SUFFIX_RE.sub("", barcode)


def match_barcodes(query: Iterable[str], reference: Iterable[str]) -> dict[str, str]:
    """Map barcodes of one assay to the barcodes of another (e.g. TCR to GEX).

    Barcodes are compared exactly when both carry a ``-N`` suffix (so ``-1``
    and ``-2`` of an aggregated run stay apart); when one of them has no
    suffix, they are compared without it. A suffix-less barcode that matches
    several suffixed ones is left unmatched.

    Parameters
    ----------
    query
        Barcodes to map (e.g. the contig table's).
    reference
        Barcodes to map onto (e.g. the GEX matrix's).

    Returns
    -------
    dict
        ``query barcode -> reference barcode`` for every query barcode that matched.
    """
    ref = list(dict.fromkeys(reference))
    ref_set = set(ref)
    core_to_ref: dict[str, str | None] = {}
    for r in ref:
        c = barcode_core(r)
        core_to_ref[c] = None if (c in core_to_ref and core_to_ref[c] != r) else r
    out: dict[str, str] = {}
    for q in dict.fromkeys(query):
        if q in ref_set:
            out[q] = q
            continue
        q_has = barcode_core(q) != q
        if q_has:
            # suffixed query: match only a suffix-less reference barcode
            c = barcode_core(q)
            if c in ref_set:
                out[q] = c
        else:
            r = core_to_ref.get(q)
            if r is not None and r != q:
                out[q] = r
    return out
