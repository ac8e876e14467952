"""Simulated UMI counts in the real gene space: cell programs, ambient RNA and the CAR.

Per cell: a library size (log-normal, within-library SD fitted to real data), a mito share,
an ambient share ``rho`` and weights over every gene. Genes whose mean is at least
``0.1`` UMI per cell, and every core gene, are drawn negative binomial with the fitted
dispersion trend. The other ~25,000 background genes are drawn Poisson, by sampling the
cell's background UMIs over them (at such means the NB and the Poisson differ by under
10 % in variance), which keeps the cost proportional to the UMIs rather than to the genes.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .background import car_mean_for_detection, car_nb_theta, fitted_model
from .panel import _DENSE_MEAN, GenePanel
from .params import SimParams

# UMI weight (in TRAC units) of a cell's own TCR features (columns of ``tcr_idx``): the VJ
# chain's V and J, the VDJ chain's V, J and C, the VJ chain's C, and (gamma-delta cells) the
# other TRGC. Alpha-beta cells: TRAV, TRAJ, TRBV, TRBJ, TRBC, TRAC; gamma-delta cells: TRGV,
# TRGJ, TRDV, TRDJ, TRDC, their TRGC and a fifth as much of the other TRGC. The constant
# regions a cell does not use (TRAC and TRBC in gamma-delta cells) stay at the panel's
# baseline, a tenth of a T cell's TRAC (germline transcripts).
_TCR_FEATURE_WEIGHTS: tuple[tuple[int, float], ...] = (
    (0, 5.0 / 6.0), (1, 1.5 / 6.0), (2, 5.0 / 6.0), (3, 1.5 / 6.0), (4, 1.0), (5, 1.0),
    (6, 0.2),
)
TCR_FEATURE_COLUMNS = len(_TCR_FEATURE_WEIGHTS)
_TRAC_BOOST = 10.0  # a T cell's TRAC relative to the panel's (population) baseline
_CHUNK = 1024
CAR_DETECTION: dict[str, float] = {"5prime": 0.65, "3prime": 0.35}


def negative_binomial(
    mu: np.ndarray, theta: np.ndarray | float, rng: np.random.Generator
) -> np.ndarray:
    """NB draws with means ``mu`` and size ``theta`` (gamma-Poisson mixture)."""
    lam = rng.gamma(theta, mu / theta)
    return rng.poisson(lam)


def car_detection(params: SimParams) -> float:
    """Share of CAR+ cells (at the median library size) with >= 1 CAR UMI."""
    if params.car_detection is not None:
        return params.car_detection
    return CAR_DETECTION[params.chemistry]


def simulate_counts(
    panel: GenePanel,
    params: SimParams,
    *,
    state: np.ndarray,
    mix_state: np.ndarray,
    mix_weight: np.ndarray,
    lineage: np.ndarray,
    car: np.ndarray,
    is_low_quality: np.ndarray,
    tcr_idx: np.ndarray,
    gene_logfactor: np.ndarray,
    rng: np.random.Generator,
) -> sp.csr_matrix:
    """UMI counts of every simulated cell (doublet partners included, not yet merged).

    Parameters
    ----------
    panel
        The gene space.
    params
        Simulator settings (``median_umis``, ``chemistry``, ``ambient_fraction``).
    state, mix_state, mix_weight
        Per-cell state index, the neighbouring state it shares its program with, and the
        weight of that neighbour (``0``: a pure state; ``0.5``: truly ambiguous).
    lineage, car, is_low_quality
        Per-cell lineage profile (row of ``GenePanel.lineage``), CAR status and
        low-quality flag.
    tcr_idx
        ``(n_cells, TCR_FEATURE_COLUMNS)`` panel columns of each cell's own TCR features
        (see ``_TCR_FEATURE_WEIGHTS``; -1: none).
    gene_logfactor
        Per-gene log factor of the library's batch and patient.
    rng
        The library's generator (draws in a fixed order).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n_cells, n_genes + 1)`` int32 counts; the last column is the CAR feature.
    """
    n_tot = len(state)
    sdlog = fitted_model()["library"]["sdlog_within_sample"]
    lib_size = params.median_umis * np.exp(rng.normal(0.0, sdlog, size=n_tot))
    mito_frac = np.clip(0.05 * np.exp(rng.normal(0.0, 0.3, size=n_tot)), 0.01, 0.12)
    n_lq = int(is_low_quality.sum())
    lib_size[is_low_quality] *= rng.uniform(0.08, 0.25, size=n_lq)
    mito_frac[is_low_quality] = rng.uniform(0.25, 0.6, size=n_lq)
    rho = rng.beta(2.0, 2.0 / params.ambient_fraction - 2.0, size=n_tot)
    strength = np.clip(np.exp(rng.normal(0.0, 0.25, size=n_tot)), 0.5, 1.6)
    g_n = panel.n_genes
    dense = (panel.core | (panel.lineage != 0).any(axis=0)
             | (panel.base * params.median_umis >= _DENSE_MEAN))
    d_idx = np.flatnonzero(dense)
    s_idx = np.flatnonzero(~dense)
    log_base = np.log(panel.base[d_idx]) + gene_logfactor[d_idx]
    sparse_share = float(panel.base[s_idx].sum())
    cells = _CellDraws(state, mix_state, mix_weight, lineage, tcr_idx, mito_frac, strength)
    view = _DenseView(panel, d_idx)
    amb = _ambient(view, log_base, sparse_share, cells, lib_size)
    s_cum = np.cumsum(panel.base[s_idx] / sparse_share) if len(s_idx) else np.zeros(0)
    blocks = []
    for a in range(0, n_tot, _CHUNK):
        b = min(a + _CHUNK, n_tot)
        w, s_share = _weights(view, log_base, sparse_share, cells, a, b)
        r = rho[a:b, None]
        w = (1.0 - r) * w + r * amb[None, :-1]
        s_share = (1.0 - rho[a:b]) * s_share + rho[a:b] * amb[-1]
        dense_counts = negative_binomial(w * lib_size[a:b, None], panel.theta[d_idx][None, :], rng)
        blocks.append(
            _assemble(dense_counts, d_idx, s_idx, s_cum,
                      rng.poisson(s_share * lib_size[a:b]), g_n, rng)
        )
    counts = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, g_n), dtype=np.int32)
    car_counts = _car_counts(params, car, lib_size, rho, rng)
    out = sp.hstack([counts, sp.csr_matrix(car_counts.reshape(-1, 1))], format="csr")
    out = out.astype(np.int32)
    out.eliminate_zeros()
    out.sort_indices()
    return out


class _CellDraws:
    """The per-cell draws that set a cell's gene weights."""

    def __init__(self, state, mix_state, mix_weight, lineage, tcr_idx, mito_frac, strength):
        self.state, self.mix_state, self.mix_weight = state, mix_state, mix_weight
        self.lineage, self.tcr_idx = lineage, tcr_idx
        self.mito_frac, self.strength = mito_frac, strength


class _DenseView:
    """The panel's per-gene arrays restricted to the dense genes (selected once per library)."""

    def __init__(self, panel: GenePanel, d_idx: np.ndarray):
        self.logfold = panel.logfold[:, d_idx]
        self.lineage = panel.lineage[:, d_idx]
        self.mito = panel.mito[d_idx]
        self.col = np.full(panel.n_genes, -1)
        self.col[d_idx] = np.arange(len(d_idx))
        self.trac = self.col[panel.index["TRAC"]]


def _ambient(view, log_base, sparse_share, cells, lib_size) -> np.ndarray:
    """The library's ambient profile: its cells' RNA pooled, weighted by their size."""
    amb = np.zeros(len(log_base) + 1)
    for a in range(0, len(lib_size), _CHUNK):
        b = min(a + _CHUNK, len(lib_size))
        w, s_share = _weights(view, log_base, sparse_share, cells, a, b)
        amb[:-1] += (w * lib_size[a:b, None]).sum(axis=0)
        amb[-1] += (s_share * lib_size[a:b]).sum()
    return amb / amb.sum()


def _weights(
    view: _DenseView,
    log_base: np.ndarray,
    sparse_share: float,
    cells: _CellDraws,
    a: int,
    b: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Shares of cells ``a:b`` over the dense genes, and their Poisson-background share."""
    m = cells.mix_weight[a:b, None]
    program = (1.0 - m) * view.logfold[cells.state[a:b]] + m * view.logfold[
        cells.mix_state[a:b]
    ]
    logw = log_base[None, :] + cells.strength[a:b, None] * program
    w = np.exp(logw + view.lineage[cells.lineage[a:b]])
    col = view.col
    rows = np.arange(b - a)
    unit = float(np.exp(log_base[view.trac])) * _TRAC_BOOST
    for k, val in _TCR_FEATURE_WEIGHTS:
        idx = cells.tcr_idx[a:b, k]
        ok = idx >= 0
        w[rows[ok], col[idx[ok]]] = val * unit
    mito = view.mito
    mito_frac = cells.mito_frac[a:b]
    scale = (1.0 - mito_frac) / (w[:, ~mito].sum(axis=1) + sparse_share)
    w[:, ~mito] *= scale[:, None]
    w[:, mito] *= (mito_frac / w[:, mito].sum(axis=1))[:, None]
    return w, sparse_share * scale


def _assemble(
    dense_counts: np.ndarray,
    d_idx: np.ndarray,
    s_idx: np.ndarray,
    cum: np.ndarray,
    n_sparse: np.ndarray,
    g_n: int,
    rng: np.random.Generator,
) -> sp.csr_matrix:
    """One chunk's CSR counts: dense NB genes plus Poisson background UMIs placed by share."""
    r, c = np.nonzero(dense_counts)
    vals = dense_counts[r, c]
    total = int(n_sparse.sum())
    if total and len(s_idx):
        genes = np.minimum(np.searchsorted(cum, rng.random(total), side="right"), len(s_idx) - 1)
        rows = np.repeat(np.arange(len(n_sparse)), n_sparse)
        r = np.concatenate([r, rows])
        c = np.concatenate([d_idx[c], s_idx[genes]])
        vals = np.concatenate([vals, np.ones(total, dtype=vals.dtype)])
    else:
        c = d_idx[c]
    mat = sp.coo_matrix((vals, (r, c)), shape=(len(n_sparse), g_n)).tocsr()
    mat.sum_duplicates()
    return mat


def _car_counts(
    params: SimParams,
    car: np.ndarray,
    lib_size: np.ndarray,
    rho: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """CAR UMIs: NB in CAR+ cells (detection set by chemistry), ambient CAR in every cell."""
    sf = lib_size / params.median_umis
    mean = car_mean_for_detection(car_detection(params))
    car_mu = np.where(car, mean * sf, 0.0)
    own = negative_binomial(car_mu, car_nb_theta(), rng)
    car_share = car_mu.sum() / lib_size.sum()
    ambient = rng.poisson(rho * lib_size * car_share)
    return (np.where(car, own, 0) + ambient).astype(np.int64)
