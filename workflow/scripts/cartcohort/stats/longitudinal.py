"""Longitudinal mixed models of each feature over ``timepoint_day`` by response group."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._utils import skipped_frame
from .labels import feature_columns, response_labels
from .response import add_qvalues

#: Columns of ``longitudinal.tsv``.
LONGITUDINAL_COLUMNS: tuple[str, ...] = (
    "feature",
    "test",
    "term",
    "effect",
    "ci_low",
    "ci_high",
    "pvalue",
    "qvalue",
    "n_responders",
    "n_nonresponders",
    "n_samples",
    "note",
)
_TERMS = ("responder", "day", "day:responder")


def _dated_samples(features: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Samples with both a ``timepoint_day`` and a response label (``responder`` added)."""
    df = features.copy()
    df["patient"] = df["patient"].astype(str)
    df["timepoint_day"] = pd.to_numeric(df.get("timepoint_day"), errors="coerce")
    df["responder"] = labels["responder"].reindex(df["patient"]).to_numpy()
    return df[df["timepoint_day"].notna() & df["responder"].notna()].reset_index(drop=True)


def _design_problem(df: pd.DataFrame, *, min_patients_per_group: int) -> str:
    """Why the dated samples do not allow the models ('' when they do)."""
    if df.empty:
        return "skipped: no sample with both timepoint_day and a response label"
    resp_pt = df.groupby("patient", sort=True)["responder"].first().astype(bool)
    n1, n0 = int(resp_pt.sum()), int((~resp_pt).sum())
    if min(n1, n0) < min_patients_per_group:
        return (
            f"skipped: {n1} responder(s) and {n0} non-responder(s) with dated samples "
            f"(< {min_patients_per_group} per group)"
        )
    if df["timepoint_day"].nunique() < 2:
        return "skipped: a single timepoint_day in the cohort"
    if int(df.groupby("patient").size().max()) < 2:
        return "skipped: no patient has more than one dated sample"
    return ""


def _distinct_features(df: pd.DataFrame) -> list[str]:
    """Every feature column, columns identical to an earlier one left out."""
    features, seen = [], set()
    for f in feature_columns(df.drop(columns=["responder"])):
        key = df[f].to_numpy(float).tobytes()
        if key not in seen:
            seen.add(key)
            features.append(f)
    return features


def _fit_mixedlm(ys: np.ndarray, X: np.ndarray, groups: np.ndarray) -> tuple[object, str, list]:
    """REML fit with a random intercept per group, trying optimisers until one converges.

    Returns
    -------
    result, error, warnings
        The converged fit (None when none converged), the last failure and the
        warnings of the last fit.
    """
    import statsmodels.api as sm
    from statsmodels.tools import sm_exceptions

    res, err, kinds = None, "", []
    for method in ("bfgs", "lbfgs", "powell", "nm"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fit = sm.MixedLM(ys, X, groups=groups).fit(reml=True, method=[method])
            except (np.linalg.LinAlgError, ValueError) as e:
                err = f"fit failed: {type(e).__name__}: {e}"
                continue
        kinds = sorted(
            {
                str(w.message).split(".")[0]
                for w in caught
                if issubclass(w.category, (sm_exceptions.ConvergenceWarning, UserWarning))
            }
        )
        if fit.converged:
            res = fit
            break
        err = f"fit did not converge ({method})"
    return res, err, kinds


def _na_rows(base: dict, note: str) -> list[dict]:
    """One row per term with no estimate and ``note``."""
    return [
        dict(base, term=term, effect=np.nan, ci_low=np.nan, ci_high=np.nan, pvalue=np.nan,
             note=note)
        for term in _TERMS
    ]


def _feature_rows(
    df: pd.DataFrame, f: str, *, min_patients_per_group: int, alpha: float
) -> list[dict]:
    """The three term rows of one feature's mixed model (NA with the reason when not fitted)."""
    d = df[["patient", "timepoint_day", "responder", f]].dropna()
    r = d["responder"].astype(float).to_numpy()
    day = d["timepoint_day"].to_numpy(float)
    y = d[f].to_numpy(float)
    pts = d.groupby("patient", sort=True)["responder"].first().astype(bool)
    m1, m0 = int(pts.sum()), int((~pts).sum())
    base = dict(feature=f, test="mixedlm", n_responders=m1, n_nonresponders=m0, n_samples=len(d))
    if (
        min(m1, m0) < min_patients_per_group
        or len(np.unique(day)) < 2
        or np.allclose(y, y[0])
        or d.groupby("patient").size().max() < 2
    ):
        return _na_rows(base, "not fitted: too few patients/timepoints or constant values")
    # Fit on standardised value and day (better conditioned), report on the raw scales.
    y_sd = float(np.std(y))
    day_sd = float(np.std(day))
    ys = (y - y.mean()) / y_sd
    dz = day / day_sd
    X = np.column_stack([np.ones_like(dz), r, dz, dz * r])
    res, err, kinds = _fit_mixedlm(ys, X, d["patient"].to_numpy())
    note = "MixedLM REML, random intercept per patient"
    if kinds:
        note += "; " + "; ".join(kinds)
    if res is None:
        return _na_rows(base, err)
    scale = np.array([y_sd, y_sd, y_sd / day_sd, y_sd / day_sd])
    ci = np.asarray(res.conf_int(alpha=alpha))[:4] * scale[:, None]
    params = np.asarray(res.params)[:4] * scale
    pvals = np.asarray(res.pvalues)
    return [
        dict(
            base,
            term=term,
            effect=float(params[j]),
            ci_low=float(ci[j, 0]),
            ci_high=float(ci[j, 1]),
            pvalue=float(pvals[j]),
            note=note,
        )
        for term, j in zip(_TERMS, (1, 2, 3), strict=True)
    ]


def longitudinal_models(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    features_to_test: Sequence[str] | None = None,
    responders: Sequence[str] = ("CR",),
    excluded: Sequence[str] = ("NE",),
    min_patients_per_group: int = 3,
    alpha: float = 0.05,
    clinical_source: str = "clinical table",
) -> pd.DataFrame:
    """Mixed model of each feature over ``timepoint_day`` by response group.

    ``features_to_test`` defaults to every feature column, with columns
    identical to an earlier one left out.

    ``value ~ day + responder + day:responder + (1 | patient)`` (statsmodels
    MixedLM, REML). Samples without ``timepoint_day`` are left out. Terms:
    ``responder`` (difference at day 0), ``day`` (slope per day in
    non-responders), ``day:responder`` (difference of slopes per day).
    q-values: BH within each term across features.

    Returns
    -------
    pandas.DataFrame
        :data:`LONGITUDINAL_COLUMNS`, sorted by term, p-value and feature; a
        single ``skipped`` row with the reason when the design does not allow
        the model.
    """
    labels = response_labels(
        clinical, responders=responders, excluded=excluded, source=clinical_source
    )
    df = _dated_samples(features, labels)
    problem = _design_problem(df, min_patients_per_group=min_patients_per_group)
    if problem:
        return skipped_frame(
            LONGITUDINAL_COLUMNS, feature="(all)", test="skipped", term="NA", note=problem
        )
    if features_to_test is None:
        features_to_test = _distinct_features(df)
    rows = []
    for f in features_to_test:
        if f in df.columns:
            rows += _feature_rows(
                df, f, min_patients_per_group=min_patients_per_group, alpha=alpha
            )
    out = add_qvalues(pd.DataFrame(rows, columns=list(LONGITUDINAL_COLUMNS)), by="term")
    return out.sort_values(["term", "pvalue", "feature"], kind="mergesort").reset_index(drop=True)
