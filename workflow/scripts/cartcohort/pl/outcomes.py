"""Figures of time and survival: per-patient blood trajectories and Kaplan-Meier curves.

Both figures are split into pages (one PNG each, in one folder per figure) so that every
page keeps a landscape shape that the report shows at full height at 1400 x 1000.

- Trajectories: one panel per primary-panel feature measured in blood, one line per
  patient over the blood timepoints (categorical, ordered by median day), coloured by
  response; the product is left out, as in ``longitudinal.tsv``.
- Kaplan-Meier (lifelines ``KaplanMeierFitter``, numbers at risk under each panel with
  ``lifelines.plotting.add_at_risk_counts``): first by response group, from the landmark
  day among patients event-free and followed at that day (response is assessed after
  infusion: comparing from day 0 would credit responders with the time before their
  response, Anderson, Cain & Gelber 1983); then by the median split of each primary-panel
  product feature, from infusion. A panel with fewer events than
  ``min_events_per_variable`` is not drawn; it says why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..dictionary import FeatureDictionary
from ..errors import CartCohortError
from ..stats.labels import patient_table, response_labels
from ..stats.longitudinal import timepoint_order
from ..stats.panel import PrimaryPanel
from ..stats.survival import (
    endpoint_not_given,
    endpoint_times,
    epv_shortfall,
    landmark_times,
)
from ._save import note_figure, write_pages

logger = logging.getLogger(__name__)

GROUP_COLORS = {"responder": "#1b9e77", "non-responder": "#d95f02", "not evaluable": "#9e9e9e"}
SPLIT_COLORS = {"low": "#2166ac", "high": "#b2182b"}
#: Panels per page: (rows, columns); 4.2 x 3.3 in per trajectory panel, 4.4 x 4.6 in
#: per Kaplan-Meier panel with its at-risk table: both pages are about 0.6 tall per wide.
TRAJECTORY_GRID = (3, 4)
KM_GRID = (2, 4)


def _group(labels: pd.DataFrame, patients: pd.Series) -> pd.Series:
    """``responder`` / ``non-responder`` / ``not evaluable`` (excluded or missing response)."""
    r = labels["responder"].reindex(patients.astype(str))
    out = np.where(r.isna().to_numpy(), "not evaluable",
                   np.where(r.fillna(False).astype(bool).to_numpy(), "responder",
                            "non-responder"))
    return pd.Series(out, index=patients.index)


def trajectory_data(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    panel_features: Sequence[str],
    compartment: str,
    primary_timepoint: str,
    responders: Sequence[str],
    exclude_responses: Sequence[str],
) -> tuple[pd.DataFrame, list[str]]:
    """Long table of the blood values of the panel features, and the timepoint order.

    Returns
    -------
    data, timepoints
        ``patient, group, timepoint, feature, value`` (one row per library and
        feature with a value, features in panel order; several libraries of a patient
        at one timepoint: their mean); the blood timepoint labels (``D14\n(day 14)``)
        ordered by median day.
    """
    labels = response_labels(clinical, responders=responders, excluded=exclude_responses)
    df = features[(features["compartment"].astype(str) == compartment)
                  & (features["timepoint"].astype(str) != str(primary_timepoint))].copy()
    feats = [f for f in panel_features if f in df.columns and df[f].notna().any()]
    cols = ["patient", "group", "timepoint", "feature", "value"]
    if df.empty or not feats:
        return pd.DataFrame(columns=cols), []
    df["patient"] = df["patient"].astype(str)
    df["timepoint"] = df["timepoint"].astype(str)
    df["timepoint_day"] = pd.to_numeric(df["timepoint_day"], errors="coerce")
    days = timepoint_order(df.assign(responder=True))["day"]
    order = [f"{t}\n(day {d:g})" for t, d in days.items()]
    long = df.melt(id_vars=["patient", "timepoint"], value_vars=feats, var_name="feature")
    long = long.dropna(subset=["value"]).groupby(
        ["feature", "patient", "timepoint"], sort=True, as_index=False)["value"].mean()
    long["timepoint"] = long["timepoint"].map(dict(zip(days.index, order, strict=True)))
    long["group"] = _group(labels, long["patient"]).to_numpy()
    long["_f"] = long["feature"].map({f: i for i, f in enumerate(feats)})
    long = long.sort_values(["_f", "patient"], kind="mergesort")
    return long[cols].reset_index(drop=True), order


def _legend(fig: Figure, colors: Mapping[str, str], present: Sequence[str]) -> None:
    handles = [Line2D([], [], color=colors[g], marker="o", label=g) for g in colors
               if g in present]
    fig.legend(handles=handles, loc="outside upper right", fontsize=9, frameon=False,
               ncols=len(handles))


def trajectory_pages(
    data: pd.DataFrame, timepoints: Sequence[str], *, compartment: str, title: str,
    names: Mapping[str, str] | None = None,
) -> list[Figure]:
    """Pages of per-patient trajectories, :data:`TRAJECTORY_GRID` panels per page; each
    panel titled with the feature's readable name (``names``: id -> label)."""
    names = names or {}
    feats = list(dict.fromkeys(data["feature"]))
    rows, cols = TRAJECTORY_GRID
    x = {t: i for i, t in enumerate(timepoints)}
    pages = []
    for start in range(0, len(feats), rows * cols):
        fig = Figure(figsize=(4.2 * cols, 3.3 * rows + 0.8), layout="constrained")
        for k, f in enumerate(feats[start:start + rows * cols]):
            ax = fig.add_subplot(rows, cols, k + 1)
            d = data[data["feature"] == f]
            for (_p, grp), g in d.groupby(["patient", "group"], sort=True):
                g = g.assign(_x=g["timepoint"].map(x)).sort_values("_x")
                ax.plot(g["_x"], g["value"], marker="o", ms=3, lw=1, alpha=0.8,
                        color=GROUP_COLORS[grp])
            ax.set_xticks(range(len(timepoints)), timepoints, fontsize=8)
            ax.set_xlim(-0.3, len(timepoints) - 0.7)
            ax.set_title(f"{names.get(f, f)} ({d['patient'].nunique()} patients)", fontsize=9)
            ax.tick_params(labelsize=7)
        _legend(fig, GROUP_COLORS, set(data["group"]))
        page = f" (page {len(pages) + 1})" if len(feats) > rows * cols else ""
        fig.suptitle(f"{title}: per-patient trajectories in {compartment}, product left "
                     f"out{page}", fontsize=11)
        pages.append(fig)
    return pages


def km_split(
    times: pd.DataFrame, groups: pd.Series, *, min_events_per_variable: float
) -> tuple[dict[str, pd.DataFrame], str]:
    """The Kaplan-Meier groups of a comparison, or why it is refused.

    Parameters
    ----------
    times
        ``time``, ``event`` per patient (index).
    groups
        Group label per patient (index); NA: left out.
    min_events_per_variable
        A comparison of two groups is one variable: fewer events in all are refused.

    Returns
    -------
    groups, problem
        Group label -> its rows of ``times`` (sorted labels); ``problem`` is '' or
        the reason the comparison is not drawn.
    """
    d = times.join(groups.rename("_g"), how="inner").dropna(subset=["_g"])
    split = {str(g): sub[["time", "event"]] for g, sub in d.groupby("_g", sort=True)}
    n_ev = int(d["event"].sum())
    if len(split) < 2:
        return split, f"fewer than 2 groups ({len(d)} patients)"
    if n_ev < min_events_per_variable:
        return split, epv_shortfall(n_ev, min_events_per_variable)
    return split, ""


def _km_panel(fig: Figure, ax, split: Mapping[str, pd.DataFrame], *, colors: Mapping[str, str],
              title: str, xlabel: str, problem: str, alpha: float = 0.05) -> None:
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts
    from lifelines.statistics import multivariate_logrank_test

    ax.set_title(title, fontsize=9)
    if problem:
        ax.axis("off")
        ax.text(0.5, 0.5, f"not drawn: {problem}", ha="center", va="center", wrap=True,
                fontsize=8, transform=ax.transAxes)
        return
    fitters = []
    for label, d in split.items():
        kmf = KaplanMeierFitter(alpha=alpha).fit(d["time"], d["event"],
                                                 label=f"{label} (n={len(d)})")
        kmf.plot_survival_function(ax=ax, ci_show=True, color=colors.get(label),
                                   show_censors=True, censor_styles={"ms": 4})
        fitters.append(kmf)
    all_d = pd.concat({k: v for k, v in split.items()}, names=["_g"]).reset_index("_g")
    p = multivariate_logrank_test(all_d["time"], all_d["_g"], all_d["event"]).p_value
    ax.set_title(f"{title}\nlog-rank p = {p:.2g}", fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="lower left", frameon=False)
    add_at_risk_counts(*fitters, ax=ax, fig=fig, rows_to_show=["At risk"], ypos=-0.55,
                       labels=list(split), fontsize=7)


def _km_specs(
    features: pd.DataFrame, times: pd.DataFrame, *, labels: pd.DataFrame,
    panel_features: Sequence[str], primary_timepoint: str, landmark_day: float,
    names: Mapping[str, str],
) -> list[tuple[str, str, pd.DataFrame, pd.Series, Mapping[str, str]]]:
    """(title, x label, times, groups, colours) of every Kaplan-Meier panel."""
    lm = landmark_times(times, landmark_day=landmark_day)
    grp = _group(labels, pd.Series(lm.index, index=lm.index))
    grp = grp.where(grp != "not evaluable")
    specs = [(f"by response (landmark day {landmark_day:g})",
              f"days after day {landmark_day:g}", lm, grp, GROUP_COLORS)]
    product = patient_table(features, timepoint=primary_timepoint).set_index("patient")
    for f in panel_features:
        if f not in product.columns:
            continue
        x = pd.to_numeric(product[f], errors="coerce").reindex(times.index)
        med = float(x.median())
        split = pd.Series(np.where(x > med, "high", "low"), index=x.index).where(x.notna())
        specs.append((f"{names.get(f, f)}: median split ({med:.3g})", "days from infusion",
                      times, split,
                      SPLIT_COLORS))
    return specs


def km_pages(
    features: pd.DataFrame, clinical: pd.DataFrame, *, panel_features: Sequence[str],
    endpoint: str, time: str, event: str, min_events_per_variable: float,
    landmark_day: float, primary_timepoint: str, responders: Sequence[str],
    exclude_responses: Sequence[str], names: Mapping[str, str] | None = None,
) -> list[Figure]:
    """Pages of Kaplan-Meier panels (:data:`KM_GRID` per page), endpoint in every title,
    features by their readable names (``names``: id -> label)."""
    times = endpoint_times(clinical, endpoint=endpoint, time=time, event=event)
    labels = response_labels(clinical, responders=responders, excluded=exclude_responses)
    specs = _km_specs(features, times, labels=labels, panel_features=panel_features,
                      primary_timepoint=primary_timepoint, landmark_day=landmark_day,
                      names=names or {})
    rows, cols = KM_GRID
    pages = []
    for start in range(0, len(specs), rows * cols):
        fig = Figure(figsize=(4.4 * cols, 4.6 * rows + 0.6))
        fig.subplots_adjust(left=0.06, right=0.98, top=0.88, bottom=0.14, wspace=0.3,
                            hspace=0.95)
        for k, (title, xlabel, t, groups, colors) in enumerate(specs[start:start + rows * cols]):
            split, problem = km_split(t, groups, min_events_per_variable=min_events_per_variable)
            _km_panel(fig, fig.add_subplot(rows, cols, k + 1), split, colors=colors,
                      title=title, xlabel=xlabel, problem=problem)
        page = f" (page {len(pages) + 1})" if len(specs) > rows * cols else ""
        fig.suptitle(f"Kaplan-Meier, endpoint {endpoint} ({time}, {event}){page}",
                     fontsize=12)
        pages.append(fig)
    return pages


def time_survival_figures(
    features: pd.DataFrame,
    clinical: pd.DataFrame,
    panel: PrimaryPanel,
    *,
    dictionary: FeatureDictionary,
    trajectories: str | os.PathLike,
    km: str | os.PathLike,
    primary_timepoint: str,
    responders: Sequence[str],
    exclude_responses: Sequence[str],
    blood_compartment: str,
    survival: Mapping[str, Any],
) -> None:
    """Write the trajectory and Kaplan-Meier pages (rule ``plot_time_survival``).

    Parameters
    ----------
    features, clinical
        ``sample_features.tsv`` and the clinical table.
    panel
        The primary panel (its features are drawn).
    dictionary
        The feature dictionary (``scorecards.features``): panels are titled by labels.
    trajectories, km
        Output folders; each gets ``page_01.png``, ``page_02.png``, ...
    primary_timepoint, responders, exclude_responses
        The product timepoint and the response groups (config keys of those names).
    blood_compartment
        ``associate.blood_compartment``.
    survival
        ``associate.survival`` (endpoint, time, event, min_events_per_variable,
        landmark_day).

    Returns
    -------
    None
        The pages are written into ``trajectories`` and ``km``.
    """
    data, order = trajectory_data(
        features, clinical=clinical, panel_features=panel.names,
        compartment=blood_compartment, primary_timepoint=primary_timepoint,
        responders=responders, exclude_responses=exclude_responses)
    missing = dictionary.missing(panel.names)
    if missing:
        raise CartCohortError(f"{panel.source}: no entry in {dictionary.source} for "
                              f"{missing}. Fix: add them to the feature dictionary")
    names = {f: dictionary[f].label for f in panel.names}
    pages = trajectory_pages(data, order, compartment=blood_compartment, title=panel.label,
                             names=names)
    write_pages(pages or [note_figure(
        f"no primary-panel feature has a value in a {blood_compartment} library "
        f"(associate.blood_compartment)", title="Trajectories")], trajectories)
    s = dict(survival)
    why_not = endpoint_not_given(clinical, time=s.get("time"), event=s.get("event"))
    if why_not:
        km_figs = [note_figure(f"no survival analysis ({why_not})", title="Kaplan-Meier")]
    else:
        km_figs = km_pages(features, clinical, panel_features=panel.names,
                           primary_timepoint=primary_timepoint, responders=responders,
                           exclude_responses=exclude_responses, names=names, **s)
    write_pages(km_figs, km)
    logger.info("wrote %d trajectory page(s) to %s and %d Kaplan-Meier page(s) to %s",
                max(len(pages), 1), trajectories, len(km_figs), km)
