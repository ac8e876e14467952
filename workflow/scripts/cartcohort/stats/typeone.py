"""Family-wise type-I error of the primary panel under permuted response labels.

The association's confirmatory claim is "some primary-panel feature has q < 0.05". Its
family-wise error rate (FWER) under the null of no association is measured by permuting
the response labels over the patients (the exchangeable units) ``n_permutations``
times, seeded, and re-running the primary family exactly as rule ``associate`` does:
the same tests on the same panel representatives (the twin collapse does not depend on
the labels), BH within the panel. The rate comes with its exact Clopper–Pearson interval.
The runner on the demo is ``tools/type1_error.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from ..errors import CartCohortError
from .logistic import logistic_tests
from .response import bh_qvalues, univariate_tests

#: Tests whose family-wise rate :func:`permutation_fwer` can measure.
FWER_TESTS: tuple[str, ...] = ("mann_whitney", "logistic")


def clopper_pearson(k: int, n: int, *, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper–Pearson) ``1 - alpha`` interval of a binomial proportion ``k / n``
    (statsmodels ``proportion_confint``, method ``beta``)."""
    if n < 1 or not 0 <= k <= n:
        raise CartCohortError(f"binomial interval needs 0 <= k <= n and n >= 1, got {k}/{n}")
    low, high = proportion_confint(k, n, alpha=alpha, method="beta")
    return float(low), float(high)


@dataclass(frozen=True)
class FwerResult:
    """Result of :func:`permutation_fwer`.

    Attributes
    ----------
    table
        One row per test (and ``any``: either test): ``test``, ``n_permutations``,
        ``n_any_significant`` (permutations with some panel q below the threshold),
        ``fwer``, ``ci_low``, ``ci_high`` (Clopper–Pearson 95 %), ``n_features``.
    min_q
        Smallest panel q-value of each permutation, one column per test.
    """

    table: pd.DataFrame
    min_q: pd.DataFrame


def _panel_min_q(
    table: pd.DataFrame, responder: np.ndarray, features: list[str], *, tests: Sequence[str],
    min_per_group: int, min_events_per_variable: float,
) -> dict[str, float]:
    """Smallest BH q-value over ``features`` of each test, for one labelling."""
    resp = pd.Series(responder)
    out: dict[str, float] = {}
    if "mann_whitney" in tests:
        mw = univariate_tests(table, responder=resp, features=features)
        p = mw.loc[mw["test"] == "mann_whitney", "pvalue"].to_numpy(float)
        out["mann_whitney"] = float(np.nanmin(bh_qvalues(p)))
    if "logistic" in tests:
        lg = logistic_tests(table, responder=resp, features=features,
                            min_per_group=min_per_group,
                            min_events_per_variable=min_events_per_variable)
        q = bh_qvalues(lg["pvalue"].to_numpy(float))
        out["logistic"] = float(np.nanmin(q)) if np.isfinite(q).any() else np.nan
    return out


def permutation_fwer(
    patients: pd.DataFrame,
    *,
    responder: pd.Series,
    features: Sequence[str],
    n_permutations: int = 200,
    seed: int = 0,
    tests: Sequence[str] = FWER_TESTS,
    q_threshold: float = 0.05,
    min_per_group: int = 3,
    min_events_per_variable: float = 5.0,
) -> FwerResult:
    """Family-wise rate of any primary-panel ``q < q_threshold`` under permuted labels.

    Parameters
    ----------
    patients
        Patient-level table of the labelled patients (one row per patient, e.g.
        :attr:`~cartcohort.stats.AssociationResult.patients` with a label).
    responder
        Boolean per row of ``patients``: the observed labels, permuted.
    features
        The primary family: the panel features that rule ``associate`` tests
        (``family == 'primary'`` rows of ``association.tsv``).
    n_permutations
        Permutations of the labels (group sizes kept).
    seed
        Seed of the permutations.
    tests
        Which of :data:`FWER_TESTS` to run (BH within the panel per test).
    q_threshold
        A permutation counts when some panel q is below it.
    min_per_group, min_events_per_variable
        Logistic settings, as in rule ``associate``.

    Returns
    -------
    FwerResult
        The rate per test and for ``any`` test, with Clopper–Pearson 95 % intervals,
        and the smallest panel q of every permutation.
    """
    feats = list(features)
    bad = sorted(set(tests) - set(FWER_TESTS))
    if bad or not feats or n_permutations < 1:
        raise CartCohortError(f"permutation_fwer needs tests among {list(FWER_TESTS)} (got "
                              f"{bad}), at least one feature and one permutation")
    missing = [f for f in feats if f not in patients.columns]
    if missing:
        raise CartCohortError(f"primary-panel features {missing} are not columns of the "
                              "patient table")
    table = patients.reset_index(drop=True)
    labels = np.asarray(responder, dtype=bool)
    rng = np.random.default_rng(seed)
    rows = [
        _panel_min_q(table, rng.permutation(labels), feats, tests=tests,
                     min_per_group=min_per_group, min_events_per_variable=min_events_per_variable)
        for _ in range(n_permutations)
    ]
    min_q = pd.DataFrame(rows, columns=[t for t in FWER_TESTS if t in tests])
    hits = min_q.lt(q_threshold)
    counts = {t: int(hits[t].sum()) for t in min_q.columns}
    counts["any"] = int(hits.any(axis=1).sum())
    out = []
    for test, k in counts.items():
        low, high = clopper_pearson(k, n_permutations)
        out.append(dict(test=test, n_permutations=n_permutations, n_any_significant=k,
                        fwer=k / n_permutations, ci_low=low, ci_high=high,
                        n_features=len(feats)))
    return FwerResult(pd.DataFrame(out), min_q)
