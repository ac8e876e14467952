"""Protein-based product features of the libraries with an ADT panel (issue 27).

From ``results/tables/protein_cells.tsv.gz`` (rule ``protein``), over the cells called T
cells by protein (``prot_t_cell``) with usable protein signal:

``prot_cd4_cd8_ratio``, ``log2_prot_cd4_cd8_ratio``
    Protein CD4 / CD8 cells (descriptive, NA without CD8 cells) and
    ``log2((n_CD4 + 0.5) / (n_CD8 + 0.5))``.
``prot_tscm_fraction``
    Cells gated Tscm (CD45RA+ CCR7+ CD62L+ CD95+) / cells with a memory call; NA where
    the library's Tscm gate is not used (no separated CD95).
``prot_pd1_pos_fraction``
    PD-1+ / cells with a PD-1 call; NA where PD-1 has no calls.

A library without a panel (or without the marker) gets NA: "where the panel measures
them".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError, Problem

#: Feature columns, in order.
PROTEIN_FEATURES: tuple[str, ...] = ("prot_cd4_cd8_ratio", "log2_prot_cd4_cd8_ratio",
                                     "prot_tscm_fraction", "prot_pd1_pos_fraction")
_REQUIRED = ("sample", "adt_usable", "prot_t_cell")


def _flag(values: pd.Series) -> pd.Series:
    return values.astype(str).str.lower().map({"true": True, "false": False})


def protein_features(prot: pd.DataFrame, *, samples: pd.Index,
                     source: str = "results/tables/protein_cells.tsv.gz") -> pd.DataFrame:
    """Protein product features per sample (module docstring), indexed by ``samples``.

    Raises
    ------
    InputError
        A required column is missing.
    """
    missing = [c for c in _REQUIRED if c not in prot.columns]
    if missing:
        raise InputError([Problem(source, "header", f"lacks columns {missing}",
                                  "re-run rule protein")])
    out = pd.DataFrame(np.nan, index=samples, columns=list(PROTEIN_FEATURES))
    t = prot[_flag(prot["adt_usable"]).fillna(False) & _flag(prot["prot_t_cell"]).fillna(False)]
    for sample, g in t.groupby(t["sample"].astype(str), sort=True):
        if sample not in out.index:
            continue
        if "prot_cd4_cd8" in g:
            n4 = int((g["prot_cd4_cd8"] == "CD4").sum())
            n8 = int((g["prot_cd4_cd8"] == "CD8").sum())
            out.loc[sample, "prot_cd4_cd8_ratio"] = n4 / n8 if n8 else np.nan
            out.loc[sample, "log2_prot_cd4_cd8_ratio"] = np.log2((n4 + 0.5) / (n8 + 0.5))
        if "prot_memory" in g:
            mem = g["prot_memory"].dropna()
            if len(mem) and not (mem == "Tn/Tscm").any():
                out.loc[sample, "prot_tscm_fraction"] = float((mem == "Tscm").mean())
        if "prot_pd1_pos" in g:
            pd1 = _flag(g["prot_pd1_pos"]).dropna()
            if len(pd1):
                out.loc[sample, "prot_pd1_pos_fraction"] = float(pd1.mean())
    return out
