"""The simulated GEX panel: features and the fixed expression parameters of every gene."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import CartCohortError
from ._utils import fixed_rng, gene_id, gex_symbol
from .genes import (
    CAR_FEATURE,
    HOUSEKEEPING,
    LINEAGE_GENES,
    MITO_GENES,
    OTHER_GENES,
    PANEL_TRAJ,
    PANEL_TRAV,
    PANEL_TRBJ,
    PANEL_TRBV,
    RIBO_GENES,
    SPECIFIC_MARKERS,
    STATE_DOWN,
    STATE_UP,
    STATES,
    T_CELL_GENES,
    TCR_CONSTANT,
    core_symbols,
    filler_pool,
)


@dataclass(frozen=True)
class GenePanel:
    """The simulated GEX feature set and its fixed expression parameters.

    Attributes
    ----------
    features
        One row per feature in file order: ``id``, ``name``, ``feature_type``, ``genome``;
        the CAR transgene is the last row.
    base
        Baseline expected UMIs (relative weight) per gene (CAR excluded).
    logfold
        ``(n_states, n_genes)`` log fold changes of the state programs.
    theta
        NB size parameter per gene.
    lineage_cd4, lineage_cd8
        Log factors applied to CD4 / CD8 cells.
    mito, batchable
        Boolean masks over genes.
    """

    features: pd.DataFrame
    base: np.ndarray
    logfold: np.ndarray
    theta: np.ndarray
    lineage_cd4: np.ndarray
    lineage_cd8: np.ndarray
    mito: np.ndarray
    batchable: np.ndarray
    index: dict[str, int]

    @property
    def n_genes(self) -> int:
        """Number of endogenous genes (CAR excluded)."""
        return len(self.base)

    def feature_index(self, vdj_gene: str) -> int:
        """Column of a V(D)J gene's GEX feature, or -1 when the panel lacks it."""
        return self.index.get(gex_symbol(vdj_gene), -1)


_PANEL_CACHE: dict[int, GenePanel] = {}


def gene_panel(n_filler_genes: int = 330) -> GenePanel:
    """Build the gene panel (fixed: independent of the cohort seed).

    Parameters
    ----------
    n_filler_genes
        Number of filler genes appended after the core genes.

    Returns
    -------
    GenePanel
        Features (core genes, fillers, then ``CAR``) and per-gene parameters; cached per
        ``n_filler_genes``.
    """
    if n_filler_genes in _PANEL_CACHE:
        return _PANEL_CACHE[n_filler_genes]
    core = core_symbols()
    pool = filler_pool()
    if n_filler_genes > len(pool):
        raise CartCohortError(
            f"n_filler_genes={n_filler_genes} exceeds the {len(pool)} filler genes available. "
            "Fix: ask for fewer filler genes."
        )
    filler = pool[:n_filler_genes]
    symbols = core + filler
    idx = {g: i for i, g in enumerate(symbols)}
    rng = fixed_rng("cartcohort-gene-panel-v1")
    base, theta = _baseline(idx, filler, rng)
    logfold = _state_logfold(idx, base, theta, rng)
    g_n = len(symbols)
    lineage_cd4 = np.zeros(g_n)
    lineage_cd8 = np.zeros(g_n)
    lineage_cd4[[idx["CD8A"], idx["CD8B"]]] = np.log(0.01)
    lineage_cd8[idx["CD4"]] = np.log(0.01)
    mito = np.zeros(g_n, dtype=bool)
    mito[[idx[g] for g in MITO_GENES]] = True
    batchable = np.zeros(g_n, dtype=bool)
    batchable[[idx[g] for g in list(HOUSEKEEPING) + list(RIBO_GENES) + filler]] = True
    panel = GenePanel(
        features=_features(symbols),
        base=base,
        logfold=logfold,
        theta=theta,
        lineage_cd4=lineage_cd4,
        lineage_cd8=lineage_cd8,
        mito=mito,
        batchable=batchable,
        index=idx,
    )
    _PANEL_CACHE[n_filler_genes] = panel
    return panel


def _baseline(
    idx: dict[str, int], filler: list[str], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline weight and NB size of every gene (draws in a fixed order from ``rng``)."""
    g_n = len(idx)
    base = np.full(g_n, np.nan)
    theta = np.exp(rng.normal(np.log(4.0), 0.5, size=g_n))
    markers = {g for genes in STATE_UP.values() for g in genes} | {
        g for genes in STATE_DOWN.values() for g in genes
    }
    for g in sorted(markers):
        if g in SPECIFIC_MARKERS:
            base[idx[g]] = rng.uniform(0.02, 0.08)
        else:
            base[idx[g]] = float(np.exp(rng.uniform(np.log(0.1), np.log(1.2))))
    for g, v in LINEAGE_GENES.items():
        base[idx[g]] = v
    for g, v in T_CELL_GENES.items():
        base[idx[g]] = v
    for g, v in HOUSEKEEPING.items():
        base[idx[g]] = v
        theta[idx[g]] = 12.0
    for g in OTHER_GENES:
        base[idx[g]] = rng.uniform(0.2, 3.0)
    for g, v in TCR_CONSTANT.items():
        base[idx[g]] = v
    for g in PANEL_TRAV + PANEL_TRAJ + PANEL_TRBV + PANEL_TRBJ:
        base[idx[gex_symbol(g)]] = 0.02
    for g in RIBO_GENES:
        base[idx[g]] = rng.uniform(8.0, 25.0)
        theta[idx[g]] = 15.0
    mito_w = rng.uniform(0.3, 1.0, size=len(MITO_GENES))
    for g, v in zip(MITO_GENES, mito_w, strict=True):
        base[idx[g]] = v
        theta[idx[g]] = 10.0
    for rank, g in enumerate(filler):
        base[idx[g]] = 25.0 * (rank + 1) ** -0.75 * np.exp(rng.normal(0, 0.3))
    if np.isnan(base).any():  # pragma: no cover - guards the tables above
        raise CartCohortError("internal: gene panel has genes without baseline")
    return base, theta


def _state_logfold(
    idx: dict[str, int], base: np.ndarray, theta: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``(n_states, n_genes)`` log fold changes of the state programs (raises ``theta``)."""
    logfold = np.zeros((len(STATES), len(idx)))
    for s, state in enumerate(STATES):
        for g in STATE_UP[state]:
            fold = max(rng.uniform(3.0, 8.0), 2.0 / base[idx[g]])
            logfold[s, idx[g]] += np.log(fold)
            theta[idx[g]] = max(theta[idx[g]], 3.0)
        for g in STATE_DOWN[state]:
            logfold[s, idx[g]] += np.log(rng.uniform(0.12, 0.3))
    return logfold


def _features(symbols: list[str]) -> pd.DataFrame:
    """The feature table: one row per gene, then the CAR transgene."""
    g_n = len(symbols)
    ids = [gene_id(g) for g in symbols]
    if len(set(ids)) != len(ids):  # pragma: no cover - md5 collision
        raise CartCohortError("internal: fake gene ids collide")
    return pd.DataFrame(
        {
            "id": ids + [CAR_FEATURE],
            "name": symbols + [CAR_FEATURE],
            "feature_type": ["Gene Expression"] * (g_n + 1),
            "genome": ["GRCh38"] * g_n + [CAR_FEATURE],
        }
    )
