"""Calibrated scorecard flags: a product against a leave-one-out interval of the responders.

The rule (issue 26). A product is flagged on a feature of the primary panel when its
value lies outside the two-sided prediction interval for one new observation of the
responders' distribution, computed from the responders other than the product's own
patient (leave-one-out):

    mean ± t_{(1 + c) / 2, n - 1} · s · sqrt(1 + 1/n)

with n responders, their mean and standard deviation s, and c the nominal coverage
(``scorecards.flag_coverage``, default 0.90). Features outside the panel are shown on
the card but never flagged; only product features (:func:`cartcohort.tl.features.
feature_scope`) appear on a card at all.

Why a parametric interval, not the empirical 10th-90th percentile. With the ~10
responders of a cohort (9 once a responder's own product is left out), the 10th and
90th sample percentiles are interpolations between the two most extreme values on
each side; a new responder falls outside them with probability about 2 · 1.8 / 10 =
0.36 (numpy's linear percentiles of 9 values), not 0.20, and the min-max range fixes
the rate at 2 / (n + 1) = 0.20 with no way to state another. The prediction interval
uses all n values (mean and SD), its coverage is exact for normal data at any n and any
stated level, so the false-flag rate of a responder's own product is 1 - c by design;
:func:`flag_calibration` measures it on the cohort's responders, where values need not
be normal.

References: Hahn GJ, Meeker WQ. *Statistical Intervals*, Wiley 1991, ch. 4 (normal
prediction interval); Geisser S. *Predictive Inference*, Chapman & Hall 1993
(leave-one-out predictive checks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as st

from ..errors import CartCohortError

#: Flags of a primary feature outside the interval (``flag`` column of a scorecard).
OUTSIDE: tuple[str, ...] = ("below_responder_interval", "above_responder_interval")
#: Flag of a primary feature inside the interval.
WITHIN = "within_responder_interval"
#: Flag of a feature outside the primary panel: shown, never flagged.
EXPLORATORY = "exploratory_not_flagged"
#: Flags of a primary feature that could be compared with the interval.
EVALUATED: tuple[str, ...] = (*OUTSIDE, WITHIN)
#: Columns of ``scorecard_calibration.tsv``.
CALIBRATION_COLUMNS: tuple[str, ...] = (
    "row",
    "patient",
    "response",
    "n_features",
    "n_flagged",
    "flag_rate",
    "nominal_coverage",
    "expected_flag_rate",
)


def check_coverage(coverage: float) -> float:
    """``coverage`` as a float in (0, 1), else a :class:`CartCohortError` naming the key."""
    c = float(coverage)
    if not 0 < c < 1:
        raise CartCohortError(
            f"scorecards.flag_coverage is {coverage!r}; Fix: give a nominal coverage "
            "strictly between 0 and 1 (e.g. 0.9)"
        )
    return c


def prediction_interval(values: np.ndarray, *, coverage: float) -> tuple[float, float]:
    """Two-sided normal prediction interval for one new observation.

    Parameters
    ----------
    values
        The reference values (non-finite values are dropped); at least 2 are needed.
    coverage
        Nominal coverage c in (0, 1).

    Returns
    -------
    tuple of float
        ``mean ∓ t_{(1+c)/2, n-1} s sqrt(1 + 1/n)``. Equal values give a zero-width
        interval (any other value lies outside).
    """
    c = check_coverage(coverage)
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 2:
        raise CartCohortError(f"a prediction interval needs at least 2 values, got {n}")
    half = float(st.t.ppf((1 + c) / 2, n - 1)) * float(v.std(ddof=1)) * math.sqrt(1 + 1 / n)
    m = float(v.mean())
    return m - half, m + half


def interval_flag(value: float, *, low: float, high: float) -> str:
    """``below_/above_/within_responder_interval`` of one finite value."""
    if value < low:
        return OUTSIDE[0]
    if value > high:
        return OUTSIDE[1]
    return WITHIN


def calibration_rows(
    cards: dict[str, pd.DataFrame],
    *,
    responses: dict[str, str],
    coverage: float,
) -> pd.DataFrame:
    """``scorecard_calibration.tsv`` from the leave-one-out cards of the responders.

    Parameters
    ----------
    cards
        Responder patient -> its product's scorecard against the other patients
        (``flag`` and ``primary`` columns).
    responses
        Patient -> response code.
    coverage
        Nominal coverage of the interval.

    Returns
    -------
    pandas.DataFrame
        :data:`CALIBRATION_COLUMNS`: one ``row = responder`` per patient (primary
        features compared with the interval, how many flagged, the rate) and a last
        ``row = mean`` whose ``flag_rate`` is the mean of the responders' rates.
    """
    c = check_coverage(coverage)
    rows = []
    for patient, card in cards.items():
        prim = card[card["primary"].astype(bool)]
        n = int(prim["flag"].isin(list(EVALUATED)).sum())
        k = int(prim["flag"].isin(list(OUTSIDE)).sum())
        rows.append(dict(row="responder", patient=patient, response=responses.get(patient, "NA"),
                         n_features=n, n_flagged=k, flag_rate=k / n if n else np.nan))
    table = pd.DataFrame(rows, columns=list(CALIBRATION_COLUMNS[:6]))
    rates = table["flag_rate"].to_numpy(dtype=float)
    mean = float(np.nanmean(rates)) if np.isfinite(rates).any() else np.nan
    summary = dict(row="mean", patient="all_responders", response="NA",
                   n_features=int(table["n_features"].sum()),
                   n_flagged=int(table["n_flagged"].sum()), flag_rate=mean)
    table = pd.concat([table, pd.DataFrame([summary])], ignore_index=True)
    return table.assign(nominal_coverage=c, expected_flag_rate=round(1 - c, 12))


def mean_flag_rate(calibration: pd.DataFrame) -> float:
    """The ``flag_rate`` of the ``row = mean`` line of a calibration table."""
    mean = calibration.loc[calibration["row"] == "mean", "flag_rate"]
    if len(mean) != 1:
        raise CartCohortError("calibration table has no single 'mean' row")
    return float(mean.iloc[0])


def primary_rows_first(features: Sequence[str], primary: Sequence[str]) -> list[str]:
    """``primary`` (panel order) then the other ``features`` in their order."""
    first = list(dict.fromkeys(primary))
    return first + [f for f in features if f not in set(first)]
