"""The simulated gene space: real features and the fixed expression parameters of every gene."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import CartCohortError
from ._utils import fixed_rng, gene_id, gex_symbol
from .background import dispersion, fitted_model, real_gene_space
from .genes import (
    CAR_FEATURE,
    DUPLICATED_SYMBOLS,
    GD_SEGMENTS,
    HOUSEKEEPING,
    LINEAGE_GENES,
    LINEAGE_PROFILES,
    MITO_GENES,
    PANEL_TRAJ,
    PANEL_TRAV,
    PANEL_TRBJ,
    PANEL_TRBV,
    RIBO_GENES,
    SPECIFIC_MARKERS,
    STATE_DOWN,
    STATE_UP,
    STATES,
    TCR_CONSTANT,
    core_symbols,
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
        Baseline share of a cell's UMIs per gene (CAR excluded).
    logfold
        ``(n_states, n_genes)`` log fold changes of the state programs.
    theta
        NB size parameter per gene.
    lineage
        ``(len(LINEAGE_PROFILES), n_genes)`` log factors of each lineage profile (CD4, CD8,
        double-negative, gamma-delta, gamma-delta CD8 alpha-alpha).
    mito, batchable, core
        Boolean masks over genes (``core``: the genes whose expression the simulated
        biology drives; the rest is the real background).
    """

    features: pd.DataFrame
    base: np.ndarray
    logfold: np.ndarray
    theta: np.ndarray
    lineage: np.ndarray
    mito: np.ndarray
    batchable: np.ndarray
    index: dict[str, int]
    core: np.ndarray

    @property
    def n_genes(self) -> int:
        """Number of endogenous genes (CAR excluded)."""
        return len(self.base)

    def feature_index(self, vdj_gene: str) -> int:
        """Column of a V(D)J gene's GEX feature, or -1 when the panel lacks it."""
        return self.index.get(gex_symbol(vdj_gene), -1)


_PANEL_CACHE: dict[int | None, GenePanel] = {}
_DENSE_MEAN = 0.1  # genes below this mean UMIs per cell are simulated as Poisson (see expression)


def gene_panel(n_background_genes: int | None = None) -> GenePanel:
    """Build the gene space (fixed: independent of the cohort seed).

    Parameters
    ----------
    n_background_genes
        ``None`` (default): every real background gene of the fitted gene space (about
        30,600, so about 30,800 features with the core genes, the duplicated symbols and
        the CAR). A number keeps only that many of the most abundant background genes
        (fast unit tests of the mechanics; never for figures).

    Returns
    -------
    GenePanel
        Features (core genes, background genes, duplicated symbols, then ``CAR``) and
        per-gene parameters; cached per ``n_background_genes``.
    """
    if n_background_genes in _PANEL_CACHE:
        return _PANEL_CACHE[n_background_genes]
    core = core_symbols()
    real = real_gene_space()
    real_w = dict(zip(real["name"], np.exp(real["log_weight"].to_numpy()), strict=True))
    taken = set(core)
    bg = real[~real["name"].isin(taken)].sort_values("log_weight", ascending=False, kind="stable")
    if n_background_genes is not None:
        if n_background_genes < 0:
            raise CartCohortError(
                f"n_background_genes must be >= 0 or None, got {n_background_genes}. "
                "Fix: leave it unset for the full gene space."
            )
        bg = bg.head(n_background_genes)
    background = bg.sort_index()["name"].tolist()  # the fitted file's order
    dups = [g for g in DUPLICATED_SYMBOLS if g in set(background)]
    symbols = core + background + dups
    idx = {g: i for i, g in enumerate(core + background)}
    rng = fixed_rng("cartcohort-gene-space-v2")
    logfold = _state_logfold(idx, len(symbols), rng)
    base = _baseline(symbols, core, real_w, logfold, idx)
    _specific_markers(base, logfold, idx, real, rng)
    g_n = len(symbols)
    mito = np.zeros(g_n, dtype=bool)
    mito[[idx[g] for g in MITO_GENES]] = True
    is_core = np.zeros(g_n, dtype=bool)
    is_core[: len(core)] = True
    batchable = ~is_core
    batchable[[idx[g] for g in list(HOUSEKEEPING) + list(RIBO_GENES)]] = True
    panel = GenePanel(
        features=_features(symbols, n_dup=len(dups)),
        base=base,
        logfold=logfold,
        theta=dispersion(base * fitted_model()["library"]["median_umis"] * 2.0),
        lineage=_lineage_factors(idx, g_n),
        mito=mito,
        batchable=batchable,
        index=idx,
        core=is_core,
    )
    _PANEL_CACHE[n_background_genes] = panel
    return panel


def _baseline(
    symbols: list[str],
    core: list[str],
    real_w: dict[str, float],
    logfold: np.ndarray,
    idx: dict[str, int],
) -> np.ndarray:
    """Every gene's share of a cell's UMIs before state, lineage and mito are applied.

    Real genes take their fitted share. A state marker's baseline is divided by its mean
    fold over the states, so that the cohort mean matches the fitted share; a lineage gene's
    is doubled (it is silent in the other lineage). Core genes that the fitted gene space
    lacks (TCR segments, mitochondrial genes, a few HLA genes) keep the simulator's fixed
    relative weights, converted to shares through the housekeeping genes both have.
    """
    unit = float(np.median([real_w[g] / v for g, v in HOUSEKEEPING.items() if g in real_w]))
    fixed = _fixed_weights()
    base = np.empty(len(symbols))
    mean_fold = np.exp(logfold).mean(axis=0)
    for i, g in enumerate(symbols):
        if i < len(core) and g not in real_w:
            base[i] = fixed[g] * unit
        elif i < len(idx):
            base[i] = real_w[g]
        else:  # the second gene id of a duplicated symbol: a quarter of the first
            base[i] = real_w[g] / 4.0
    base[: len(idx)] /= mean_fold[: len(idx)]
    for g in LINEAGE_GENES:
        base[idx[g]] *= 2.0
    return base


def _specific_markers(
    base: np.ndarray,
    logfold: np.ndarray,
    idx: dict[str, int],
    real: pd.DataFrame,
    rng: np.random.Generator,
) -> None:
    """Set the state-specific markers (FOXP3, MKI67, PDCD1, ...) from their real level.

    A specific marker is (nearly) silent outside its state, so its cohort mean says little
    about its level in the state. Its level in the state is the real mean UMIs of the cells
    that detect it (``mean_if_detected``, at the real library depth; at least 1 UMI), and
    outside the state it is 10-30x lower. Updates ``base`` and ``logfold`` in place.
    """
    depth = fitted_model()["library"]["median_umis"]
    level = dict(zip(real["name"], real["mean_if_detected"], strict=True))
    for s, state in enumerate(STATES):
        for g in STATE_UP[state]:
            if g not in SPECIFIC_MARKERS:
                continue
            i = idx[g]
            fold = rng.uniform(10.0, 30.0)
            base[i] = max(level.get(g, 0.0), 1.0) / depth / fold
            logfold[:, i] = 0.0
            logfold[s, i] = np.log(fold)


def _lineage_factors(idx: dict[str, int], g_n: int) -> np.ndarray:
    """Log factors of the lineage profiles (``LINEAGE_PROFILES`` rows) over the genes.

    A silent lineage gene keeps 1 % of its level, below what ambient RNA brings: CD4 cells
    lack CD8A/CD8B, CD8 cells CD4, double-negative and gamma-delta cells all three.
    CD8 alpha-alpha gamma-delta cells express CD8A (at half the CD8 T-cell level), not CD8B.

    The lineage program (``fit.json``, ``lineage_program``: the genes that differ between
    real CD4 and CD8 T cells and their log folds) puts half of each log fold on the CD4-like
    profiles (CD4, DN_cd4like) and minus half on the CD8-like ones (CD8, DN, gd, gd_cd8aa).
    """
    silent = np.log(0.01)
    silenced = {
        "CD4": ("CD8A", "CD8B"), "CD8": ("CD4",), "DN": ("CD4", "CD8A", "CD8B"),
        "DN_cd4like": ("CD4", "CD8A", "CD8B"), "gd": ("CD4", "CD8A", "CD8B"),
        "gd_cd8aa": ("CD4", "CD8B"),
    }
    out = np.zeros((len(LINEAGE_PROFILES), g_n))
    program = fitted_model().get("lineage_program") or {}
    folds = {g: v for g, v in program.get("log_fold_cd4_over_cd8", {}).items() if g in idx}
    cols = [idx[g] for g in folds]
    half = 0.5 * np.array(list(folds.values()), dtype=float)
    for r, name in enumerate(LINEAGE_PROFILES):
        out[r, cols] = half if name in ("CD4", "DN_cd4like") else -half
        out[r, [idx[g] for g in silenced[name]]] = silent
    out[LINEAGE_PROFILES.index("gd_cd8aa"), idx["CD8A"]] = np.log(0.5)
    return out


def _fixed_weights() -> dict[str, float]:
    """Relative weights of the core genes that the fitted gene space lacks."""
    out: dict[str, float] = dict(TCR_CONSTANT)
    out.update({gex_symbol(g): 0.02 for g in PANEL_TRAV + PANEL_TRAJ + PANEL_TRBV + PANEL_TRBJ})
    out.update({g: 0.02 for g in GD_SEGMENTS})
    out.update({"HLA-B": 15.0, "HLA-DRA": 0.5})
    out.update(zip(MITO_GENES, np.linspace(1.0, 0.3, len(MITO_GENES)), strict=True))
    for g in core_symbols():
        out.setdefault(g, 0.5)
    return out


def _state_logfold(idx: dict[str, int], g_n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_states, n_genes)`` log fold changes of the state programs (overlapping, modest).

    A marker shared by several programs (CCR7 in naive/Tscm and Tcm, CTLA4 in Treg and
    exhausted) gets a fold in each: 1.8-4x up, 0.3-0.6x down. Specific markers are set
    afterwards from their real level (:func:`_specific_markers`).
    """
    logfold = np.zeros((len(STATES), g_n))
    for s, state in enumerate(STATES):
        for g in STATE_UP[state]:
            logfold[s, idx[g]] += np.log(rng.uniform(1.8, 4.0))
        for g in STATE_DOWN[state]:
            logfold[s, idx[g]] += np.log(rng.uniform(0.3, 0.6))
    return logfold


def _features(symbols: list[str], *, n_dup: int) -> pd.DataFrame:
    """The feature table: one row per gene (Cell Ranger layout), then the CAR transgene."""
    g_n = len(symbols)
    first = symbols[: g_n - n_dup]
    ids = [gene_id(g) for g in first] + [gene_id(g + "#2") for g in symbols[g_n - n_dup :]]
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
