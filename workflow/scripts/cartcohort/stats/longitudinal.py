"""Longitudinal mixed models of each feature over the blood timepoints, by response group.

Time is categorical and read within one compartment (blood by default): the infusion
product is left out, because day 0 is the only timepoint of the product compartment, so
any product term is aliased with "day 0" and time and compartment cannot be told apart.
Each feature gets one linear mixed model (statsmodels ``MixedLM``, REML, a random
intercept per patient) of ``value ~ timepoint * responder``; the results are contrasts
with Wald confidence intervals on the feature's scale:

- ``change_responders`` / ``change_nonresponders``: each later timepoint vs the first
  blood timepoint ("day 14 vs day 7"), within each group;
- ``change_difference``: responders minus non-responders of that change (the
  timepoint x response interaction: does the kinetics differ?);
- ``responder_difference``: responders minus non-responders at each timepoint (the
  question a clinician asks of a single blood draw).

The model is fitted once; every contrast is a linear combination of its fixed effects,
so the families stay consistent (difference at day 14 = difference at day 7 + change
difference). Time is categorical because blood draws are scheduled visits with
non-linear kinetics (expansion peak, then contraction); a slope per day would average
them away. A fit whose random-intercept variance is estimated at 0 (singular) or whose
Hessian is not positive definite is reported as such, with no estimate.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._utils import skipped_frame
from .labels import feature_columns, response_labels
from .response import add_qvalues

logger = logging.getLogger(__name__)

#: Columns of ``longitudinal.tsv``.
LONGITUDINAL_COLUMNS: tuple[str, ...] = (
    "feature",
    "family",
    "test",
    "contrast",
    "comparison",
    "timepoint",
    "reference",
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
#: Contrast types (``contrast`` column), in table order; BH q-values within each.
CONTRASTS: tuple[str, ...] = (
    "change_responders",
    "change_nonresponders",
    "change_difference",
    "responder_difference",
)
#: A random-intercept variance below this (on the standardised scale) is a singular fit.
SINGULAR_TOL = 1e-6


def _day(d: float) -> str:
    return f"day {d:g}"


def blood_samples(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    compartment: str,
    primary_timepoint: str,
) -> tuple[pd.DataFrame, list[str]]:
    """The labelled samples of ``compartment`` with a ``timepoint_day``, product left out.

    Returns
    -------
    samples, notes
        Samples with ``responder`` added (boolean) and ``timepoint_day`` as float;
        ``notes`` says which samples were left out and why.
    """
    notes: list[str] = []
    if "compartment" not in features.columns:
        return features.iloc[0:0].assign(responder=[]), ["no 'compartment' column"]
    df = features.copy()
    df["patient"] = df["patient"].astype(str)
    df["timepoint_day"] = pd.to_numeric(df.get("timepoint_day"), errors="coerce")
    df["responder"] = labels["responder"].reindex(df["patient"]).to_numpy()
    product = df["timepoint"].astype(str) == str(primary_timepoint)
    df = df[(df["compartment"].astype(str) == compartment) & ~product]
    undated = df["timepoint_day"].isna()
    if undated.any():
        notes.append(
            f"{int(undated.sum())} {compartment} sample(s) without timepoint_day left out "
            f"({', '.join(df.loc[undated, 'sample'].astype(str).head(5))})"
        )
    df = df[~undated & df["responder"].notna()].copy()
    df["responder"] = df["responder"].astype(bool)
    return df.reset_index(drop=True), notes


def timepoint_order(samples: pd.DataFrame) -> pd.DataFrame:
    """Timepoint labels ordered by their median ``timepoint_day`` (ties by label).

    Returns
    -------
    pandas.DataFrame
        Indexed by timepoint label: ``day`` (median day), ``n_responders``,
        ``n_nonresponders`` (patients with a sample).
    """
    if samples.empty:
        return pd.DataFrame(columns=["day", "n_responders", "n_nonresponders"])
    g = samples.groupby(samples["timepoint"].astype(str))
    out = pd.DataFrame(
        {
            "day": g["timepoint_day"].median(),
            "n_responders": g.apply(lambda s: s.loc[s["responder"], "patient"].nunique()),
            "n_nonresponders": g.apply(lambda s: s.loc[~s["responder"], "patient"].nunique()),
        }
    )
    out["_label"] = out.index
    return out.sort_values(["day", "_label"], kind="mergesort").drop(columns="_label")


def _design_problem(tps: pd.DataFrame, *, compartment: str) -> str:
    """Why the blood samples do not allow the models ('' when they do)."""
    if tps.empty:
        return f"skipped: no labelled {compartment} sample with a timepoint_day"
    if len(tps) < 2:
        return f"skipped: a single {compartment} timepoint ({tps.index[0]})"
    return ""


def _scope_note(samples: pd.DataFrame, *, compartment: str, primary_timepoint: str) -> str:
    """What the model covers: the compartment, the product left out, mixed sorts flagged."""
    note = (f"{compartment} libraries only; product ({primary_timepoint}) left out (its "
            "only timepoint is day 0, aliased with the compartment)")
    if "sort" in samples.columns and samples["sort"].nunique() > 1:
        per_tp = samples.groupby(samples["timepoint"].astype(str))["sort"].agg(
            lambda s: "/".join(sorted(map(str, s.unique()))))
        note += ("; caution: sorts differ across timepoints ("
                 + ", ".join(f"{t}: {v}" for t, v in per_tp.items())
                 + "), contrasts mix time with sort")
    return note


def _usable_timepoints(
    tps: pd.DataFrame, *, compartment: str, min_per_group: int
) -> tuple[pd.DataFrame, str]:
    """The timepoints with enough patients per group, and why none can be modelled."""
    keep = (tps["n_responders"] >= min_per_group) & (tps["n_nonresponders"] >= min_per_group)
    if (~keep).any():
        dropped = ", ".join(f"{t} ({int(r.n_responders)} R / {int(r.n_nonresponders)} NR)"
                            for t, r in tps[~keep].iterrows())
        logger.warning("longitudinal: timepoints with < %d patients per group left out: %s",
                       min_per_group, dropped)
    problem = _design_problem(tps, compartment=compartment)
    if not problem and keep.sum() < 2:
        problem = (f"skipped: fewer than 2 {compartment} timepoints with >= "
                   f"{min_per_group} responders and non-responders each "
                   f"(associate.min_patients_per_group); per timepoint: "
                   + ", ".join(f"{t} {int(r.n_responders)} R / {int(r.n_nonresponders)} NR"
                               for t, r in tps.iterrows()))
    return tps[keep], problem


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
        err = f"not fitted: did not converge (optimisers bfgs, lbfgs, powell, nm; last {method})"
    return res, err, kinds


def _contrast_specs(tps: pd.DataFrame) -> list[tuple[str, str, str, np.ndarray]]:
    """(contrast, comparison, timepoint, L vector) of every contrast of the model.

    Columns of the design: intercept, one dummy per later timepoint, responder,
    one interaction per later timepoint.
    """
    labels = list(tps.index)
    k = len(labels) - 1
    ref, ref_day = labels[0], float(tps["day"].iloc[0])
    specs = []
    for j, tp in enumerate(labels[1:]):
        comp = f"{_day(float(tps.loc[tp, 'day']))} vs {_day(ref_day)}"
        main, inter = np.zeros(2 + 2 * k), np.zeros(2 + 2 * k)
        main[1 + j] = 1.0
        inter[2 + k + j] = 1.0
        specs += [
            ("change_responders", f"{comp}, responders", tp, main + inter),
            ("change_nonresponders", f"{comp}, non-responders", tp, main),
            ("change_difference", f"{comp}, responders minus non-responders", tp, inter),
        ]
    at_ref = np.zeros(2 + 2 * k)
    at_ref[1 + k] = 1.0
    specs.append(("responder_difference",
                  f"responders minus non-responders at {_day(ref_day)}", ref, at_ref))
    for j, tp in enumerate(labels[1:]):
        inter = np.zeros(2 + 2 * k)
        inter[2 + k + j] = 1.0
        specs.append(("responder_difference", "responders minus non-responders at "
                      f"{_day(float(tps.loc[tp, 'day']))}", tp, at_ref + inter))
    return specs


def _design(d: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """Intercept, later-timepoint dummies, responder, timepoint x responder."""
    r = d["responder"].to_numpy(float)
    tp = d["timepoint"].astype(str).to_numpy()
    dummies = np.column_stack([(tp == t).astype(float) for t in labels[1:]])
    return np.column_stack([np.ones(len(d)), dummies, r, dummies * r[:, None]])


def _cell_problem(d: pd.DataFrame, labels: list[str], min_per_group: int) -> str:
    """A timepoint x group cell with too few patients ('' when none)."""
    for tp in labels:
        sub = d[d["timepoint"].astype(str) == tp]
        n1 = sub.loc[sub["responder"], "patient"].nunique()
        n0 = sub.loc[~sub["responder"], "patient"].nunique()
        if min(n1, n0) < min_per_group:
            return (f"not fitted: {n1} responder(s) and {n0} non-responder(s) with a value "
                    f"at {tp} (< {min_per_group} per group)")
    return ""


def _fit_problem(res: object, kinds: list[str]) -> str:
    """Why a converged fit cannot be reported ('' when it can): singular or no SEs."""
    cov_re = float(np.asarray(res.cov_re).ravel()[0])
    if not np.isfinite(cov_re) or cov_re < SINGULAR_TOL:
        return ("singular fit: between-patient variance estimated at 0 (random intercept "
                "not identified); no estimate reported")
    if any("Hessian" in k for k in kinds) or not np.all(np.isfinite(res.bse_fe)):
        return "singular fit: Hessian not positive definite; no estimate reported"
    return ""


def _feature_rows(
    df: pd.DataFrame, f: str, tps: pd.DataFrame, *, min_per_group: int, alpha: float,
    family: str, scope_note: str,
) -> list[dict]:
    """The contrast rows of one feature's mixed model (NA with the reason when not fitted)."""
    labels = list(tps.index)
    d = df.loc[df["timepoint"].astype(str).isin(labels),
               ["patient", "timepoint", "responder", f]].dropna()
    pts = d.groupby("patient", sort=True)["responder"].first()
    base = dict(feature=f, family=family, test="mixedlm", n_responders=int(pts.sum()),
                n_nonresponders=int((~pts).sum()), n_samples=len(d), reference=labels[0])
    specs = _contrast_specs(tps)

    def rows(note: str, est: list | None = None) -> list[dict]:
        out = []
        for i, (contrast, comparison, tp, _) in enumerate(specs):
            e = est[i] if est else (np.nan, np.nan, np.nan, np.nan)
            out.append(dict(base, contrast=contrast, comparison=comparison, timepoint=tp,
                            effect=e[0], ci_low=e[1], ci_high=e[2], pvalue=e[3], note=note))
        return out

    y = d[f].to_numpy(float)
    problem = _cell_problem(d, labels, min_per_group)
    if not problem and np.allclose(y, y[0]):
        problem = "not fitted: constant values"
    if not problem and d.groupby("patient").size().max() < 2:
        problem = "not fitted: no patient with more than one sample"
    X = _design(d, labels)
    if not problem and np.linalg.matrix_rank(X) < X.shape[1]:
        problem = "not fitted: design rank-deficient (timepoint x group cells without values)"
    if problem:
        return rows(problem)
    y_sd = float(np.std(y))
    res, err, kinds = _fit_mixedlm((y - y.mean()) / y_sd, X, d["patient"].to_numpy())
    if res is None:
        return rows(err)
    problem = _fit_problem(res, kinds)
    if problem:
        return rows(problem)
    tt = res.t_test(np.vstack([s[3] for s in specs]))
    ci = np.asarray(tt.conf_int(alpha=alpha)) * y_sd
    est = [(float(e) * y_sd, float(lo), float(hi), float(p)) for e, (lo, hi), p in
           zip(np.ravel(tt.effect), ci, np.ravel(tt.pvalue), strict=True)]
    return rows(f"MixedLM REML, random intercept per patient; Wald CI; {scope_note}", est)


def longitudinal_models(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    features_to_test: Sequence[str] | None = None,
    primary_features: Sequence[str] = (),
    compartment: str = "PB",
    primary_timepoint: str = "IP",
    responders: Sequence[str] = ("CR",),
    excluded: Sequence[str] = ("NE",),
    min_patients_per_group: int = 3,
    alpha: float = 0.05,
    clinical_source: str = "clinical table",
) -> pd.DataFrame:
    """Categorical-time mixed model of each feature within one compartment, by response.

    Parameters
    ----------
    features
        Per-sample feature table (``sample_features.tsv``).
    clinical
        Clinical table (``patient``, ``response``).
    features_to_test
        Features to model (those tested for association); default every feature column.
    primary_features
        The primary-panel features: ``family`` is ``primary`` for them, else
        ``exploratory``.
    compartment
        ``compartment`` value of the samples modelled (blood). Samples of the
        ``primary_timepoint`` (the product) never enter.
    responders, excluded
        Response codes counted as responders / left out.
    min_patients_per_group
        A timepoint needs this many patients with a value in each group.
    alpha, clinical_source
        1 - confidence level of the intervals; file name for messages.

    Returns
    -------
    pandas.DataFrame
        :data:`LONGITUDINAL_COLUMNS`: per feature, one row per contrast of
        :data:`CONTRASTS` and timepoint (changes: each later timepoint),
        effects on the feature's scale with Wald CIs. Not fitted, singular and
        non-converged models keep their rows with NA estimates and the reason in
        ``note``. BH q-values within each contrast type across features and
        timepoints. A single ``skipped`` row when the design allows no model.
    """
    labels = response_labels(clinical, responders=responders, excluded=excluded,
                             source=clinical_source)
    df, notes = blood_samples(features, labels, compartment=compartment,
                              primary_timepoint=primary_timepoint)
    for n in notes:
        logger.warning("longitudinal: %s", n)
    tps, problem = _usable_timepoints(timepoint_order(df), compartment=compartment,
                                      min_per_group=min_patients_per_group)
    if problem:
        logger.warning("longitudinal: %s", problem)
        return skipped_frame(LONGITUDINAL_COLUMNS, feature="(all)", test="skipped",
                             contrast="NA", note=problem)
    scope_note = _scope_note(df[df["timepoint"].astype(str).isin(tps.index)],
                             compartment=compartment, primary_timepoint=primary_timepoint)
    if features_to_test is None:
        features_to_test = feature_columns(df.drop(columns=["responder"]))
    primary = set(primary_features)
    rows = []
    for f in features_to_test:
        if f in df.columns:
            fam = "primary" if f in primary else "exploratory"
            rows += _feature_rows(df, f, tps, min_per_group=min_patients_per_group,
                                  alpha=alpha, family=fam, scope_note=scope_note)
    out = add_qvalues(pd.DataFrame(rows, columns=list(LONGITUDINAL_COLUMNS)), by="contrast")
    n_fit = out.groupby("feature")["effect"].apply(lambda s: s.notna().any())
    logger.info("longitudinal: %d feature(s) modelled over %s, %d fitted, %d singular",
                len(n_fit), list(tps.index), int(n_fit.sum()),
                int(out.drop_duplicates("feature")["note"].str.startswith("singular").sum()))
    out["_c"] = out["contrast"].map({c: i for i, c in enumerate(CONTRASTS)})
    out["_t"] = out["timepoint"].map({t: i for i, t in enumerate(tps.index)})
    out = out.sort_values(["_c", "_t", "pvalue", "feature"], kind="mergesort")
    return out.drop(columns=["_c", "_t"]).reset_index(drop=True)
