"""Latent-class count model of marker UMIs: ambient Poisson vs negative binomial.

Marker UMI counts ``c`` of cell ``i`` with library size ``L_i`` are modelled as a mixture
of a *low* state ``Poisson(L_i a)`` (ambient RNA / background) and a *high* state
``NegBin(mean L_i b, size r)``, with ``r >= 1`` so the evidence for the high state never
decreases with the count. Parameters are fitted by EM on the data themselves
(:func:`fit_latent_classes`): a two-component mixture with library-size offset,
generalised to several genes (lineage: classes CD4/CD8/DN/DP over CD4 and CD8A+CD8B).
A zero count is therefore weak evidence (``L_i (b - a)`` nats at most), never proof of
the other lineage. No random numbers are drawn.

Optional *profile* columns (``free_counts``: e.g. the summed UMIs of the genes of the
CD4 and of the CD8 transcriptional programs) follow one negative-binomial rate per
*profile* (e.g. CD4-like and CD8-like transcriptomes), learned by EM. Each class is a
mixture of the profiles: a one-hot row of ``profile_weight`` ties a class to one profile
(a CD4 cell has the CD4-like transcriptome), any other row is learned (DN cells may look
like either, in proportions the data say). So the programs tell CD4 from CD8 dropout,
and they never make DN the class of cells whose programs are in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import logsumexp

from ...errors import CartCohortError
from ._utils import as_2d, nb_logpmf, normalise_log, pois_logpmf


@dataclass(frozen=True)
class LatentClassFit:
    """A fitted latent-class count model (see :func:`fit_latent_classes`).

    ``design[k, g]`` is True when gene (set) ``g`` is in its high state in class ``k``.
    Rates are per UMI of library size. With profile columns, ``free_rate[p, f]`` is the
    rate of column ``f`` under profile ``p`` (NB size ``free_size[f]``) and
    ``profile_weight[k, p]`` the share of profile ``p`` in class ``k``; all None without.
    """

    classes: tuple[str, ...]
    design: np.ndarray
    low_rate: np.ndarray
    high_rate: np.ndarray
    size: np.ndarray
    prior: np.ndarray
    loglik: float
    n_iter: int
    free_rate: np.ndarray | None = None
    free_size: np.ndarray | None = None
    profile_weight: np.ndarray | None = None

    def marker_log_likelihood(self, counts: np.ndarray, *,
                              library_size: np.ndarray) -> np.ndarray:
        """Per-cell log-likelihood of each class from the marker columns only."""
        counts = as_2d(counts)
        lo = pois_logpmf(counts, library_size[:, None] * self.low_rate[None, :])
        hi = np.column_stack([
            nb_logpmf(counts[:, g], library_size * self.high_rate[g], float(self.size[g]))
            for g in range(counts.shape[1])
        ])
        return lo @ (~self.design).T.astype(float) + hi @ self.design.T.astype(float)

    def profile_log_likelihood(self, free_counts: np.ndarray, *,
                               library_size: np.ndarray) -> np.ndarray:
        """Per-cell log-likelihood of each profile, shape ``(n_cells, n_profiles)``."""
        free = as_2d(free_counts)
        return np.column_stack([
            sum(nb_logpmf(free[:, f], library_size * self.free_rate[p, f],
                          float(self.free_size[f])) for f in range(free.shape[1]))
            for p in range(self.free_rate.shape[0])
        ])

    def log_likelihood(self, counts: np.ndarray, *, library_size: np.ndarray,
                       free_counts: np.ndarray | None = None) -> np.ndarray:
        """Per-cell log-likelihood of each class, shape ``(n_cells, n_classes)``.

        ``free_counts`` is required when the model has profile columns, ignored
        otherwise."""
        out = self.marker_log_likelihood(counts, library_size=library_size)
        if self.free_rate is None:
            return out
        if free_counts is None:
            raise ValueError("this model has profile columns: pass free_counts")
        lp = self.profile_log_likelihood(free_counts, library_size=library_size)
        with np.errstate(divide="ignore"):
            logw = np.log(self.profile_weight)
        return out + logsumexp(lp[:, None, :] + logw[None, :, :], axis=2)

    def posterior(self, counts: np.ndarray, *, library_size: np.ndarray,
                  free_counts: np.ndarray | None = None) -> np.ndarray:
        """Per-cell class posterior (own counts only)."""
        return normalise_log(self.log_likelihood(counts, library_size=library_size,
                                                 free_counts=free_counts)
                             + np.log(self.prior)[None, :])


def _fit_size(c: np.ndarray, mu: np.ndarray, w: np.ndarray, *, min_size: float,
              max_size: float) -> float:
    """Weighted ML size (inverse dispersion) of a negative binomial with known means."""
    keep = w > 1e-8
    c, mu, w = c[keep], mu[keep], w[keep]
    if w.sum() <= 1e-6:
        return max_size

    def nll(log_size: float) -> float:
        return -float(np.sum(w * nb_logpmf(c, mu, float(np.exp(log_size)))))

    res = optimize.minimize_scalar(nll, bounds=(np.log(min_size), np.log(max_size)),
                                   method="bounded", options={"xatol": 1e-3})
    return float(np.exp(res.x))


def _initial_responsibilities(counts: np.ndarray, design: np.ndarray) -> np.ndarray:
    """Class responsibilities from marker detection alone."""
    det = (counts > 0).astype(float)
    p_hi = 0.05 + 0.9 * det
    logr = np.log(p_hi) @ design.T.astype(float) + np.log(1 - p_hi) @ (~design).T.astype(float)
    return normalise_log(logr)


def _update_prior(resp: np.ndarray, min_prior: float,
                  pseudocounts: np.ndarray | None = None) -> np.ndarray:
    """M-step (MAP with Dirichlet ``pseudocounts``) of the class priors, floored."""
    prior = resp.sum(axis=0) + (0.0 if pseudocounts is None else pseudocounts)
    prior = prior / prior.sum()
    prior = np.maximum(prior, min_prior)
    prior /= prior.sum()
    return prior


def _update_rates(resp: np.ndarray, counts: np.ndarray, lib: np.ndarray, design: np.ndarray,
                  *, it: int, low: np.ndarray, high: np.ndarray, size: np.ndarray,
                  min_size: float, max_size: float, max_low_ratio: float,
                  fixed_low: np.ndarray | None = None) -> None:
    """M-step of the per-gene rates (and, on some iterations, sizes), in place."""
    for g in range(counts.shape[1]):
        w_hi = resp[:, design[:, g]].sum(axis=1)
        w_lo = 1.0 - w_hi
        high[g] = max(np.sum(w_hi * counts[:, g]) / max(np.sum(w_hi * lib), 1e-12), 1e-12)
        if fixed_low is not None:
            low[g] = fixed_low[g]
            high[g] = max(high[g], low[g] / max_low_ratio)
        else:
            low[g] = max(np.sum(w_lo * counts[:, g]) / max(np.sum(w_lo * lib), 1e-12), 1e-12)
            low[g] = min(low[g], max_low_ratio * high[g])
        if it % 5 == 1 or it <= 3:
            size[g] = _fit_size(counts[:, g], lib * high[g], w_hi, min_size=min_size,
                                max_size=max_size)


#: Smallest NB size of a profile column (a column that varies a lot within each profile
#: is fitted as very overdispersed, hence weak evidence).
FREE_MIN_SIZE = 0.05
#: Dirichlet pseudo-count of each profile in a learned row of ``profile_weight``.
PROFILE_PSEUDOCOUNT = 1.0


def _update_profiles(joint: np.ndarray, free: np.ndarray, lib: np.ndarray, *, it: int,
                     fit: dict, learned: np.ndarray, max_size: float) -> None:
    """M-step of the profile rates, sizes and learned class-profile weights, in place.

    ``joint`` is ``(n_cells, n_classes, n_profiles)`` responsibilities."""
    s = joint.sum(axis=1)  # (n_cells, n_profiles)
    rate, size, weight = fit["rate"], fit["size"], fit["weight"]
    for f in range(free.shape[1]):
        rate[:, f] = np.maximum((s * free[:, [f]]).sum(axis=0)
                                / np.maximum(s.T @ lib, 1e-12), 1e-12)
        if it % 5 == 1 or it <= 3:
            size[f] = _fit_size(np.repeat(free[:, f], s.shape[1]),
                                (lib[:, None] * rate[None, :, f]).ravel(), s.ravel(),
                                min_size=FREE_MIN_SIZE, max_size=max_size)
    acc = joint.sum(axis=0) + PROFILE_PSEUDOCOUNT
    weight[learned] = (acc / acc.sum(axis=1, keepdims=True))[learned]


def _profile_setup(free_counts: np.ndarray, profile_weight: np.ndarray | None,
                   n_classes: int) -> dict:
    """Checked profile columns and initial class-profile weights for :func:`_em`."""
    if profile_weight is None:
        raise ValueError("free_counts needs profile_weight")
    weight = np.asarray(profile_weight, dtype=float)
    if weight.shape[0] != n_classes or not np.allclose(weight.sum(axis=1), 1.0):
        raise ValueError("profile_weight must have one row per class, summing to 1")
    return {"free": as_2d(free_counts).astype(float), "weight": weight.copy()}


def fit_latent_classes(
    counts: np.ndarray,
    *,
    library_size: np.ndarray,
    design: np.ndarray,
    classes: Sequence[str],
    min_prior: float = 1e-4,
    min_size: float = 1.0,
    max_size: float = 1e4,
    max_low_ratio: float = 0.2,
    max_iter: int = 300,
    tol: float = 1e-7,
    fixed_low_rate: np.ndarray | None = None,
    prior_pseudocounts: np.ndarray | None = None,
    init: np.ndarray | None = None,
    free_counts: np.ndarray | None = None,
    profile_weight: np.ndarray | None = None,
) -> LatentClassFit:
    """EM fit of a latent-class model of marker counts with library-size offsets.

    In class ``k`` the counts of gene (set) ``g`` are ``NegBin(L b_g, r_g)``
    when ``design[k, g]`` (high state), else ``Poisson(L a_g)`` (low/ambient).

    Parameters
    ----------
    counts
        ``(n_cells,)`` or ``(n_cells, n_genes)`` UMI counts.
    library_size
        Total UMIs per cell (the offset), > 0.
    design
        Boolean ``(n_classes, n_genes)``.
    classes
        Class names.
    min_prior
        Floor of every class prior (keeps rare classes alive).
    min_size, max_size
        Bounds of the negative-binomial size; ``min_size >= 1`` keeps the
        likelihood ratio monotone in the count.
    max_low_ratio
        The low rate is kept at or below ``max_low_ratio`` times the high rate,
        so the two states stay distinct (without it, a sample made almost only
        of high cells can end with the low state fitted to part of the high ones).
    max_iter, tol
        EM stopping rule (relative change of the log-likelihood).
    fixed_low_rate
        Per-gene low (ambient) rates known from elsewhere, kept fixed (e.g. a CAR-sorted
        library's ambient rate, learned from the cohort's unsorted libraries).
    prior_pseudocounts
        Dirichlet pseudo-counts of the class priors (MAP instead of ML).
    init
        ``(n_cells, n_classes)`` initial responsibilities (default: from marker
        detection alone).
    free_counts, profile_weight
        ``(n_cells, n_free)`` profile columns (module docstring) and the initial
        ``(n_classes, n_profiles)`` class-profile weights (rows sum to 1; one-hot rows
        stay fixed, the others are learned, MAP with :data:`PROFILE_PSEUDOCOUNT`).

    Returns
    -------
    LatentClassFit
        Per-gene low and high rates (per UMI of library size) and sizes, class
        priors, the final log-likelihood and the number of EM iterations.
    """
    counts = as_2d(counts)
    lib = np.asarray(library_size, dtype=float)
    design = np.asarray(design, dtype=bool)
    n_genes = counts.shape[1]
    n_classes = design.shape[0]
    if design.shape[1] != n_genes:
        raise ValueError("design must have one column per gene")
    if np.any(lib <= 0):
        raise CartCohortError("library sizes must be positive")
    resp = (_initial_responsibilities(counts, design) if init is None
            else np.asarray(init, dtype=float))
    m_step = {"min_prior": min_prior, "pseudocounts": prior_pseudocounts, "min_size": min_size,
              "max_size": max_size, "max_low_ratio": max_low_ratio, "fixed_low": fixed_low_rate}
    if free_counts is not None:
        m_step.update(_profile_setup(free_counts, profile_weight, n_classes))
    return _em(counts, lib, design, tuple(classes), resp, n_classes=n_classes,
               max_iter=max_iter, tol=tol, m_step=m_step)


def _em(counts: np.ndarray, lib: np.ndarray, design: np.ndarray, classes: tuple[str, ...],
        resp: np.ndarray, *, n_classes: int, max_iter: int, tol: float,
        m_step: dict) -> LatentClassFit:
    """The EM iterations of :func:`fit_latent_classes` from responsibilities ``resp``."""
    n_genes = counts.shape[1]
    low = np.empty(n_genes)
    high = np.empty(n_genes)
    size = np.full(n_genes, 10.0)
    prior = np.full(n_classes, 1.0 / n_classes)
    free = m_step.get("free")
    prof: dict = {}
    joint = None
    if free is not None:
        weight = m_step["weight"]
        prof = {"rate": np.empty((weight.shape[1], free.shape[1])),
                "size": np.full(free.shape[1], 10.0), "weight": weight,
                "learned": (weight > 0).sum(axis=1) > 1}
        joint = resp[:, :, None] * weight[None, :, :]
    prev = -np.inf
    loglik = -np.inf
    it = 0
    for it in range(1, max_iter + 1):
        prior = _update_prior(resp, m_step["min_prior"], m_step["pseudocounts"])
        _update_rates(resp, counts, lib, design, it=it, low=low, high=high, size=size,
                      min_size=m_step["min_size"], max_size=m_step["max_size"],
                      max_low_ratio=m_step["max_low_ratio"], fixed_low=m_step["fixed_low"])
        if free is not None:
            _update_profiles(joint, free, lib, it=it, fit=prof, learned=prof["learned"],
                             max_size=m_step["max_size"])
        fit = LatentClassFit(classes, design, low.copy(), high.copy(), size.copy(),
                             prior.copy(), loglik, it, *_profile_fields(prof))
        # E-step
        logp = fit.marker_log_likelihood(counts, library_size=lib) + np.log(prior)[None, :]
        if free is not None:
            with np.errstate(divide="ignore"):
                logj = (logp[:, :, None] + np.log(fit.profile_weight)[None, :, :]
                        + fit.profile_log_likelihood(free, library_size=lib)[:, None, :])
            norm = logsumexp(logj, axis=(1, 2))
            joint = np.exp(logj - norm[:, None, None])
            resp = joint.sum(axis=2)
        else:
            norm = logsumexp(logp, axis=1)
            resp = np.exp(logp - norm[:, None])
        loglik = float(norm.sum())
        if np.isfinite(prev) and abs(loglik - prev) <= tol * abs(prev):
            break
        prev = loglik
    return LatentClassFit(classes, design, low, high, size, prior, loglik, it,
                          *_profile_fields(prof))


def _profile_fields(prof: dict) -> tuple:
    """``(free_rate, free_size, profile_weight)`` copies, or Nones without profiles."""
    if not prof:
        return None, None, None
    return prof["rate"].copy(), prof["size"].copy(), prof["weight"].copy()
