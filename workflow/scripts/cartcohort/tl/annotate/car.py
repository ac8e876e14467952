"""CAR+ calls: a per-library mixture of ambient and CAR+ UMIs, a decision with a stated
error rate, and pooling over TCR clones.

Per library (:func:`fit_car_model`): the two-class model of :mod:`.mixture` on the summed
UMIs of the CAR features, offset by the cell's library size (CAR UMIs excluded): ambient
``Poisson(L a)`` in CAR- cells, ``NegBin(L b, r)`` in CAR+ cells, CAR+ fraction ``pi``.

* **Unsorted libraries** learn ``a``, ``b``, ``r`` and ``pi`` from their own cells.
* **CAR-enriched libraries** (the sheet's ``sort`` matches ``car_sorted_patterns``) hold
  almost no CAR- cells to learn the ambient rate from, so ``a`` is the median ambient
  rate of the cohort's unsorted libraries (the library's own fit only when the cohort has
  none, with a warning), and ``pi`` has a Beta prior of mean ``car_sorted_prior`` worth
  :data:`SORTED_PRIOR_STRENGTH` cells. A cell without CAR UMIs can then be CAR+: the sort
  is evidence. A sorted library without any CAR UMI is flagged (wrong feature name or
  failed capture) and its cells' CAR status is unknown (NA), not CAR-.

**Decision with a stated error rate.** Cells are ranked by posterior; the largest set
with posterior >= 0.5 whose expected false-discovery rate (mean ``1 - posterior``) is at
most ``car_fdr`` is called CAR+ (Bayesian FDR, Newton et al. 2004 Biostatistics 5:155).
In unsorted libraries a call also needs ``car_min_umis`` UMIs. Each library reports its
expected false discoveries and false-positive rate (``expected_fdr``, ``expected_fpr``) in
``tables/annotation_car_models.tsv``. ``car_method: threshold`` calls ``car_umis >=
car_min_umis`` instead. Without any CAR feature all CAR columns are missing (NA).

Clone members are pooled with a dropout-aware model (:func:`clone_aware_car`): a CAR+
cell shows zero CAR UMIs with probability ``delta`` (estimated by EM over clones), so a
clone whose CAR+ members lost the transcript is still called from the members that kept
it. A clone's prior is the mean CAR+ fraction of its members' libraries; outside sorted
libraries it needs a member with ``car_min_umis`` UMIs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy.special import expit, logit
from scipy.stats import chi2

from ...errors import CartCohortError
from ...tables import TABLES, WARNING_COLUMNS
from ._utils import clone_codes, dense_columns, nb_logpmf, pois_logpmf
from .mixture import fit_latent_classes
from .pooling import CLONE_CLIP

logger = logging.getLogger(__name__)

#: Per-cell CAR rule (``annotate.car_method``).
CarMethod = Literal["mixture", "threshold"]
#: Cells of the Beta prior on a sorted library's CAR+ fraction.
SORTED_PRIOR_STRENGTH = 20.0
#: The ambient rate is at most this share of the CAR+ rate (the two components stay
#: distinct; a fit that ends at this bound has found no separate CAR+ component).
CAR_MAX_LOW_RATIO = 0.2
#: Columns of ``tables/annotation_car_models.tsv`` (one row per sample), as registered.
CAR_MODEL_COLUMNS: tuple[str, ...] = tuple(TABLES["annotation_car_models"].columns)


@dataclass(frozen=True)
class CarModel:
    """Per-library CAR UMI model (see :func:`fit_car_model`)."""

    n_cells: int
    car_detected: bool
    ambient_rate: float
    positive_rate: float
    size: float
    positive_fraction: float
    sorted: bool = False
    ambient_source: str = "library"
    reason: str = ""

    def log_likelihood_ratio(self, car_umis: np.ndarray, *, library_size: np.ndarray,
                             dropout: float = 0.0) -> np.ndarray:
        """``log P(c | CAR+) - log P(c | CAR-)`` per cell.

        ``dropout``: probability that a CAR+ cell shows no CAR UMI at all
        (zero inflation of the CAR+ component).
        """
        c = np.asarray(car_umis, dtype=float)
        lib = np.asarray(library_size, dtype=float)
        neg = pois_logpmf(c, lib * self.ambient_rate)
        pos = nb_logpmf(c, lib * self.positive_rate, self.size)
        if dropout > 0:
            pos = np.where(c == 0, np.logaddexp(np.log(dropout), np.log1p(-dropout) + pos),
                           np.log1p(-dropout) + pos)
        return pos - neg

    def posterior(self, car_umis: np.ndarray, *, library_size: np.ndarray) -> np.ndarray:
        """Per-cell CAR+ posterior (NaN when the library has no CAR+ component)."""
        if not self.car_detected:
            return np.full(len(np.asarray(car_umis)), np.nan)
        prior = float(np.clip(self.positive_fraction, 1e-6, 1 - 1e-6))
        return expit(self.log_likelihood_ratio(car_umis, library_size=library_size)
                     + logit(prior))


def fit_car_model(
    car_umis: np.ndarray,
    *,
    library_size: np.ndarray,
    sorted_library: bool = False,
    ambient_rate: float | None = None,
    sorted_prior: float = 0.9,
    population_alpha: float = 1e-3,
) -> CarModel:
    """Two-component mixture (ambient Poisson vs CAR+ negative binomial) of one library.

    Parameters
    ----------
    car_umis
        CAR UMIs per cell (summed over CAR features).
    library_size
        Library size per cell without the CAR UMIs (offset).
    sorted_library
        The library is CAR-enriched (Beta prior on the CAR+ fraction, mean
        ``sorted_prior``, :data:`SORTED_PRIOR_STRENGTH` cells).
    ambient_rate
        Ambient CAR UMIs per UMI of library size known from elsewhere (kept fixed);
        None: learned from this library.
    sorted_prior
        Prior mean CAR+ fraction of a sorted library.
    population_alpha
        Level of the likelihood-ratio test (mixture vs ambient only, chi-square with 2
        degrees of freedom) that an unsorted library holds CAR+ cells at all.

    Returns
    -------
    CarModel
        ``car_detected`` is False when the library has no CAR UMI at all, or (unsorted)
        when the test does not find a CAR+ component separated from the ambient one (its
        ``reason`` says why); the ambient rate is then the pooled rate of all cells.
    """
    c = np.asarray(car_umis, dtype=float)
    lib = np.asarray(library_size, dtype=float)
    n = len(c)
    pooled_rate = float(c.sum() / lib.sum()) if lib.sum() > 0 else 0.0
    if n == 0 or c.sum() == 0:
        return CarModel(n, False, pooled_rate, np.nan, np.nan, 0.0, sorted_library,
                        "library", "no CAR UMIs")
    pseudo = None
    if sorted_library:
        pseudo = SORTED_PRIOR_STRENGTH * np.array([1.0 - sorted_prior, sorted_prior])
    fixed = None if ambient_rate is None else np.array([max(float(ambient_rate), 1e-12)])
    fits = []
    for start in (None, (c >= 2).astype(float)):  # two starts: EM finds local optima
        init = None if start is None else np.column_stack([1.0 - start, start]) * 0.98 + 0.01
        fits.append(fit_latent_classes(
            c, library_size=lib, design=np.array([[False], [True]]), classes=("neg", "pos"),
            fixed_low_rate=fixed, prior_pseudocounts=pseudo, max_low_ratio=CAR_MAX_LOW_RATIO,
            init=init))
    fit = max(fits, key=lambda f: (f.high_rate[0] * CAR_MAX_LOW_RATIO > f.low_rate[0] * 1.001,
                                   f.loglik))
    a, b = float(fit.low_rate[0]), float(fit.high_rate[0])
    source = "library" if ambient_rate is None else "cohort ambient share"
    if not sorted_library:
        null_ll = float(np.sum(pois_logpmf(c, lib * max(pooled_rate, 1e-12))))
        p_value = float(chi2.sf(2.0 * max(fit.loglik - null_ll, 0.0), df=2))
        at_bound = ambient_rate is None and b * CAR_MAX_LOW_RATIO <= a * (1.0 + 1e-3)
        if p_value >= population_alpha or at_bound:
            why = ("the CAR+ component is not separated from the ambient one (rate ratio at "
                   f"its bound {1 / CAR_MAX_LOW_RATIO:g})" if at_bound else
                   f"likelihood-ratio test of a CAR+ component p = {p_value:.2g} >= "
                   f"car_population_alpha {population_alpha:g}")
            return CarModel(n, False, pooled_rate, np.nan, np.nan, 0.0, False, source,
                            f"no CAR+ population: {why}")
    return CarModel(n, True, a, b, float(fit.size[0]), float(fit.prior[1]), sorted_library,
                    source, "")


def fdr_calls(posterior: np.ndarray, *, fdr: float, eligible: np.ndarray | None = None,
              ) -> np.ndarray:
    """The largest set of cells with posterior >= 0.5 and mean ``1 - posterior`` <= ``fdr``.

    Parameters
    ----------
    posterior
        Per-cell posterior of the positive class (NaN: never called).
    fdr
        Highest expected false-discovery rate of the called set.
    eligible
        Cells that may be called (default all).

    Returns
    -------
    numpy.ndarray
        Boolean calls.
    """
    p = np.nan_to_num(np.asarray(posterior, dtype=float), nan=0.0)
    ok = p >= 0.5
    if eligible is not None:
        ok &= np.asarray(eligible, dtype=bool)
    idx = np.flatnonzero(ok)
    calls = np.zeros(len(p), dtype=bool)
    if len(idx) == 0:
        return calls
    order = idx[np.argsort(-p[idx], kind="stable")]
    mean_fd = np.cumsum(1.0 - p[order]) / np.arange(1, len(order) + 1)
    k = int(np.searchsorted(mean_fd, fdr, side="right"))
    calls[order[:k]] = True
    return calls


def is_sorted_library(sort: object, *, patterns: Sequence[str]) -> bool:
    """True when a sheet ``sort`` value names a CAR enrichment (case-insensitive substring
    match of any of ``patterns``, e.g. ``CAR+`` matches ``CD3+CAR+``)."""
    if sort is None or (isinstance(sort, float) and np.isnan(sort)):
        return False
    text = str(sort).upper()
    return any(str(p).upper() in text for p in patterns if str(p))


def pooled_car_rate(car_umis: np.ndarray, *, library_size: np.ndarray) -> float:
    """A library's CAR UMIs per UMI of library size, all cells pooled."""
    total = float(np.sum(library_size))
    return float(np.sum(car_umis)) / total if total > 0 else 0.0


def ambient_share(models: Mapping[str, CarModel], pooled: Mapping[str, float]) -> float | None:
    """The cohort's ambient CAR share: median over the unsorted libraries whose mixture
    separates a CAR+ component of ``ambient_rate / pooled CAR rate`` (None if none does).

    A library's ambient RNA is its own cells' RNA, so its ambient CAR rate is a share of
    its pooled CAR rate; the share (about the ambient RNA fraction) is a property of the
    chemistry and the handling, common to the cohort's libraries.
    """
    shares = [m.ambient_rate / pooled[s] for s, m in models.items()
              if not m.sorted and m.car_detected and m.ambient_source == "library"
              and pooled[s] > 0]
    return float(np.median(shares)) if shares else None


def fit_car_models(car_umis: np.ndarray, *, library_size: np.ndarray, sample: np.ndarray,
                   sorted_samples: set[str], sorted_prior: float,
                   population_alpha: float = 1e-3) -> dict[str, CarModel]:
    """One :class:`CarModel` per library (module docstring).

    Unsorted libraries are fitted on their own first. Their median ambient share
    (:func:`ambient_share`) then fixes the ambient rate of the CAR-sorted libraries, and of
    the unsorted libraries too small to separate the two components on their own.
    """
    c = np.asarray(car_umis, dtype=float)
    lib = np.asarray(library_size, dtype=float)
    idx = {str(s): np.flatnonzero(sample == s) for s in pd.unique(sample)}
    pooled = {s: pooled_car_rate(c[i], library_size=lib[i]) for s, i in idx.items()}
    kw = {"sorted_prior": sorted_prior, "population_alpha": population_alpha}
    models = {s: fit_car_model(c[i], library_size=lib[i], **kw)
              for s, i in idx.items() if s not in sorted_samples}
    share = ambient_share(models, pooled)
    for s, i in idx.items():
        unseparated = s in models and "not separated" in models[s].reason
        if s not in sorted_samples and not unseparated:
            continue
        if share is None:
            if s in sorted_samples:
                logger.warning("library %s is CAR-sorted but no unsorted library of the cohort "
                               "separates CAR+ from ambient CAR UMIs: its ambient rate is "
                               "learned from the sorted library itself, where CAR- cells are "
                               "few", s)
                models[s] = fit_car_model(c[i], library_size=lib[i], sorted_library=True, **kw)
            continue
        models[s] = fit_car_model(c[i], library_size=lib[i], sorted_library=s in sorted_samples,
                                  ambient_rate=share * pooled[s], **kw)
    if share is not None:
        logger.info("cohort ambient CAR share: %.3g of a library's pooled CAR rate", share)
    return {s: models[s] for s in sorted(models)}


def _library_row(s: str, model: CarModel, post: np.ndarray, called: np.ndarray,
                 status: str) -> dict[str, Any]:
    """One row of :data:`CAR_MODEL_COLUMNS`."""
    p = np.nan_to_num(post, nan=0.0)
    fp = float(np.sum(1.0 - p[called]))
    negatives = float(np.sum(1.0 - p))
    return {"sample": s, "sorted": model.sorted, "car_status": status,
            "ambient_rate": model.ambient_rate, "ambient_source": model.ambient_source,
            "positive_rate": model.positive_rate, "size": model.size,
            "positive_fraction": model.positive_fraction, "n_cells": model.n_cells,
            "n_called": int(called.sum()), "expected_false_positives": fp,
            "expected_fdr": fp / called.sum() if called.any() else 0.0,
            "expected_fpr": fp / negatives if negatives > 0 else 0.0, "reason": model.reason}


def call_car_cells(
    car_umis: np.ndarray,
    *,
    library_size: np.ndarray,
    sample: np.ndarray,
    method: CarMethod = "mixture",
    min_umis: int = 1,
    sorted_samples: set[str] | None = None,
    sorted_prior: float = 0.9,
    fdr: float = 0.1,
    population_alpha: float = 1e-3,
) -> tuple[pd.DataFrame, dict[str, CarModel], pd.DataFrame]:
    """Per-cell CAR+ calls, one mixture per library (module docstring).

    Parameters
    ----------
    car_umis
        CAR UMIs per cell.
    library_size
        Library size per cell without CAR UMIs.
    sample
        Library of each cell.
    method
        ``mixture`` (Bayesian-FDR decision) or ``threshold`` (``car_umis >= min_umis``).
    min_umis
        Minimum CAR UMIs of a cell of an unsorted library called CAR+ (>= 1).
    sorted_samples
        CAR-enriched libraries.
    sorted_prior
        Prior mean CAR+ fraction of a sorted library.
    fdr
        Expected false-discovery rate of each library's CAR+ calls.
    population_alpha
        Level of each unsorted library's test for a CAR+ population (:func:`fit_car_model`).

    Returns
    -------
    (pandas.DataFrame, dict, pandas.DataFrame)
        Per cell ``car_posterior`` and ``car_positive_cell`` (nullable boolean: NA in a
        sorted library without CAR UMIs); each library's model; the per-library table
        (:data:`CAR_MODEL_COLUMNS`).
    """
    _check_car_settings(method, min_umis, fdr, sorted_prior)
    c = np.asarray(car_umis, dtype=float)
    lib = np.asarray(library_size, dtype=float)
    sample = np.asarray(sample, dtype=object)
    sorted_samples = set(sorted_samples or ())
    models = fit_car_models(c, library_size=lib, sample=sample, sorted_samples=sorted_samples,
                            sorted_prior=sorted_prior, population_alpha=population_alpha)
    posterior = np.full(len(c), np.nan)
    positive = pd.array(np.zeros(len(c), dtype=bool), dtype="boolean")
    rows = []
    for s, model in models.items():
        idx = np.flatnonzero(sample == s)
        post = model.posterior(c[idx], library_size=lib[idx])
        posterior[idx] = post
        if method == "threshold":
            called = c[idx] >= min_umis
        else:
            called = fdr_calls(post, fdr=fdr, eligible=None if model.sorted
                               else c[idx] >= min_umis)
        status = ("ok" if model.car_detected else
                  "no CAR UMIs" if c[idx].sum() == 0 else "no CAR+ population")
        if model.sorted and not model.car_detected:
            status = "unknown"
            logger.warning("library %s is CAR-sorted but has no CAR UMI at all: wrong CAR "
                           "feature name or failed CAR capture? Its cells' CAR status is "
                           "unknown (NA), not CAR-", s)
            positive[idx] = pd.NA
        else:
            positive[idx] = called
        rows.append(_library_row(s, model, post, called, status))
        _log_library(s, model, rows[-1], method)
    table = pd.DataFrame(rows, columns=list(CAR_MODEL_COLUMNS))
    return (pd.DataFrame({"car_posterior": posterior, "car_positive_cell": positive}), models,
            table)


def _log_library(s: str, model: CarModel, row: dict[str, Any], method: str) -> None:
    logger.info("library %s%s: ambient %.3g CAR UMIs per 10k (%s), CAR+ %.3g, size %.2f, "
                "CAR+ fraction %.2f; %d of %d cells called CAR+ (%s), expected FDR %.3f",
                s, " (CAR-sorted)" if model.sorted else "", model.ambient_rate * 1e4,
                model.ambient_source, model.positive_rate * 1e4, model.size,
                model.positive_fraction, row["n_called"], model.n_cells, method,
                row["expected_fdr"])


def _check_car_settings(method: str, min_umis: int, fdr: float, sorted_prior: float) -> None:
    if method not in ("mixture", "threshold"):
        raise CartCohortError(
            f"annotate.car_method must be 'mixture' or 'threshold', got {method!r}")
    if int(min_umis) < 1:
        raise CartCohortError(f"annotate.car_min_umis must be >= 1, got {min_umis}: a cell "
                              "without any CAR UMI cannot be called CAR+ on its own evidence")
    if not 0.0 < fdr < 0.5:
        raise CartCohortError(f"annotate.car_fdr must be in (0, 0.5), got {fdr}")
    if not 0.0 < sorted_prior < 1.0:
        raise CartCohortError(f"annotate.car_sorted_prior must be in (0, 1), got {sorted_prior}")


def _member_log_likelihoods(cc: np.ndarray, ll: np.ndarray, ss: np.ndarray,
                            models: Mapping[str, CarModel]) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell ``log P(c | +, not dropped)`` and ``log P(c | -)`` under its sample's model."""
    log_pos = np.empty(len(cc))
    log_neg = np.empty(len(cc))
    for s in pd.unique(ss):
        m = ss == s
        mod = models[str(s)]
        log_pos[m] = nb_logpmf(cc[m], ll[m] * mod.positive_rate, mod.size)
        log_neg[m] = pois_logpmf(cc[m], ll[m] * mod.ambient_rate)
    return log_pos, log_neg


def _clone_posterior(log_pos: np.ndarray, log_neg: np.ndarray, zero: np.ndarray,
                     code: np.ndarray, clone_logit_prior: np.ndarray,
                     delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Clone CAR+ posteriors at dropout ``delta``, and each member's ``log P(c | +)``."""
    lpos = np.where(zero, np.logaddexp(np.log(delta), np.log1p(-delta) + log_pos),
                    np.log1p(-delta) + log_pos)
    llr = np.clip(lpos - log_neg, -CLONE_CLIP, CLONE_CLIP)
    score = np.bincount(code, weights=llr, minlength=len(clone_logit_prior))
    return expit(score + clone_logit_prior), lpos


def _fit_clone_dropout(log_pos: np.ndarray, log_neg: np.ndarray, zero: np.ndarray,
                       code: np.ndarray, clone_logit_prior: np.ndarray,
                       max_iter: int) -> tuple[np.ndarray, float]:
    """EM over clones: clone CAR+ posteriors and the dropout ``delta`` (clone priors fixed)."""
    delta = 0.1
    post = expit(clone_logit_prior)
    for _ in range(max_iter):
        post, lpos = _clone_posterior(log_pos, log_neg, zero, code, clone_logit_prior, delta)
        # M-step: dropout = responsibility of dropout for the zeros of CAR+ clones
        w = post[code]
        z_drop = np.where(zero, np.exp(np.log(delta) - lpos), 0.0)
        denom = float(np.sum(w))
        new_delta = float(np.clip(np.sum(w * z_drop) / denom, 1e-4, 0.999)) if denom > 0 else delta
        done = abs(new_delta - delta) < 1e-6
        delta = new_delta
        if done:
            break
    return post, delta


def clone_aware_car(
    car_umis: np.ndarray,
    *,
    library_size: np.ndarray,
    sample: np.ndarray,
    clone_id: pd.Series | np.ndarray,
    models: Mapping[str, CarModel],
    cell_call: np.ndarray,
    min_umis: int = 1,
    min_members: int = 2,
    max_iter: int = 200,
    dropout: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Clone-level CAR status pooled over members, with CAR transcript dropout.

    Only cells of libraries with CAR UMIs take part. Under "clone CAR+" each member's
    count is 0 with probability ``delta`` (dropout) and otherwise follows its library's
    CAR+ component; under "clone CAR-" it follows the ambient Poisson. A clone's prior is
    the mean CAR+ fraction of its members' libraries; ``delta`` is estimated by EM over
    the clones with ``min_members`` or more members. A clone is CAR+ when its posterior
    is >= 0.5 and, unless a member is in a CAR-sorted library, some member has
    ``min_umis`` UMIs. ``dropout`` fixes ``delta`` instead (a frozen cohort's, when one
    new library is scored: its few clones cannot estimate it).

    Returns
    -------
    (final, clone_posterior, pooled, params)
        Final calls (clone call for pooled cells, ``cell_call`` elsewhere, NA as False),
        the clone posterior (NaN for cells not pooled), the pooled mask and the fitted
        ``{'dropout', 'n_clones'}``.
    """
    c = np.asarray(car_umis, dtype=float)
    lib = np.asarray(library_size, dtype=float)
    sample = np.asarray(sample, dtype=object)
    codes = clone_codes(clone_id)
    eligible = np.array([models[str(s)].car_detected for s in sample], dtype=bool)
    codes = np.where(eligible, codes, -1)
    final = np.asarray(pd.array(cell_call, dtype="boolean").fillna(False), dtype=bool).copy()
    clone_post = np.full(len(c), np.nan)
    has = codes >= 0
    params = {"dropout": np.nan, "n_clones": 0}
    if not has.any():
        return final, clone_post, np.zeros(len(c), dtype=bool), params
    size = np.bincount(codes[has], minlength=codes.max() + 1)
    member = has & (size[np.where(has, codes, 0)] >= min_members)
    if not member.any():
        return final, clone_post, member, params
    idx = np.flatnonzero(member)
    cc, ll, ss = c[idx], lib[idx], sample[idx]
    _, code = np.unique(codes[idx], return_inverse=True)
    n_clones = code.max() + 1
    log_pos, log_neg = _member_log_likelihoods(cc, ll, ss, models)
    frac = np.array([np.clip(models[str(s)].positive_fraction, 1e-4, 1 - 1e-4) for s in ss])
    n_mem = np.bincount(code, minlength=n_clones)
    clone_prior = np.bincount(code, weights=frac, minlength=n_clones) / n_mem
    if dropout is None:
        post, delta = _fit_clone_dropout(log_pos, log_neg, cc == 0, code, logit(clone_prior),
                                         max_iter)
    else:
        delta = float(dropout)
        post, _ = _clone_posterior(log_pos, log_neg, cc == 0, code, logit(clone_prior), delta)
    in_sorted = np.bincount(code, weights=[float(models[str(s)].sorted) for s in ss],
                            minlength=n_clones) > 0
    any_umis = np.bincount(code, weights=(cc >= min_umis).astype(float), minlength=n_clones) > 0
    clone_call = (post >= 0.5) & (any_umis | in_sorted)
    final[idx] = clone_call[code]
    clone_post[idx] = post[code]
    params = {"dropout": delta, "n_clones": int(n_clones)}
    logger.info("clone-aware CAR: %d clones with >= %d cells in libraries with CAR UMIs; "
                "%s CAR dropout %.2f, %d clones called CAR+", n_clones, min_members,
                "estimated" if dropout is None else "frozen", delta, int(clone_call.sum()))
    return final, clone_post, member, params


def car_feature_mask(gex: ad.AnnData, *, car_features: Sequence[str]) -> np.ndarray:
    """Boolean mask of the CAR features: ``var['is_car']`` or a name in ``car_features``."""
    mask = np.zeros(gex.n_vars, dtype=bool)
    if "is_car" in gex.var:
        mask |= gex.var["is_car"].fillna(False).to_numpy(dtype=bool)
    if car_features:
        mask |= gex.var_names.isin(list(car_features))
    return mask


def car_counts(gex: ad.AnnData, counts: Any, *, car_features: Sequence[str],
               total: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CAR features, CAR UMIs and CAR-free library size of every cell (``total``: the
    cells' total counts when ``counts`` holds only some genes; default its row sums).

    Returns
    -------
    (mask, car_umis, library_size)
        The CAR-feature mask (:func:`car_feature_mask`), the summed CAR UMIs per cell
        (zeros without a CAR feature) and the library size without them (>= 1).
    """
    car_mask = car_feature_mask(gex, car_features=car_features)
    if total is None:
        total = np.asarray(counts.sum(axis=1)).ravel()
    total = np.asarray(total, dtype=float)
    if total.shape != (gex.n_obs,):
        raise ValueError(f"total has shape {total.shape}, expected ({gex.n_obs},)")
    car_umis = (dense_columns(counts, np.flatnonzero(car_mask)).sum(axis=1)
                if car_mask.any() else np.zeros(gex.n_obs))
    library = np.maximum(total - car_umis, 1.0)
    return car_mask, car_umis, library


def car_warnings(car_models: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``warnings.tsv`` for the CAR models: a CAR-sorted library without any CAR
    UMI (``car_status == "unknown"``; ``count``: its cells).

    Parameters
    ----------
    car_models
        ``tables/annotation_car_models.tsv`` (:data:`CAR_MODEL_COLUMNS`).
    """
    rows = [dict(
        sample=str(r["sample"]), step="annotate", check="car_sorted_without_umis",
        count=int(r["n_cells"]),
        detail="the sample sheet's sort marks the library CAR-enriched, but none of its cells "
               "has a CAR UMI: its cells' CAR status is unknown (NA), not CAR-",
        action="check that config car_features names the CAR feature of this library's "
               "reference and that the CAR was captured; if the library is not CAR-enriched, "
               "correct its sort in the sample sheet")
        for _, r in car_models.iterrows() if r.get("car_status") == "unknown"]
    return pd.DataFrame(rows, columns=list(WARNING_COLUMNS))


def _missing_car_columns(gex: ad.AnnData, car_features: Sequence[str]) -> None:
    logger.warning("no CAR feature in the data (config car_features=%s, no var['is_car']): "
                   "car_positive, car_positive_cell and car_umis are left missing (NA)",
                   list(car_features))
    obs = gex.obs
    obs["car_positive_naive"] = pd.array([pd.NA] * gex.n_obs, dtype="boolean")
    obs["car_umis"] = pd.array([pd.NA] * gex.n_obs, dtype="Int64")
    obs["car_posterior"] = np.nan
    obs["car_positive_cell"] = pd.array([pd.NA] * gex.n_obs, dtype="boolean")
    obs["car_positive"] = pd.array([pd.NA] * gex.n_obs, dtype="boolean")


def annotate_car(
    gex: ad.AnnData,
    car_umis: np.ndarray,
    *,
    car_mask: np.ndarray,
    car_features: Sequence[str],
    library_size: np.ndarray,
    clone_id: pd.Series,
    clone_aware: bool,
    method: CarMethod,
    min_umis: int,
    sorted_patterns: Sequence[str] = ("CAR+",),
    sorted_prior: float = 0.9,
    fdr: float = 0.1,
    population_alpha: float = 1e-3,
    clone_dropout: float | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """CAR calls of every cell, added to ``gex.obs`` in place.

    Adds ``car_umis``, ``car_posterior``, ``car_positive_cell`` (own evidence and the
    library's sort), ``car_positive`` (clone-aware when ``clone_aware``; then also
    ``car_clone_posterior``) and ``car_positive_naive`` (>= 1 CAR UMI); all missing (NA)
    when ``car_mask`` selects no feature. A library is CAR-sorted when its ``obs['sort']``
    matches one of ``sorted_patterns`` (:func:`is_sorted_library`). ``clone_dropout``
    fixes the clone model's CAR dropout (:func:`clone_aware_car`).

    Returns
    -------
    (car_models, clone_params)
        One row per library (:data:`CAR_MODEL_COLUMNS`, ``clone_dropout`` the clone
        model's; empty without a CAR feature) and the fitted clone parameters of
        :func:`clone_aware_car` (empty when not clone-aware).
    """
    if not car_mask.any():
        _missing_car_columns(gex, car_features)
        return pd.DataFrame(columns=list(CAR_MODEL_COLUMNS)), {}
    obs = gex.obs
    sample = obs["sample"].astype(str).to_numpy()
    sort = (obs["sort"].astype(object) if "sort" in obs else pd.Series(None, index=obs.index))
    sorted_samples = {s for s, v in zip(sample, sort.to_numpy())
                      if is_sorted_library(v, patterns=sorted_patterns)}
    if sorted_samples:
        logger.info("CAR-sorted libraries (sort matches %s): %s", list(sorted_patterns),
                    sorted(sorted_samples))
    car_params: dict[str, float] = {}
    logger.info("CAR features: %s", list(gex.var_names[car_mask]))
    cells_car, models, table = call_car_cells(
        car_umis, library_size=library_size, sample=sample, method=method, min_umis=min_umis,
        sorted_samples=sorted_samples, sorted_prior=sorted_prior, fdr=fdr,
        population_alpha=population_alpha)
    final = cells_car["car_positive_cell"].array
    if clone_aware:
        final, clone_post, _, car_params = clone_aware_car(
            car_umis, library_size=library_size, sample=sample, clone_id=clone_id, models=models,
            cell_call=final, min_umis=min_umis, dropout=clone_dropout)
        obs["car_clone_posterior"] = clone_post
    table["clone_dropout"] = float(car_params.get("dropout", np.nan))
    unknown = cells_car["car_positive_cell"].isna().to_numpy()
    obs["car_umis"] = pd.array(car_umis.astype(np.int64), dtype="Int64")
    obs["car_posterior"] = cells_car["car_posterior"].to_numpy()
    obs["car_positive_cell"] = cells_car["car_positive_cell"].array
    final = pd.array(final, dtype="boolean")
    final[unknown] = pd.NA
    obs["car_positive"] = final
    obs["car_positive_naive"] = pd.array(car_umis >= 1, dtype="boolean")
    return table, car_params
