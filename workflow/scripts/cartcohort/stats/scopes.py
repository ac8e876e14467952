"""Scopes and multiple-testing families of the association tables.

Two **scopes** are kept apart (:func:`cartcohort.tl.features.feature_scope`):

- ``product`` - measured on the primary-timepoint (infusion-product) library; these
  alone may predict response and go to ``association.tsv``;
- ``in_vivo`` - measured after infusion: persistence and overlap of product clones on
  the product row, and every feature of each post-infusion timepoint
  (:func:`post_infusion_features`, named ``<feature>@<timepoint>``); outcome
  correlates, not predictors, in ``in_vivo_correlates.tsv``.

Within the product scope, the pre-specified primary panel
(:class:`~cartcohort.stats.panel.PrimaryPanel`) is one BH family (``family`` =
``primary``) and every other feature another (``exploratory``); q-values are computed
within each ``test`` x ``family``. Every panel feature gets a row: a tested one its test
rows, any other (missing from the table, not testable, twin of another panel feature) a
``skipped`` row that says why, so a panel gap is visible and never a crash.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..tl.features import feature_scope
from ._utils import ASSOCIATION_COLUMNS, notes_table
from .labels import feature_columns, patient_table
from .families import TESTS
from .panel import PrimaryPanel
from .response import add_qvalues
from .twins import Twins

#: ``family`` values, in sort order.
FAMILIES_BH: tuple[str, ...] = ("primary", "exploratory")
#: Prefix of the note of every in vivo row.
IN_VIVO_NOTE = "outcome correlate, not a predictor (measured after infusion)"


def split_scopes(features: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(product, in_vivo)`` features, each in the given order."""
    product = [f for f in features if feature_scope(f) == "product"]
    in_vivo = [f for f in features if feature_scope(f) != "product"]
    return product, in_vivo


def _post_timepoints(features: pd.DataFrame, primary_timepoint: str) -> tuple[list[str], list]:
    """Timepoints after the primary one (median ``timepoint_day`` later), and notes."""
    tp = features["timepoint"].astype(str)
    day = pd.to_numeric(features.get("timepoint_day"), errors="coerce")
    if day is None or not isinstance(day, pd.Series):
        day = pd.Series(np.nan, index=features.index)
    days = day.groupby(tp).median()
    t0 = days.get(str(primary_timepoint), np.nan)
    post, notes = [], []
    for t in sorted(set(tp) - {str(primary_timepoint)}):
        if np.isfinite(t0) and np.isfinite(days[t]) and days[t] > t0:
            post.append(t)
        else:
            notes.append(("in_vivo", t, f"timepoint {t} not analysed as post-infusion: its "
                          "timepoint_day is missing or not after the primary timepoint's"))
    return post, notes


def post_infusion_features(
    features: pd.DataFrame,
    *,
    patients: pd.Series,
    responder: pd.Series,
    primary_timepoint: str,
    min_per_group: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every feature of each post-infusion timepoint, one row per patient of ``patients``.

    A post-infusion timepoint is one whose median ``timepoint_day`` is later than the
    primary timepoint's. Its features are aggregated per patient like the product's
    (:func:`~cartcohort.stats.labels.patient_table`) and named ``<feature>@<timepoint>``;
    they are in vivo features whatever their name. A timepoint with fewer than
    ``min_per_group`` patients of a response group is left out with one note.

    Returns
    -------
    table, notes
        ``table`` aligned with ``patients`` (may have no column); ``notes`` (scope
        ``in_vivo``).
    """
    post, notes = _post_timepoints(features, primary_timepoint)
    pid = patients.astype(str).to_numpy()
    resp = np.asarray(responder, dtype=bool)
    parts = []
    for t in post:
        pt = patient_table(features, timepoint=t).set_index("patient")
        has = np.isin(pid, pt.index.astype(str))
        n1, n0 = int((has & resp).sum()), int((has & ~resp).sum())
        if min(n1, n0) < min_per_group:
            notes.append(("in_vivo", t, f"timepoint {t} not tested: samples of {n1} "
                          f"responder(s) and {n0} non-responder(s) (< {min_per_group} per group)"))
            continue
        cols = [c for c in feature_columns(pt) if not c.startswith("count_") and c != "n_cells"]
        parts.append(pt.reindex(pid)[cols].add_suffix(f"@{t}").reset_index(drop=True))
    table = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=range(len(pid)))
    return table, notes_table(notes)


def panel_label(panel: PrimaryPanel | None) -> str:
    """The ``panel_version`` cell: the panel's version, ``none`` without a panel."""
    return "none" if panel is None else str(panel.version)


def label_rows(
    table: pd.DataFrame, *, scope: str, panel: PrimaryPanel | None, twins: Twins
) -> pd.DataFrame:
    """A copy of ``table`` with ``scope``, ``family``, ``panel_version`` and ``twins`` set.

    ``family`` is ``primary`` for a product feature of the panel, else ``exploratory``;
    in vivo rows are ``exploratory`` and their note starts with :data:`IN_VIVO_NOTE`.
    """
    out = table.copy()
    names = set(panel.names) if panel is not None and scope == "product" else set()
    out["scope"] = scope
    out["family"] = np.where(out["feature"].isin(names), "primary", "exploratory")
    out["panel_version"] = panel_label(panel)
    out["twins"] = [twins.label(f) for f in out["feature"]]
    if scope == "in_vivo":
        note = out["note"].fillna("").astype(str)
        out["note"] = [f"{IN_VIVO_NOTE}; {n}" if n else IN_VIVO_NOTE for n in note]
    return out


def finish_table(table: pd.DataFrame) -> pd.DataFrame:
    """BH q-values within each ``test`` x ``family``; rows sorted by test, family, p, feature.

    ``skipped`` rows (no p-value) come last.
    """
    if table.empty:
        return table.reset_index(drop=True)
    out = add_qvalues(table, by=["test", "family"])
    out["_t"] = out["test"].map({t: i for i, t in enumerate(TESTS)}).fillna(len(TESTS))
    out["_f"] = out["family"].map({f: i for i, f in enumerate(FAMILIES_BH)}).fillna(2)
    out = out.sort_values(["_t", "_f", "pvalue", "feature"], kind="mergesort")
    return out.drop(columns=["_t", "_f"]).reset_index(drop=True)


def panel_gap_rows(
    panel: PrimaryPanel | None,
    *,
    columns: Sequence[str],
    tested: Sequence[str],
    twins: Twins,
    notes: pd.DataFrame,
    n_responders: int,
    n_nonresponders: int,
) -> pd.DataFrame:
    """One ``skipped`` row per panel feature that was not tested, with the reason.

    Parameters
    ----------
    panel
        The primary panel (``None``: no rows).
    columns
        Feature columns of the patient table.
    tested
        Features that were tested.
    twins
        The twin collapse (a panel feature may be a twin of another panel feature).
    notes
        Notes of the feature checks (``item`` = feature), for the reason.
    n_responders, n_nonresponders
        Group sizes of the comparison.
    """
    if panel is None:
        return pd.DataFrame(columns=list(ASSOCIATION_COLUMNS))
    twin_of = {t: rep for rep, ts in twins.twins.items() for t, _ in ts}
    noted = dict(zip(notes["item"].astype(str), notes["note"].astype(str), strict=True))
    rows = []
    for f in panel.names:
        if f in tested:
            continue
        if f not in columns:
            why = (f"not tested: primary panel feature ({panel.label}) is not a column of the "
                   "feature table; check the panel file (associate.primary_panel) against "
                   "sample_features.tsv")
        elif f in twin_of:
            why = f"not tested: twin of {twin_of[f]} (see its twins column)"
        else:
            why = noted.get(f, "not tested")
        rows.append({c: np.nan for c in ASSOCIATION_COLUMNS} | dict(
            feature=f, test="skipped", n_responders=n_responders,
            n_nonresponders=n_nonresponders, effect_type="NA", direction="NA", scope="product",
            family="primary", panel_version=panel_label(panel), twins="", note=why,
        ))
    return pd.DataFrame(rows, columns=list(ASSOCIATION_COLUMNS))
