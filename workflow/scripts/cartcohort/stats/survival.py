"""Cox models of progression-free survival on the product features (lifelines)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import InputError, Problem
from ._utils import skipped_frame
from .labels import feature_columns
from .response import bh_qvalues

#: Columns of ``survival.tsv``.
SURVIVAL_COLUMNS: tuple[str, ...] = (
    "feature",
    "test",
    "effect",
    "ci_low",
    "ci_high",
    "pvalue",
    "qvalue",
    "n_patients",
    "n_events",
    "note",
)
_EVENT_CODES = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0}


def _event_codes(clin: pd.DataFrame, event: str) -> pd.Series:
    """The event column as 1.0 / 0.0 / NaN (missing).

    Raises
    ------
    InputError
        When a value is not an event code.
    """
    ev_text = clin[event].astype("string").str.strip().str.lower()
    ev = ev_text.map(_EVENT_CODES).astype(float)
    bad_ev = ev_text[ev_text.notna() & (ev_text != "") & ev.isna()]
    if len(bad_ev):
        raise InputError(
            [
                Problem(
                    file="clinical table",
                    where=f"patient {bad_ev.index[0]}, column '{event}'",
                    what=f"value {clin[event].loc[bad_ev.index[0]]!r} is not an event code",
                    fix="code events as 1 (progression or death) and 0 (censored)",
                )
            ]
        )
    return ev


def _fit_cox(dd: pd.DataFrame, *, alpha: float) -> tuple[object, str]:
    """Unpenalised Cox fit, refitted with a small penalizer when it does not converge.

    Returns
    -------
    fitter, note
        The fitted ``CoxPHFitter`` (None when neither fit converged) and the note.
    """
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError, ConvergenceWarning

    note = "Cox PH, unadjusted, log HR per SD"
    for penalizer in (0.0, 0.1):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                cph = CoxPHFitter(penalizer=penalizer, alpha=alpha)
                cph.fit(dd, duration_col="T", event_col="E")
            except ConvergenceError:
                continue
        warned = any(issubclass(type(w.message), ConvergenceWarning) for w in caught)
        if warned and penalizer == 0:
            continue
        if penalizer:
            note += f"; ML did not converge, refitted with penalizer={penalizer}"
        return cph, note
    return None, note


def _cox_row(pt: pd.DataFrame, f: str, *, min_events: int, alpha: float) -> dict:
    """The row of one feature: log hazard ratio per SD (NA with the reason when not fitted)."""
    d = pt[[f, "_T", "_E"]].dropna()
    base = dict(feature=f, test="cox_ph", n_patients=len(d), n_events=int(d["_E"].sum()))
    na = dict(effect=np.nan, ci_low=np.nan, ci_high=np.nan, pvalue=np.nan)
    sd = d[f].std(ddof=1) if len(d) > 1 else np.nan
    if base["n_events"] < min_events or not np.isfinite(sd) or sd == 0:
        return dict(base, **na, note=f"not fitted: < {min_events} events or constant feature")
    dd = pd.DataFrame({"z": (d[f] - d[f].mean()) / sd, "T": d["_T"], "E": d["_E"].astype(int)})
    fitted, note = _fit_cox(dd, alpha=alpha)
    if fitted is None:
        return dict(base, **na, note="not fitted: Cox model did not converge")
    s = fitted.summary.loc["z"]
    return dict(
        base,
        effect=float(s["coef"]),
        ci_low=float(s[f"coef lower {100 * (1 - alpha):g}%"]),
        ci_high=float(s[f"coef upper {100 * (1 - alpha):g}%"]),
        pvalue=float(s["p"]),
        note=note,
    )


def survival_models(
    patients: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    features: Sequence[str] | None = None,
    duration: str = "pfs_days",
    event: str = "pfs_event",
    min_events: int = 3,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Univariable Cox proportional-hazards model per feature (lifelines).

    Every patient with a primary-timepoint value and non-missing
    ``duration``/``event`` is used (response labels are not needed). Effect:
    log hazard ratio per SD of the feature (positive = shorter PFS). When the
    clinical table has no PFS columns, or fewer than ``min_events`` events, a
    single ``skipped`` row with the reason is returned.

    Returns
    -------
    pandas.DataFrame
        :data:`SURVIVAL_COLUMNS`, one row per feature sorted by p-value and
        feature, BH q-values across features.
    """
    clin = clinical if "patient" in clinical.columns else clinical.reset_index()
    if duration not in clin.columns or event not in clin.columns:
        return skipped_frame(
            SURVIVAL_COLUMNS,
            feature="(all)",
            test="skipped",
            note=f"skipped: clinical table has no '{duration}'/'{event}' columns",
        )
    clin = clin.assign(patient=clin["patient"].astype(str)).set_index("patient")
    dur = pd.to_numeric(clin[duration], errors="coerce")
    ev = _event_codes(clin, event)
    pt = patients.assign(patient=patients["patient"].astype(str)).set_index("patient")
    pt = pt.join(pd.DataFrame({"_T": dur, "_E": ev}), how="left")
    pt = pt[pt["_T"].notna() & pt["_E"].notna()]
    n_events = int(pt["_E"].sum())
    if len(pt) == 0 or n_events < min_events:
        problem = (
            f"skipped: no patient has both '{duration}' and '{event}'"
            if len(pt) == 0
            else f"skipped: {n_events} event(s) (< {min_events})"
        )
        return skipped_frame(SURVIVAL_COLUMNS, feature="(all)", test="skipped", note=problem)
    feats = list(features) if features is not None else feature_columns(pt.reset_index())
    feats = [
        f for f in feats if f in pt.columns and not f.startswith("count_") and f not in ("_T", "_E")
    ]
    rows = [_cox_row(pt, f, min_events=min_events, alpha=alpha) for f in feats]
    out = pd.DataFrame(rows, columns=list(SURVIVAL_COLUMNS))
    out["qvalue"] = bh_qvalues(out["pvalue"].to_numpy(float))
    return out.sort_values(["pvalue", "feature"], kind="mergesort").reset_index(drop=True)
