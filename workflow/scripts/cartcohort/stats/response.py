"""Rank tests of a feature between responders and non-responders, and BH q-values.

``mann_whitney``
    Two-sided Mann–Whitney U test; exact null distribution for up to 100
    patients (conditional on the ties when there are ties,
    :func:`exact_rank_sum_pvalue`), otherwise the normal approximation with
    tie and continuity correction. Effect: rank-biserial correlation
    ``2 U / (n1 n0) - 1`` (positive = higher in responders) with a seeded,
    group-stratified percentile bootstrap CI.
``auroc``
    Area under the ROC curve of the feature for predicting response
    (``U / (n1 n0)``; 1 = every responder above every non-responder) with the
    same bootstrap CI; its test of AUROC = 0.5 is the Mann–Whitney test, so
    p-values equal that family's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import CartCohortError
from ._utils import ASSOCIATION_COLUMNS, direction, feature_rng


def _u_statistic(x: np.ndarray, y: np.ndarray) -> float:
    diff = x[:, None] - y[None, :]
    return float((diff > 0).sum() + 0.5 * (diff == 0).sum())


def rank_biserial(x: Sequence[float], y: Sequence[float]) -> float:
    """Rank-biserial correlation of ``x`` (responders) versus ``y``.

    ``2 U / (n_x n_y) - 1`` where ``U`` counts pairs with ``x > y`` (ties
    count one half): +1 when every ``x`` is above every ``y``, -1 when below.
    """
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if len(xa) == 0 or len(ya) == 0:
        raise CartCohortError("rank_biserial needs at least one value in each group")
    return 2.0 * _u_statistic(xa, ya) / (len(xa) * len(ya)) - 1.0


def auroc(x: Sequence[float], y: Sequence[float]) -> float:
    """Area under the ROC curve for separating ``x`` (positives) from ``y``.

    Equal to ``U / (n_x n_y)``, i.e. the probability that a random ``x``
    exceeds a random ``y`` (ties one half).
    """
    return (rank_biserial(x, y) + 1.0) / 2.0


def exact_rank_sum_pvalue(x: Sequence[float], y: Sequence[float]) -> float:
    """Exact two-sided p-value of the Wilcoxon rank-sum / Mann–Whitney test, ties allowed.

    The null distribution of the sum of ``x``'s mid-ranks is enumerated
    conditionally on the observed ties (every assignment of ``n_x`` of the
    pooled values to ``x`` equally likely), by dynamic programming over the
    doubled mid-ranks (integers). Two-sided: ``P(|W - E W| >= |w - E W|)``.
    Without ties this equals SciPy's exact Mann–Whitney p-value.
    """
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    n1, n = len(xa), len(xa) + len(ya)
    pooled = np.concatenate([xa, ya])
    scores = np.rint(2 * stats.rankdata(pooled)).astype(np.int64)  # doubled mid-ranks
    total = int(scores.sum())
    # dp[k, s]: number of size-k subsets with doubled rank sum s (float64 counts)
    dp = np.zeros((n1 + 1, total + 1))
    dp[0, 0] = 1.0
    for i, sc in enumerate(scores):
        for k in range(min(i + 1, n1), 0, -1):
            dp[k, sc:] += dp[k - 1, : total + 1 - sc]
    dist = dp[n1]
    dist = dist / dist.sum()
    observed = int(scores[:n1].sum())
    expected = n1 * (n + 1)  # E[W] in doubled units (2 * n1 (n + 1) / 2)
    dev = np.abs(np.arange(total + 1) - expected)
    p = float(dist[dev >= abs(observed - expected)].sum())
    return min(1.0, p)


def mann_whitney(
    x: Sequence[float], y: Sequence[float], *, max_exact_n: int = 100
) -> tuple[float, float, str]:
    """Two-sided Mann–Whitney U test.

    Parameters
    ----------
    x, y
        The two groups (no missing values).
    max_exact_n
        Up to this many values in total the p-value is exact (SciPy's exact
        distribution without ties; :func:`exact_rank_sum_pvalue`, conditional
        on the ties, with ties); above, the normal approximation with tie and
        continuity correction.

    Returns
    -------
    U, pvalue, method
        ``U`` of ``x``; method is ``exact``, ``exact_ties``, ``asymptotic``
        or ``constant`` (every value equal: p = 1).
    """
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    n1, n0 = len(xa), len(ya)
    pooled = np.concatenate([xa, ya])
    u = _u_statistic(xa, ya)
    if np.all(pooled == pooled[0]):
        return u, 1.0, "constant"
    ties = len(np.unique(pooled)) < len(pooled)
    if n1 + n0 <= max_exact_n:
        if ties:
            return u, exact_rank_sum_pvalue(xa, ya), "exact_ties"
        res = stats.mannwhitneyu(xa, ya, alternative="two-sided", method="exact")
        return u, float(min(1.0, res.pvalue)), "exact"
    res = stats.mannwhitneyu(xa, ya, alternative="two-sided", method="asymptotic")
    return u, float(min(1.0, res.pvalue)), "asymptotic"


def bootstrap_rank_biserial(
    x: Sequence[float],
    y: Sequence[float],
    *,
    n_bootstrap: int = 2000,
    seed: int | np.random.Generator = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the rank-biserial correlation.

    Resampling is stratified (each group resampled with replacement within
    itself), so every replicate keeps the group sizes.

    Returns
    -------
    (low, high)
        The ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the replicates.
    """
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    n1, n0 = len(xa), len(ya)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    diff = xa[:, None] - ya[None, :]
    pair = (diff > 0).astype(float) + 0.5 * (diff == 0)
    w1 = rng.multinomial(n1, np.full(n1, 1.0 / n1), size=n_bootstrap).astype(float)
    w0 = rng.multinomial(n0, np.full(n0, 1.0 / n0), size=n_bootstrap).astype(float)
    u = np.einsum("bi,ij,bj->b", w1, pair, w0)
    r = 2.0 * u / (n1 * n0) - 1.0
    lo, hi = np.quantile(r, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bh_qvalues(pvalues: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values).

    Missing p-values stay missing and do not count towards the number of tests.
    """
    p = np.asarray(pvalues, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return q
    pv = p[ok]
    order = np.argsort(pv, kind="mergesort")
    ranked = pv[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


def add_qvalues(table: pd.DataFrame, *, by: str = "test") -> pd.DataFrame:
    """A copy of ``table`` with ``qvalue``: BH q-values within each value of ``by``.

    ``by`` is the ``test`` family for ``association.tsv`` and the model ``term``
    for ``longitudinal.tsv``.
    """
    out = table.copy()
    out["qvalue"] = np.nan
    for _group, idx in out.groupby(by, sort=True).groups.items():
        out.loc[idx, "qvalue"] = bh_qvalues(out.loc[idx, "pvalue"].to_numpy(float))
    return out


def univariate_tests(
    table: pd.DataFrame,
    *,
    responder: pd.Series,
    features: Sequence[str],
    n_bootstrap: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Mann–Whitney and AUROC rows for each feature (one value per patient).

    Parameters
    ----------
    table
        Patient-level table (one row per patient).
    responder
        Boolean per row of ``table`` (no missing values).
    features
        Columns to test.
    n_bootstrap, seed, alpha
        Bootstrap replicates, seed and 1 - confidence level of the CIs.

    Returns
    -------
    pandas.DataFrame
        :data:`ASSOCIATION_COLUMNS` rows for families ``mann_whitney`` and
        ``auroc``; q-values not yet filled.
    """
    resp = np.asarray(responder, dtype=bool)
    rows = []
    for f in features:
        v = table[f].to_numpy(dtype=float)
        ok = np.isfinite(v)
        x, y = v[ok & resp], v[ok & ~resp]
        u, p, method = mann_whitney(x, y)
        r = 2.0 * u / (len(x) * len(y)) - 1.0
        lo, hi = bootstrap_rank_biserial(
            x, y, n_bootstrap=n_bootstrap, seed=feature_rng(seed, f), alpha=alpha
        )
        common = dict(
            feature=f,
            pvalue=p,
            n_responders=len(x),
            n_nonresponders=len(y),
            median_responders=float(np.median(x)),
            median_nonresponders=float(np.median(y)),
        )
        rows.append(
            dict(
                common,
                test="mann_whitney",
                effect=r,
                ci_low=lo,
                ci_high=hi,
                effect_type="rank_biserial",
                direction=direction(r),
                note=f"{method} p-value; stratified percentile bootstrap CI ({n_bootstrap})",
            )
        )
        rows.append(
            dict(
                common,
                test="auroc",
                effect=(r + 1) / 2,
                ci_low=(lo + 1) / 2,
                ci_high=(hi + 1) / 2,
                effect_type="auroc",
                direction=direction(r),
                note="p-value of AUROC = 0.5 is the Mann-Whitney p-value; bootstrap CI",
            )
        )
    return pd.DataFrame(rows, columns=list(ASSOCIATION_COLUMNS))
