"""Cox models of a named time-to-event endpoint: product features, and a landmark analysis.

The endpoint (``associate.survival``: a label such as PFS, and the clinical columns of
its time in days from infusion and of its event code) is named on every row.

Two analyses, kept apart because their time zeros differ:

- ``baseline``: product features only (:func:`~cartcohort.tl.features.feature_scope`
  ``== "product"``, read on the primary-timepoint library), time from infusion. A
  feature measured after infusion never enters here: it is only known for patients who
  lived long enough to be sampled, which is immortal-time bias.
- ``landmark day L``: in vivo features, read on the patient's latest blood library taken
  at or before day L, among the patients still event-free and followed at day L, with
  time measured from day L (Anderson, Cain & Gelber 1983, J Clin Oncol 1:710; Dafni
  2011, Circ Cardiovasc Qual Outcomes 4:363). Product-row columns that summarise all
  post-infusion samples (persistence) are not used: they may use samples after day L.

Each feature gets a univariable Cox model (lifelines), log hazard ratio per SD of the
feature. A model is refused (NA estimate, the reason in ``note``) when the events per
variable fall below ``min_events_per_variable`` (Peduzzi et al. 1995, J Clin Epidemiol
48:1503) and when the partial likelihood does not converge (monotone likelihood, no
finite hazard ratio).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import InputError, Problem
from ..tl.features import IN_VIVO_REPERTOIRE, feature_scope
from ._utils import skipped_frame
from .labels import feature_columns, patient_table
from .response import add_qvalues

logger = logging.getLogger(__name__)

#: Columns of ``survival.tsv``.
SURVIVAL_COLUMNS: tuple[str, ...] = (
    "endpoint",
    "analysis",
    "feature",
    "scope",
    "test",
    "effect",
    "ci_low",
    "ci_high",
    "pvalue",
    "qvalue",
    "n_patients",
    "n_events",
    "events_per_variable",
    "note",
)
_EVENT_CODES = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0}
_KEY = "associate.survival"


def landmark_label(landmark_day: float) -> str:
    """The ``analysis`` label of the landmark analysis (``landmark day 30``)."""
    return f"landmark day {landmark_day:g}"


def endpoint_not_given(clinical: pd.DataFrame, *, time: str | None, event: str | None) -> str:
    """Why no survival analysis is run ('' when one is): the two keys are null, or the
    clinical table has neither column (a cohort without outcome data, e.g. a published
    cell table). Only one of the two columns present is an error
    (:func:`endpoint_times`), not a reason to skip."""
    if time is None or event is None:
        return f"skipped: {_KEY}.time/event not set"
    cols = set(clinical.columns) | set(clinical.index.names)
    if time not in cols and event not in cols:
        return (f"skipped: the clinical table has neither '{time}' nor '{event}' "
                f"({_KEY}.time/event); add them, or set both keys to null")
    return ""


def endpoint_times(
    clinical: pd.DataFrame,
    *,
    endpoint: str,
    time: str,
    event: str,
    source: str = "clinical table",
) -> pd.DataFrame:
    """The endpoint of each patient: time in days from infusion and event (1) / censored (0).

    Parameters
    ----------
    clinical
        Clinical table (``patient`` column or index).
    endpoint
        Endpoint label (for messages), e.g. ``PFS``.
    time, event
        Clinical columns of the time (days from infusion) and the event code.
    source
        File name for messages.

    Returns
    -------
    pandas.DataFrame
        Indexed by patient (str): ``time`` and ``event`` (0/1); patients missing either
        are left out (logged).

    Raises
    ------
    InputError
        When a column is missing (naming it and the config key), a time is not a
        non-negative number or an event is not a 0/1 code.
    """
    clin = clinical if "patient" in clinical.columns else clinical.reset_index()
    missing = [
        Problem(file=source, where=f"column '{col}'",
                what=f"the {endpoint} {kind} column named by {_KEY}.{kind} is missing",
                fix=f"add the column, set {_KEY}.{kind} to a column of {source}, or set "
                    f"{_KEY}.time and {_KEY}.event to null to skip survival")
        for kind, col in (("time", time), ("event", event))
        if col not in clin.columns
    ]
    if missing:
        raise InputError(missing)
    clin = clin.assign(patient=clin["patient"].astype(str)).set_index("patient")
    problems = []
    t = pd.to_numeric(clin[time], errors="coerce")
    bad_t = clin.index[(t.isna() & clin[time].notna()) | (t < 0)]
    if len(bad_t):
        problems.append(Problem(
            file=source, where=f"patient {bad_t[0]}, column '{time}'",
            what=f"value {clin.loc[bad_t[0], time]!r} is not a time in days >= 0",
            fix=f"give {endpoint} time in days from infusion (empty when unknown)"))
    ev_text = clin[event].astype("string").str.strip().str.lower()
    ev = ev_text.map(_EVENT_CODES).astype(float)
    bad_ev = ev_text.index[ev_text.notna() & (ev_text != "") & ev.isna()]
    if len(bad_ev):
        problems.append(Problem(
            file=source, where=f"patient {bad_ev[0]}, column '{event}'",
            what=f"value {clin.loc[bad_ev[0], event]!r} is not an event code",
            fix=f"code {endpoint} events as 1 (event) and 0 (censored)"))
    if problems:
        raise InputError(problems)
    out = pd.DataFrame({"time": t, "event": ev})
    unknown = out.index[out.isna().any(axis=1)]
    if len(unknown):
        logger.warning("survival: %d patient(s) without %s time/event left out: %s",
                       len(unknown), endpoint, list(unknown[:5]))
    return out.dropna().astype({"event": int})


def landmark_times(times: pd.DataFrame, *, landmark_day: float) -> pd.DataFrame:
    """Patients event-free and followed beyond ``landmark_day``, times from the landmark.

    A patient whose event or censoring falls on or before the landmark day is not at
    risk at the landmark and is left out.
    """
    keep = times[times["time"] > landmark_day]
    return keep.assign(time=keep["time"] - landmark_day)


def landmark_features(
    features: pd.DataFrame,
    *,
    compartment: str,
    primary_timepoint: str,
    landmark_day: float,
    source: str = "results/tables/sample_features.tsv",
) -> pd.DataFrame:
    """In vivo features per patient: its latest ``compartment`` library up to the landmark.

    Returns
    -------
    pandas.DataFrame
        :func:`~cartcohort.stats.patient_table` of those libraries (several libraries of
        the same day: ``n_cells``-weighted mean), with ``timepoint_day``; empty when
        no library qualifies.
    """
    df = features.copy()
    df["timepoint_day"] = pd.to_numeric(df.get("timepoint_day"), errors="coerce")
    if "compartment" not in df.columns:
        return pd.DataFrame(columns=["patient"])
    df = df[(df["compartment"].astype(str) == compartment)
            & (df["timepoint"].astype(str) != str(primary_timepoint))
            & (df["timepoint_day"] <= landmark_day)]
    if df.empty:
        return pd.DataFrame(columns=["patient"])
    df = df.assign(patient=df["patient"].astype(str))
    last = df.groupby("patient")["timepoint_day"].transform("max")
    df = df[df["timepoint_day"] == last].assign(timepoint="_landmark")
    out = patient_table(df, timepoint="_landmark", source=source)
    day = df.groupby("patient")["timepoint_day"].first()
    return out.assign(timepoint_day=day.reindex(out["patient"]).to_numpy())


def epv_shortfall(n_events: int, min_events_per_variable: float, n_variables: int = 1) -> str:
    """Why a model with ``n_events`` is refused (the events-per-variable rule)."""
    epv = n_events / n_variables
    return (f"{n_events} events for {n_variables} variable{'s' * (n_variables > 1)} = {epv:g} "
            f"events per variable < {min_events_per_variable:g} "
            f"({_KEY}.min_events_per_variable)")


def _fit_cox(dd: pd.DataFrame, *, alpha: float) -> tuple[object, str]:
    """Unpenalised Cox fit of ``z``; (None, reason) when it does not converge."""
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError, ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cph = CoxPHFitter(alpha=alpha).fit(dd, duration_col="T", event_col="E")
        except ConvergenceError as e:
            return None, f"not fitted: Cox partial likelihood did not converge ({e})"[:200]
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        return None, ("not fitted: Cox partial likelihood did not converge (monotone "
                      "likelihood: the feature separates events from censorings; no finite "
                      "hazard ratio)")
    return cph, ""


def cox_row(
    table: pd.DataFrame,
    times: pd.DataFrame,
    feature: str,
    *,
    min_events_per_variable: float,
    alpha: float = 0.05,
) -> dict:
    """Univariable Cox model of one feature: log hazard ratio per SD (NA with the reason).

    Parameters
    ----------
    table
        One row per patient (``patient`` column) with ``feature``.
    times
        :func:`endpoint_times` (or :func:`landmark_times`) of the analysis.
    feature
        Column of ``table``.
    min_events_per_variable
        Fewer events per model variable than this: not fitted.
    alpha
        1 - confidence level.

    Returns
    -------
    dict
        ``effect``, ``ci_low``, ``ci_high``, ``pvalue``, ``n_patients``, ``n_events``,
        ``events_per_variable`` and ``note``.
    """
    x = pd.to_numeric(table.set_index(table["patient"].astype(str))[feature], errors="coerce")
    d = times.join(x.rename("x"), how="inner").dropna()
    n_ev = int(d["event"].sum())
    epv = n_ev / 1.0
    row = dict(effect=np.nan, ci_low=np.nan, ci_high=np.nan, pvalue=np.nan,
               n_patients=len(d), n_events=n_ev, events_per_variable=epv)
    if epv < min_events_per_variable:
        return dict(row, note="not fitted: " + epv_shortfall(n_ev, min_events_per_variable))
    sd = float(d["x"].std(ddof=1))
    if not np.isfinite(sd) or sd == 0:
        return dict(row, note="not fitted: constant feature")
    dd = pd.DataFrame({"z": (d["x"] - d["x"].mean()) / sd, "T": d["time"], "E": d["event"]})
    cph, problem = _fit_cox(dd, alpha=alpha)
    if cph is None:
        return dict(row, note=problem)
    s = cph.summary.loc["z"]
    level = f"{100 * (1 - alpha):g}%"
    return dict(row, effect=float(s["coef"]), ci_low=float(s[f"coef lower {level}"]),
                ci_high=float(s[f"coef upper {level}"]), pvalue=float(s["p"]),
                note=(f"Cox PH, univariable, log HR per SD ({sd:.3g}); {n_ev} events / 1 "
                      f"variable = {epv:g} events per variable (min "
                      f"{min_events_per_variable:g})"))


def _analysis_rows(
    table: pd.DataFrame, times: pd.DataFrame, feats: Sequence[str], *, base: dict,
    min_events_per_variable: float, alpha: float, note_suffix: str,
) -> list[dict]:
    """One row per feature; a single refused row when the analysis has too few events."""
    ev = times["event"].reindex(table["patient"].astype(str)).dropna()
    n_ev = int(ev.sum())
    if n_ev < min_events_per_variable:
        return _skipped(base, "not fitted: " + epv_shortfall(n_ev, min_events_per_variable),
                        n_patients=len(ev), n_events=n_ev, events_per_variable=float(n_ev))
    rows = []
    for f in feats:
        r = cox_row(table, times, f, min_events_per_variable=min_events_per_variable,
                    alpha=alpha)
        if not r["note"].startswith("not fitted"):
            r["note"] += note_suffix
        rows.append(dict(base, feature=f, test="cox_ph", **r))
    return rows


def _skipped(base: dict, note: str, **counts: float) -> list[dict]:
    logger.warning("survival (%s): %s", base["analysis"], note)
    return skipped_frame(SURVIVAL_COLUMNS, **base, **counts, feature="(all)", test="skipped",
                         note=note).to_dict("records")


def _landmark_rows(
    features: pd.DataFrame, times: pd.DataFrame, candidates: Sequence[str], *, base: dict,
    compartment: str, primary_timepoint: str, landmark_day: float,
    min_events_per_variable: float, alpha: float, source: str,
) -> list[dict]:
    """Rows of the landmark analysis of the in vivo features."""
    lm = landmark_features(features, compartment=compartment,
                           primary_timepoint=primary_timepoint, landmark_day=landmark_day,
                           source=source)
    if lm.empty:
        return _skipped(base, f"skipped: no {compartment} library at or before day "
                              f"{landmark_day:g} (associate.survival.landmark_day)")
    at_risk = landmark_times(times, landmark_day=landmark_day)
    wanted = [*candidates, *(c for c in IN_VIVO_REPERTOIRE if c not in candidates)]
    feats = [f for f in wanted if f in lm.columns and lm[f].notna().sum() > 1]
    if not feats:
        return _skipped(base, "skipped: no in vivo feature with values at the landmark")
    suffix = (f"; in vivo feature of the latest {compartment} library up to day "
              f"{landmark_day:g}; patients event-free and followed at day {landmark_day:g}, "
              f"time from day {landmark_day:g}")
    return _analysis_rows(lm, at_risk, feats, base=base, alpha=alpha, note_suffix=suffix,
                          min_events_per_variable=min_events_per_variable)


def survival_models(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    endpoint: str,
    time: str | None,
    event: str | None,
    min_events_per_variable: float,
    landmark_day: float,
    primary_timepoint: str = "IP",
    blood_compartment: str = "PB",
    features_to_test: Sequence[str] | None = None,
    alpha: float = 0.05,
    source: str = "results/tables/sample_features.tsv",
    clinical_source: str = "clinical table",
) -> pd.DataFrame:
    """Univariable Cox models of one endpoint: product features, then a landmark analysis.

    Parameters
    ----------
    features
        Per-sample feature table (``sample_features.tsv``).
    clinical
        Clinical table with the endpoint's ``time`` and ``event`` columns.
    endpoint
        Endpoint label written on every row (``associate.survival.endpoint``).
    time, event
        Clinical columns of the endpoint; both None, or neither in ``clinical``: no
        survival analysis (one ``skipped`` row saying why, :func:`endpoint_not_given`).
    min_events_per_variable
        Models with fewer events per variable are refused.
    landmark_day
        Day of the landmark analysis of the in vivo features.
    primary_timepoint
        Timepoint of the product libraries (the baseline analysis).
    blood_compartment
        ``compartment`` of the blood libraries read at the landmark.
    features_to_test
        Candidate features (default: every feature column); only product-scope ones
        enter the baseline analysis.
    alpha
        1 - confidence level.
    source, clinical_source
        File names for messages.

    Returns
    -------
    pandas.DataFrame
        :data:`SURVIVAL_COLUMNS`; BH q-values within each analysis; sorted by
        analysis, p-value and feature.

    Raises
    ------
    InputError
        When the endpoint's columns are missing or malformed (:func:`endpoint_times`).
    """
    why_not = endpoint_not_given(clinical, time=time, event=event)
    if why_not:
        logger.warning("survival: %s", why_not)
        base = dict(endpoint=endpoint, analysis="NA", scope="NA")
        return pd.DataFrame(_skipped(base, why_not), columns=list(SURVIVAL_COLUMNS))
    times = endpoint_times(clinical, endpoint=endpoint, time=time, event=event,
                           source=clinical_source)
    product = patient_table(features, timepoint=primary_timepoint, source=source)
    cands = list(features_to_test) if features_to_test is not None else feature_columns(product)
    cands = [f for f in cands if not f.startswith("count_")]
    base = dict(endpoint=endpoint, analysis="baseline", scope="product")
    feats = [f for f in cands if feature_scope(f) == "product" and f in product.columns]
    rows = _analysis_rows(product, times, feats, base=base, alpha=alpha,
                          min_events_per_variable=min_events_per_variable,
                          note_suffix=f"; product feature, time from infusion ({time})")
    lbase = dict(endpoint=endpoint, analysis=landmark_label(landmark_day), scope="in_vivo")
    rows += _landmark_rows(features, times, cands, base=lbase,
                           compartment=blood_compartment, primary_timepoint=primary_timepoint,
                           landmark_day=landmark_day, alpha=alpha, source=source,
                           min_events_per_variable=min_events_per_variable)
    out = add_qvalues(pd.DataFrame(rows, columns=list(SURVIVAL_COLUMNS)), by="analysis")
    out["_a"] = (out["analysis"] != "baseline").astype(int)
    out = out.sort_values(["_a", "pvalue", "feature"], kind="mergesort").drop(columns="_a")
    return out.reset_index(drop=True)
