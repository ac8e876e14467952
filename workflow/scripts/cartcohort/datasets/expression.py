"""Simulated UMI counts: negative-binomial expression of the panel genes and the CAR feature."""

from __future__ import annotations

import numpy as np

from .panel import GenePanel
from .params import SimParams

# UMI weight given to a cell's own TRAV, TRAJ, TRBV, TRBJ and TRBC features (tcr_idx columns)
_TCR_FEATURE_WEIGHTS: tuple[tuple[int, float], ...] = (
    (0, 5.0), (1, 1.5), (2, 5.0), (3, 1.5), (4, 6.0),
)
_CHUNK = 2048


def negative_binomial(
    mu: np.ndarray, theta: np.ndarray | float, rng: np.random.Generator
) -> np.ndarray:
    """NB draws with means ``mu`` and size ``theta`` (gamma-Poisson mixture)."""
    lam = rng.gamma(theta, mu / theta)
    return rng.poisson(lam)


def simulate_counts(
    panel: GenePanel,
    params: SimParams,
    *,
    state: np.ndarray,
    is_cd4: np.ndarray,
    car: np.ndarray,
    is_low_quality: np.ndarray,
    tcr_idx: np.ndarray,
    batch_logfactor: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """UMI counts of every simulated cell (doublet partners included, not yet merged).

    Parameters
    ----------
    panel
        The gene panel.
    params
        Simulator settings (``median_umis``, CAR means and dropout).
    state, is_cd4, car, is_low_quality
        Per-cell state index, lineage, CAR status and low-quality flag.
    tcr_idx
        ``(n_cells, 5)`` panel columns of each cell's TRAV, TRAJ, TRBV, TRBJ, TRBC (-1: none).
    batch_logfactor
        Per-gene log factor of the library's batch.
    rng
        The library's generator (draws in a fixed order).

    Returns
    -------
    numpy.ndarray
        ``(n_cells, n_genes + 1)`` int32 counts; the last column is the CAR feature.
    """
    n_tot = len(state)
    lib_size = params.median_umis * np.exp(rng.normal(0.0, 0.35, size=n_tot))
    mito_frac = np.clip(0.05 * np.exp(rng.normal(0.0, 0.25, size=n_tot)), 0.02, 0.1)
    lib_size[is_low_quality] *= rng.uniform(0.08, 0.25, size=int(is_low_quality.sum()))
    mito_frac[is_low_quality] = rng.uniform(0.25, 0.6, size=int(is_low_quality.sum()))
    strength = np.clip(np.exp(rng.normal(0.0, 0.25, size=n_tot)), 0.5, 1.6)
    g_n = panel.n_genes
    counts = np.empty((n_tot, g_n + 1), dtype=np.int32)
    log_base = np.log(panel.base) + batch_logfactor
    for a in range(0, n_tot, _CHUNK):
        b = min(a + _CHUNK, n_tot)
        logw = log_base[None, :] + strength[a:b, None] * panel.logfold[state[a:b]]
        logw += np.where(is_cd4[a:b, None], panel.lineage_cd4[None, :], panel.lineage_cd8[None, :])
        w = _fix_tcr_and_mito(panel, np.exp(logw), tcr_idx[a:b], mito_frac[a:b])
        mu = w * lib_size[a:b, None]
        counts[a:b, :g_n] = negative_binomial(mu, panel.theta[None, :], rng)
    counts[:, g_n] = _car_counts(params, car, lib_size, rng)
    return counts


def _fix_tcr_and_mito(
    panel: GenePanel, w: np.ndarray, tcr_idx: np.ndarray, mito_frac: np.ndarray
) -> np.ndarray:
    """Gene weights of a chunk of cells with their TCR genes set and mito share imposed."""
    rows = np.arange(len(w))
    for col, val in _TCR_FEATURE_WEIGHTS:
        idx = tcr_idx[:, col]
        ok = idx >= 0
        w[rows[ok], idx[ok]] = val
    w[:, panel.index["TRAC"]] = 6.0
    mito = panel.mito
    w[:, ~mito] *= ((1.0 - mito_frac) / w[:, ~mito].sum(axis=1))[:, None]
    w[:, mito] *= (mito_frac / w[:, mito].sum(axis=1))[:, None]
    return w


def _car_counts(
    params: SimParams, car: np.ndarray, lib_size: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """CAR UMIs: NB in CAR+ cells (with dropout), ambient Poisson in CAR- cells."""
    sf = np.clip(lib_size / params.median_umis, 0.05, 4.0)
    car_mu = np.where(car, params.car_mean_umis * sf, params.car_ambient_umis * sf)
    car_counts = np.where(car, negative_binomial(car_mu, 3.0, rng), rng.poisson(car_mu))
    car_counts[car & (rng.random(len(car)) < params.car_dropout)] = 0
    return car_counts
