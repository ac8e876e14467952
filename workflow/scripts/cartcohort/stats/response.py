"""Rank tests of a feature between responders and non-responders, and BH q-values.

``mann_whitney``
    Two-sided Mann–Whitney U test; exact null distribution for up to 100
    patients (conditional on the ties when there are ties,
    :func:`exact_rank_sum_pvalue`), otherwise the normal approximation with
    tie and continuity correction. Effect: rank-biserial correlation
    ``2 AUC - 1`` (positive = higher in responders), with Newcombe's score-type
    interval of the AUC mapped the same way (:func:`newcombe_auc_interval`).
``auroc``
    Area under the ROC curve of the feature for telling responders from
    non-responders, ``AUC = U / (n1 n0)``, always **oriented**: the row reports
    ``max(AUC, 1 - AUC)`` and says in ``direction`` whether the feature is higher or
    lower in responders, so an AUROC is never below 0.5. Same interval; its test of
    AUROC = 0.5 is the Mann–Whitney test, so p-values equal that family's.

Why not a percentile bootstrap: with 10 patients per group a perfectly separated
feature gives every bootstrap replicate an AUC of 1, so the interval collapses to
[1, 1] - false certainty. The score interval is computed from the group sizes and
stays informative there (see :func:`newcombe_auc_interval`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

from ..errors import CartCohortError
from ..multitest import bh_qvalues
from ._utils import ASSOCIATION_COLUMNS, direction


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


def newcombe_auc_interval(
    theta: float, n1: int, n0: int, *, alpha: float = 0.05
) -> tuple[float, float]:
    """Newcombe's (2006) Method 5 score-type confidence interval for the Mann–Whitney AUC.

    Newcombe RG. Confidence intervals for an effect size measure based on the
    Mann–Whitney statistic. Part 2: asymptotic methods and evaluation. *Stat Med*
    2006; 25:559–573, doi:10.1002/sim.2324. The limits are the two solutions ``θ`` of
    ``(θ̂ - θ)² = z² V(θ)``, with the Hanley–McNeil variance whose two sample-size
    weights are both replaced by ``N* - 1 = (n1 + n0) / 2 - 1``::

        V(θ) = θ (1 - θ) [1 + (N* - 1) ((1 - θ) / (2 - θ) + θ / (1 + θ))] / (n1 n0)

    Why this interval: the variance is evaluated at the candidate ``θ``, not at the
    estimate, so the interval stays informative at perfect separation (``θ̂ = 1``
    gives ``[L, 1]`` with ``L < 1``, not the zero-width interval of a Wald or
    percentile-bootstrap interval); it stays inside [0, 1]; and Newcombe's
    evaluation found its coverage close to nominal for small groups. The interval is
    symmetric under relabelling the groups (``θ -> 1 - θ``).

    Parameters
    ----------
    theta
        Estimated AUC, ``U / (n1 n0)`` (ties count one half).
    n1, n0
        Sizes of the two groups.
    alpha
        1 - confidence level.

    Returns
    -------
    (low, high)
        The limits; ``low = 0`` when ``theta = 0`` and ``high = 1`` when ``theta = 1``.
    """
    if n1 < 1 or n0 < 1 or not 0.0 <= theta <= 1.0:
        raise CartCohortError(f"AUC interval needs theta in [0, 1] and two groups, got "
                              f"theta={theta}, n1={n1}, n0={n0}")
    z = float(stats.norm.ppf(1 - alpha / 2))
    h = (n1 + n0) / 2.0 - 1.0

    def sd(t: float) -> float:
        var = t * (1 - t) * (1 + h * ((1 - t) / (2 - t) + t / (1 + t))) / (n1 * n0)
        return float(np.sqrt(max(var, 0.0)))

    # V(theta_hat) = 0 at theta_hat in {0, 1}: theta_hat itself solves the equation there,
    # so the other limit is bracketed just inside it
    eps = 1e-12
    low = 0.0
    if theta > 0:
        b = min(theta, 1.0 - eps)
        low = float(optimize.brentq(lambda t: theta - t - z * sd(t), 0.0, b, xtol=1e-12))
    high = 1.0
    if theta < 1:
        a = max(theta, eps)
        high = float(optimize.brentq(lambda t: theta - t + z * sd(t), a, 1.0, xtol=1e-12))
    return low, high


def oriented_auroc(
    theta: float, low: float, high: float
) -> tuple[float, float, float, str]:
    """AUROC oriented towards the group where the feature is higher.

    Returns
    -------
    (auroc, low, high, direction)
        ``max(θ, 1 - θ)`` with its interval mapped the same way (``1 - θ`` takes
        ``(1 - high, 1 - low)``) and ``higher_in_responders``,
        ``lower_in_responders`` or ``none`` (``θ = 0.5``).
    """
    if theta < 0.5:
        return 1.0 - theta, 1.0 - high, 1.0 - low, "lower_in_responders"
    return theta, low, high, direction(theta, 0.5)


    pv = p[ok]
    order = np.argsort(pv, kind="mergesort")
    ranked = pv[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


def add_qvalues(table: pd.DataFrame, *, by: str | Sequence[str] = "test") -> pd.DataFrame:
    """A copy of ``table`` with ``qvalue``: BH q-values within each value of ``by``.

    ``by`` is ``["test", "family"]`` for ``association.tsv`` (each test within the
    primary panel and within the exploratory features) and the model ``term`` for
    ``longitudinal.tsv``.
    """
    out = table.copy()
    out["qvalue"] = np.nan
    keys = by if isinstance(by, str) else list(by)
    for _group, idx in out.groupby(keys, sort=True, dropna=False).groups.items():
        out.loc[idx, "qvalue"] = bh_qvalues(out.loc[idx, "pvalue"].to_numpy(float))
    return out


def _rank_rows(f: str, x: np.ndarray, y: np.ndarray, alpha: float) -> list[dict[str, object]]:
    """The ``mann_whitney`` and ``auroc`` rows of one feature (no missing values)."""
    u, p, method = mann_whitney(x, y)
    n1, n0 = len(x), len(y)
    theta = u / (n1 * n0)
    lo, hi = newcombe_auc_interval(theta, n1, n0, alpha=alpha)
    auc, auc_lo, auc_hi, sense = oriented_auroc(theta, lo, hi)
    common = dict(
        feature=f,
        pvalue=p,
        n_responders=n1,
        n_nonresponders=n0,
        median_responders=float(np.median(x)),
        median_nonresponders=float(np.median(y)),
        direction=sense,
    )
    ci = f"{int(round(100 * (1 - alpha)))}% Newcombe (2006) method 5 score interval"
    return [
        dict(common, test="mann_whitney", effect=2 * theta - 1, ci_low=2 * lo - 1,
             ci_high=2 * hi - 1, effect_type="rank_biserial",
             note=f"{method} p-value; {ci} of the AUC, as 2 AUC - 1"),
        dict(common, test="auroc", effect=auc, ci_low=auc_lo, ci_high=auc_hi,
             effect_type="auroc_oriented",
             note=f"AUROC oriented as max(AUC, 1 - AUC) (see direction); {ci}; "
                  "p-value of AUROC = 0.5 is the Mann-Whitney p-value"),
    ]


def univariate_tests(
    table: pd.DataFrame,
    *,
    responder: pd.Series,
    features: Sequence[str],
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Mann–Whitney and oriented AUROC rows for each feature (one value per patient).

    Parameters
    ----------
    table
        Patient-level table (one row per patient).
    responder
        Boolean per row of ``table`` (no missing values).
    features
        Columns to test (missing values are left out per feature).
    alpha
        1 - confidence level of the intervals.

    Returns
    -------
    pandas.DataFrame
        :data:`ASSOCIATION_COLUMNS` rows of tests ``mann_whitney`` (rank-biserial
        ``2 AUC - 1``, signed) and ``auroc`` (oriented, ``max(AUC, 1 - AUC)``), both
        with the Newcombe interval (:func:`newcombe_auc_interval`); q-values not yet
        filled.
    """
    resp = np.asarray(responder, dtype=bool)
    rows: list[dict[str, object]] = []
    for f in features:
        v = table[f].to_numpy(dtype=float)
        ok = np.isfinite(v)
        rows += _rank_rows(f, v[ok & resp], v[ok & ~resp], alpha)
    return pd.DataFrame(rows, columns=list(ASSOCIATION_COLUMNS))
