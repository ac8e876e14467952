"""CAR+ calls: a per-sample mixture of ambient and CAR+ UMIs, pooled over TCR clones.

Per sample (:func:`fit_car_model`): the mixture of :mod:`.mixture` on the summed UMIs of
the CAR features, offset by the cell's library size (CAR UMIs excluded). The ambient rate
``a`` is learned from the cells that are unlikely CAR+. A sample has a CAR+ population
only if the mixture beats a single Poisson by :data:`CAR_MIN_LOGLIK_GAIN`
log-likelihood units and ``b >= CAR_MIN_FOLD * a``. Per cell (``car_method: mixture``):
posterior >= 0.5 *and* at least ``car_min_umis`` UMIs (so a cell with no CAR UMI is
never CAR+ on its own evidence); ``car_method: threshold``: ``car_umis >= car_min_umis``.
Without any CAR feature all CAR columns are missing (NA), not False.

Clone members are pooled with a dropout-aware model (:func:`clone_aware_car`): a CAR+
cell shows zero CAR UMIs with probability ``delta`` (estimated by EM over clones), so a
clone whose CAR+ members lost the transcript is still called from the members that kept
it; a clone needs at least one member with ``car_min_umis`` UMIs. Cells of samples
without a CAR+ population (e.g. pre-manufacture apheresis) are left out of CAR pooling.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy.special import expit

from ...errors import CartCohortError
from ._utils import clone_codes, dense_columns, nb_logpmf, pois_logpmf
from .mixture import fit_latent_classes
from .pooling import CLONE_CLIP

logger = logging.getLogger(__name__)

#: Per-cell CAR rule (``annotate.car_method``).
CarMethod = Literal["mixture", "threshold"]
#: A sample has a CAR+ population only if the mixture improves the log-likelihood
#: of a single Poisson (ambient only) by at least this much ...
CAR_MIN_LOGLIK_GAIN = 10.0
#: ... and the CAR+ rate is at least this multiple of the ambient rate.
CAR_MIN_FOLD = 5.0
#: Columns of ``tables/annotation_car_models.tsv`` (one row per sample).
CAR_MODEL_COLUMNS: tuple[str, ...] = (
    "sample", "car_detected", "ambient_rate", "positive_rate", "size", "positive_fraction",
    "loglik_gain", "reason",
)


@dataclass(frozen=True)
class CarModel:
    """Per-sample CAR UMI model (see :func:`fit_car_model`)."""

    n_cells: int
    car_detected: bool
    ambient_rate: float
    positive_rate: float
    size: float
    positive_fraction: float
    loglik_gain: float
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


def fit_car_model(car_umis: np.ndarray, *, library_size: np.ndarray) -> CarModel:
    """Two-component mixture (ambient Poisson vs CAR+ negative binomial) of one sample.

    Parameters
    ----------
    car_umis
        CAR UMIs per cell (summed over CAR features).
    library_size
        Library size per cell without the CAR UMIs (offset).

    Returns
    -------
    CarModel
        ``car_detected`` is False when the data show no CAR+ population (see
        :data:`CAR_MIN_LOGLIK_GAIN`, :data:`CAR_MIN_FOLD`); the ambient rate is
        then the pooled rate of all cells.
    """
    c = np.asarray(car_umis, dtype=float)
    lib = np.asarray(library_size, dtype=float)
    n = len(c)
    pooled_rate = float(c.sum() / lib.sum()) if lib.sum() > 0 else 0.0
    null_ll = float(np.sum(pois_logpmf(c, lib * max(pooled_rate, 1e-12))))
    if n == 0 or c.sum() == 0:
        return CarModel(n, False, pooled_rate, np.nan, np.nan, 0.0, 0.0, "no CAR UMIs")
    fit = fit_latent_classes(c, library_size=lib, design=np.array([[False], [True]]),
                             classes=("neg", "pos"))
    gain = fit.loglik - null_ll
    a, b = float(fit.low_rate[0]), float(fit.high_rate[0])
    fold = b / max(a, 1e-12)
    if gain < CAR_MIN_LOGLIK_GAIN or fold < CAR_MIN_FOLD:
        reason = (f"mixture gains {gain:.1f} log-likelihood units over ambient-only "
                  f"(need {CAR_MIN_LOGLIK_GAIN}) with CAR+/ambient rate ratio {fold:.1f} "
                  f"(need {CAR_MIN_FOLD})")
        return CarModel(n, False, pooled_rate, np.nan, np.nan, 0.0, float(gain), reason)
    return CarModel(n, True, a, b, float(fit.size[0]), float(fit.prior[1]), float(gain), "")


def call_car_cells(
    car_umis: np.ndarray,
    *,
    library_size: np.ndarray,
    sample: np.ndarray,
    method: CarMethod = "mixture",
    min_umis: int = 1,
) -> tuple[pd.DataFrame, dict[str, CarModel]]:
    """Per-cell CAR+ calls, one mixture per sample.

    Parameters
    ----------
    car_umis
        CAR UMIs per cell.
    library_size
        Library size per cell without CAR UMIs.
    sample
        Sample of each cell.
    method
        ``mixture`` (posterior >= 0.5 and >= ``min_umis`` UMIs) or
        ``threshold`` (``car_umis >= min_umis``).
    min_umis
        Minimum CAR UMIs of a cell called CAR+ on its own evidence (>= 1).

    Returns
    -------
    (pandas.DataFrame, dict)
        Columns ``car_posterior`` (NaN for samples without a CAR+ population) and
        ``car_positive_cell`` (bool), in input order; the model of each sample.
    """
    if method not in ("mixture", "threshold"):
        raise CartCohortError(
            f"annotate.car_method must be 'mixture' or 'threshold', got {method!r}")
    if int(min_umis) < 1:
        raise CartCohortError(f"annotate.car_min_umis must be >= 1, got {min_umis}: a cell "
                              "without any CAR UMI cannot be called CAR+ on its own evidence")
    c = np.asarray(car_umis, dtype=float)
    lib = np.asarray(library_size, dtype=float)
    sample = np.asarray(sample, dtype=object)
    posterior = np.full(len(c), np.nan)
    positive = np.zeros(len(c), dtype=bool)
    models: dict[str, CarModel] = {}
    for s in sorted(pd.unique(sample)):
        idx = np.flatnonzero(sample == s)
        model = fit_car_model(c[idx], library_size=lib[idx])
        models[str(s)] = model
        if model.car_detected:
            llr = model.log_likelihood_ratio(c[idx], library_size=lib[idx])
            prior = np.clip(model.positive_fraction, 1e-6, 1 - 1e-6)
            posterior[idx] = expit(llr + np.log(prior / (1 - prior)))
        if method == "threshold":
            positive[idx] = c[idx] >= min_umis
        elif model.car_detected:
            positive[idx] = (posterior[idx] >= 0.5) & (c[idx] >= min_umis)
        if model.car_detected:
            logger.info("sample %s: CAR+ population found: ambient %.3g and CAR+ %.3g UMIs per "
                        "10k, NB size %.2f, %.1f%% CAR+ (mixture), %d cells called CAR+ (%s)",
                        s, model.ambient_rate * 1e4, model.positive_rate * 1e4, model.size,
                        100 * model.positive_fraction, positive[idx].sum(), method)
        else:
            logger.info("sample %s: no CAR+ population (%s); %d cells called CAR+ (%s)", s,
                        model.reason, positive[idx].sum(), method)
    return pd.DataFrame({"car_posterior": posterior, "car_positive_cell": positive}), models


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


def _fit_clone_dropout(log_pos: np.ndarray, log_neg: np.ndarray, zero: np.ndarray,
                       code: np.ndarray, n_clones: int,
                       max_iter: int) -> tuple[np.ndarray, float, float]:
    """EM over clones: clone CAR+ posteriors, the dropout ``delta`` and the clone prior."""
    delta, prior = 0.1, 0.5
    for _ in range(max_iter):
        lpos = np.where(zero, np.logaddexp(np.log(delta), np.log1p(-delta) + log_pos),
                        np.log1p(-delta) + log_pos)
        llr = np.clip(lpos - log_neg, -CLONE_CLIP, CLONE_CLIP)
        score = np.bincount(code, weights=llr, minlength=n_clones)
        post = expit(score + np.log(prior / (1 - prior)))
        # M-step: clone prior and dropout (responsibility of dropout for zeros of CAR+ clones)
        w = post[code]
        z_drop = np.where(zero, np.exp(np.log(delta) - lpos), 0.0)
        new_prior = float(np.clip(post.mean(), 1e-4, 1 - 1e-4))
        denom = float(np.sum(w))
        new_delta = float(np.clip(np.sum(w * z_drop) / denom, 1e-4, 0.999)) if denom > 0 else delta
        done = abs(new_delta - delta) < 1e-6 and abs(new_prior - prior) < 1e-6
        delta, prior = new_delta, new_prior
        if done:
            break
    return post, delta, prior


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Clone-level CAR status pooled over members, with CAR transcript dropout.

    Only cells of samples with a CAR+ population take part. Under "clone CAR+"
    each member's count is 0 with probability ``delta`` (dropout) and otherwise
    follows its sample's CAR+ component; under "clone CAR-" it follows the
    ambient Poisson. ``delta`` and the fraction of CAR+ clones are estimated by
    EM over the clones with ``min_members`` or more members. A clone is CAR+
    when its posterior is >= 0.5 and some member has ``min_umis`` UMIs.

    Returns
    -------
    (final, clone_posterior, pooled, params)
        Final calls (clone call for pooled cells, ``cell_call`` elsewhere), the
        clone posterior (NaN for cells not pooled), the pooled mask and the
        fitted ``{'dropout', 'clone_prior', 'n_clones'}``.
    """
    c = np.asarray(car_umis, dtype=float)
    lib = np.asarray(library_size, dtype=float)
    sample = np.asarray(sample, dtype=object)
    codes = clone_codes(clone_id)
    eligible = np.array([models[str(s)].car_detected for s in sample], dtype=bool)
    codes = np.where(eligible, codes, -1)
    final = np.asarray(cell_call, dtype=bool).copy()
    clone_post = np.full(len(c), np.nan)
    has = codes >= 0
    params = {"dropout": np.nan, "clone_prior": np.nan, "n_clones": 0}
    if not has.any():
        return final, clone_post, np.zeros(len(c), dtype=bool), params
    n_codes = codes.max() + 1
    size = np.bincount(codes[has], minlength=n_codes)
    member = has & (size[np.where(has, codes, 0)] >= min_members)
    if not member.any():
        return final, clone_post, member, params
    idx = np.flatnonzero(member)
    cc, ll, ss = c[idx], lib[idx], sample[idx]
    _, code = np.unique(codes[idx], return_inverse=True)
    n_clones = code.max() + 1
    log_pos, log_neg = _member_log_likelihoods(cc, ll, ss, models)
    post, delta, prior = _fit_clone_dropout(log_pos, log_neg, cc == 0, code, n_clones, max_iter)
    any_umis = np.bincount(code, weights=(cc >= min_umis).astype(float), minlength=n_clones) > 0
    clone_call = (post >= 0.5) & any_umis
    final[idx] = clone_call[code]
    clone_post[idx] = post[code]
    params = {"dropout": delta, "clone_prior": prior, "n_clones": int(n_clones)}
    logger.info("clone-aware CAR: %d clones with >= %d cells in samples with CAR+ cells; "
                "estimated CAR dropout %.2f, CAR+ clone fraction %.2f, %d clones called CAR+",
                n_clones, min_members, delta, prior, int(clone_call.sum()))
    return final, clone_post, member, params


def car_feature_mask(gex: ad.AnnData, *, car_features: Sequence[str]) -> np.ndarray:
    """Boolean mask of the CAR features: ``var['is_car']`` or a name in ``car_features``."""
    mask = np.zeros(gex.n_vars, dtype=bool)
    if "is_car" in gex.var:
        mask |= gex.var["is_car"].fillna(False).to_numpy(dtype=bool)
    if car_features:
        mask |= gex.var_names.isin(list(car_features))
    return mask


def car_counts(gex: ad.AnnData, counts: Any, *,
               car_features: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CAR features, CAR UMIs and CAR-free library size of every cell.

    Returns
    -------
    (mask, car_umis, library_size)
        The CAR-feature mask (:func:`car_feature_mask`), the summed CAR UMIs per cell
        (zeros without a CAR feature) and the library size without them (>= 1).
    """
    car_mask = car_feature_mask(gex, car_features=car_features)
    total = np.asarray(counts.sum(axis=1)).ravel().astype(float)
    car_umis = (dense_columns(counts, np.flatnonzero(car_mask)).sum(axis=1)
                if car_mask.any() else np.zeros(gex.n_obs))
    library = np.maximum(total - car_umis, 1.0)
    return car_mask, car_umis, library


def _missing_car_columns(gex: ad.AnnData, car_features: Sequence[str]) -> None:
    logger.warning("no CAR feature in the data (config car_features=%s, no var['is_car']): "
                   "car_positive, car_positive_cell and car_umis are left missing (NA)",
                   list(car_features))
    obs = gex.obs
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
) -> tuple[pd.DataFrame, dict[str, float]]:
    """CAR calls of every cell, added to ``gex.obs`` in place.

    Adds ``car_umis``, ``car_posterior``, ``car_positive_cell`` (own evidence) and
    ``car_positive`` (clone-aware when ``clone_aware``; then also
    ``car_clone_posterior``); all missing (NA) when ``car_mask`` selects no feature.

    Returns
    -------
    (car_models, clone_params)
        One row per sample with its CAR model (:data:`CAR_MODEL_COLUMNS`; empty
        without a CAR feature) and the fitted clone parameters of
        :func:`clone_aware_car` (empty when not clone-aware).
    """
    if not car_mask.any():
        _missing_car_columns(gex, car_features)
        return pd.DataFrame(columns=list(CAR_MODEL_COLUMNS)), {}
    obs = gex.obs
    sample = obs["sample"].astype(str).to_numpy()
    car_params: dict[str, float] = {}
    logger.info("CAR features: %s", list(gex.var_names[car_mask]))
    cells_car, models = call_car_cells(car_umis, library_size=library_size, sample=sample,
                                       method=method, min_umis=min_umis)
    final = cells_car["car_positive_cell"].to_numpy()
    if clone_aware:
        final, clone_post, _, car_params = clone_aware_car(
            car_umis, library_size=library_size, sample=sample, clone_id=clone_id, models=models,
            cell_call=final, min_umis=min_umis)
        obs["car_clone_posterior"] = clone_post
    obs["car_umis"] = pd.array(car_umis.astype(np.int64), dtype="Int64")
    obs["car_posterior"] = cells_car["car_posterior"].to_numpy()
    obs["car_positive_cell"] = pd.array(cells_car["car_positive_cell"].to_numpy(),
                                        dtype="boolean")
    obs["car_positive"] = pd.array(final, dtype="boolean")
    car_models = pd.DataFrame([{"sample": s, **{k: getattr(m, k) for k in CAR_MODEL_COLUMNS[1:]}}
                               for s, m in models.items()])
    return car_models, car_params

