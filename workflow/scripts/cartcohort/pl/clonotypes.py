"""Figures of the clonotype step: expansion, rarefied diversity, top-clone alluvia.

All functions take the tables of the ``repertoire`` rule
(``repertoire_samples.tsv``, ``clone_tracking.tsv``) and return a
:class:`matplotlib.figure.Figure` built without pyplot (no global state).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Polygon

from ..errors import CartCohortError

log = logging.getLogger(__name__)

EXPANSION_LABELS: dict[str, str] = {
    "1": "1 cell",
    "2": "2 cells",
    "3_10": "3-10 cells",
    "gt10": ">10 cells",
}
EXPANSION_COLORS = ["#d9d9d9", "#9ecae1", "#4292c6", "#08306b"]
GROUP_COLORS = {"responder": "#1b9e77", "non-responder": "#d95f02", "other": "#7f7f7f"}
INDEX_LABELS = {
    "shannon": "Shannon entropy",
    "pielou": "normalised Shannon (Pielou)",
    "gini_simpson": "Gini-Simpson",
    "gini": "Gini coefficient (clonality)",
    "richness": "clones (richness)",
}


def _require(df: pd.DataFrame, cols: Sequence[str], name: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise CartCohortError(
            f"{name} lacks column(s) {missing}. Fix: re-run the repertoire rule."
        )


def response_group(
    patients: pd.Series, *, response: Mapping[str, str] | None, responders: Sequence[str]
) -> pd.Series:
    """``responder`` / ``non-responder`` / ``other`` (NE, NA or absent from ``response``)
    per row."""
    if not response:
        return pd.Series("other", index=patients.index)
    resp = patients.astype(str).map(lambda p: response.get(p))
    grp = np.where(
        resp.isin(list(responders)),
        "responder",
        np.where(resp.notna() & ~resp.isin(["NE", "NA"]), "non-responder", "other"),
    )
    return pd.Series(grp, index=patients.index)


def _order_samples(samples: pd.DataFrame, group: pd.Series | None = None) -> pd.DataFrame:
    df = samples.copy()
    df["_day"] = pd.to_numeric(df["timepoint_day"], errors="coerce")
    keys, asc = ["patient", "_day", "sample"], [True, True, True]
    if group is not None:
        rank = {"responder": 0, "non-responder": 1, "other": 2}
        df["_grp"] = group.map(rank).to_numpy()
        keys, asc = ["_grp", *keys], [True, *asc]
    return df.sort_values(keys, ascending=asc, kind="mergesort", na_position="last")


def _patient_spans(order: pd.DataFrame) -> list[tuple[str, int, int]]:
    spans, start = [], 0
    pats = order["patient"].astype(str).tolist()
    for i in range(1, len(pats) + 1):
        if i == len(pats) or pats[i] != pats[start]:
            spans.append((pats[start], start, i - 1))
            start = i
    return spans


def _sample_label(row: pd.Series) -> str:
    day = row.get("timepoint_day")
    tp = str(row.get("timepoint", ""))
    comp = row.get("compartment")
    label = tp if pd.isna(day) else f"{tp} (d{day:g})"
    if isinstance(comp, str) and comp and comp.lower() != "product":
        label += f" {comp}"
    return label


def _patient_axis(ax, order: pd.DataFrame, *, y_text: float) -> None:
    for patient, a, b in _patient_spans(order):
        ax.text((a + b) / 2, y_text, patient, ha="center", va="bottom", fontsize=8,
                fontweight="bold", transform=ax.get_xaxis_transform(), clip_on=False)
        if a > 0:
            ax.axvline(a - 0.5, color="#555555", lw=0.6)


def plot_clonal_expansion(samples: pd.DataFrame) -> Figure:
    """Stacked bars: fraction of each sample's TCR+ cells in clones of size 1, 2, 3-10, >10.

    Parameters
    ----------
    samples
        ``repertoire_samples.tsv``.
    """
    cols = [f"frac_cells_size_{k}" for k in EXPANSION_LABELS]
    _require(samples, ["sample", "patient", "timepoint", "timepoint_day", "n_cells_tcr", *cols],
             "repertoire_samples.tsv")
    order = _order_samples(samples)
    n = len(order)
    fig = Figure(figsize=(max(6.0, 0.32 * n + 2.5), 4.6), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(n)
    bottom = np.zeros(n)
    for col, (key, label), color in zip(cols, EXPANSION_LABELS.items(), EXPANSION_COLORS,
                                        strict=True):
        h = order[col].fillna(0).to_numpy(dtype=float)
        ax.bar(x, h, bottom=bottom, color=color, width=0.85, label=label, edgecolor="white",
               linewidth=0.3)
        bottom += h
    for i, n_tcr in enumerate(order["n_cells_tcr"].fillna(0).astype(int)):
        ax.text(i, 1.005, "no TCR" if n_tcr == 0 else str(n_tcr), ha="center", va="bottom",
                fontsize=5.5, rotation=90, color="#444444")
    ax.set_xticks(x, [_sample_label(r) for _, r in order.iterrows()], rotation=90, fontsize=7)
    ax.set_ylim(0, 1.0)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("fraction of TCR+ cells")
    _patient_axis(ax, order, y_text=1.1)
    ax.legend(title="clone size in sample", fontsize=7, title_fontsize=7,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Clonal expansion per sample (numbers: TCR+ cells)", fontsize=9, pad=44)
    return fig


def plot_rarefied_diversity(
    samples: pd.DataFrame,
    *,
    response: Mapping[str, str] | None = None,
    responders: Sequence[str] = ("CR",),
    indices: Sequence[str] = ("shannon", "pielou", "gini_simpson", "gini"),
) -> Figure:
    """Rarefied diversity with bootstrap CIs per sample, grouped by response and patient.

    Dots: rarefied value (error bars: CI); crosses: unrarefied value of the full sample.
    """
    need = ["sample", "patient", "timepoint", "timepoint_day", "rarefaction_depth"]
    need += [f"rarefied_{i}{s}" for i in indices for s in ("", "_ci_low", "_ci_high")]
    _require(samples, need + list(indices), "repertoire_samples.tsv")
    group = response_group(samples["patient"], response=response, responders=responders)
    order = _order_samples(samples, group)
    grp = group.loc[order.index]
    n = len(order)
    fig = Figure(figsize=(max(6.0, 0.32 * n + 3.0), 1.9 * len(indices) + 1.6),
                 layout="constrained")
    axes = fig.subplots(len(indices), 1, sharex=True, squeeze=False)[:, 0]
    x = np.arange(n)
    colors = grp.map(GROUP_COLORS).to_numpy()
    for k, (ax, idx) in enumerate(zip(axes, indices, strict=True)):
        v = order[f"rarefied_{idx}"].to_numpy(dtype=float)
        lo = order[f"rarefied_{idx}_ci_low"].to_numpy(dtype=float)
        hi = order[f"rarefied_{idx}_ci_high"].to_numpy(dtype=float)
        for i in range(n):
            if np.isfinite(v[i]):
                ax.errorbar(x[i], v[i], yerr=[[v[i] - lo[i]], [hi[i] - v[i]]], fmt="o",
                            color=colors[i], ms=4, capsize=2, lw=1)
            else:
                ax.text(x[i], 0.02, "NA", transform=ax.get_xaxis_transform(), ha="center",
                        fontsize=6, color="#999999")
        ax.scatter(x, order[idx].to_numpy(dtype=float), marker="x", s=12, color="#555555",
                   lw=0.7, zorder=3)
        ax.set_ylabel(INDEX_LABELS.get(idx, idx), fontsize=8)
        ax.grid(axis="y", lw=0.3, alpha=0.6)
        if k == 0:
            _patient_axis(ax, order, y_text=1.02)
        else:
            for _, a, _b in _patient_spans(order):
                if a > 0:
                    ax.axvline(a - 0.5, color="#555555", lw=0.6)
    axes[-1].set_xticks(x, [_sample_label(r) for _, r in order.iterrows()], rotation=90,
                        fontsize=7)
    axes[-1].set_xlim(-0.6, n - 0.4)
    depth = pd.to_numeric(samples["rarefaction_depth"], errors="coerce").dropna()
    depth_txt = f"{int(depth.iloc[0])} cells" if len(depth) else "none (too few cells)"
    handles = [Line2D([], [], marker="o", ls="", color=c, label=g)
               for g, c in GROUP_COLORS.items() if (grp == g).any()]
    handles.append(Line2D([], [], marker="x", ls="", color="#555555", label="unrarefied"))
    axes[0].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                   frameon=False)
    fig.suptitle(f"Diversity rarefied to {depth_txt} (95% bootstrap CI)", fontsize=9)
    return fig


def _ribbon(ax, x0: float, x1: float, y0: tuple[float, float], y1: tuple[float, float],
            color: str, *, n: int = 30) -> None:
    """Sigmoid band from [y0] at x0 to [y1] at x1."""
    t = np.linspace(0.0, 1.0, n)
    s = 3 * t**2 - 2 * t**3
    xs = x0 + (x1 - x0) * t
    low = y0[0] + (y1[0] - y0[0]) * s
    high = y0[1] + (y1[1] - y0[1]) * s
    pts = np.concatenate([np.column_stack([xs, low]), np.column_stack([xs[::-1], high[::-1]])])
    ax.add_patch(Polygon(pts, closed=True, facecolor=color, edgecolor="none", alpha=0.45))


def top_clones(tracking: pd.DataFrame, *, top_n: int = 10) -> pd.DataFrame:
    """Per patient the ``top_n`` clones by their largest fraction in any sample.

    Returns
    -------
    DataFrame
        ``patient, clone_id, max_frac, rank`` (rank 1 = largest).
    """
    _require(tracking, ["patient", "clone_id", "frac_sample"], "clone_tracking.tsv")
    best = tracking.groupby(["patient", "clone_id"], sort=True)["frac_sample"].max()
    best = best.rename("max_frac").reset_index()
    best = best.sort_values(["patient", "max_frac", "clone_id"], ascending=[True, False, True],
                            kind="mergesort")
    best["rank"] = best.groupby("patient").cumcount() + 1
    return best[best["rank"] <= top_n].reset_index(drop=True)


def plot_top_clones_alluvial(
    tracking: pd.DataFrame, *, samples: pd.DataFrame | None = None, top_n: int = 10,
    ncols: int = 3,
) -> Figure:
    """Alluvial plot of each patient's top clones across its samples (ordered by day).

    Bars: fraction of the sample's TCR+ cells in each top clone (stacked, the
    largest clone at the bottom); bands join the same clone in consecutive
    samples, tapering to nothing where the clone is not detected.

    Parameters
    ----------
    tracking
        ``clone_tracking.tsv``.
    samples
        ``repertoire_samples.tsv``; adds samples in which no tracked clone occurs.
    top_n
        Clones per patient.
    ncols
        Panels per row.
    """
    from matplotlib import colormaps

    _require(tracking, ["patient", "clone_id", "sample", "timepoint", "timepoint_day",
                        "frac_sample"], "clone_tracking.tsv")
    top = top_clones(tracking, top_n=top_n)
    cols_meta = ["sample", "patient", "timepoint", "timepoint_day"]
    if "compartment" in tracking.columns:
        cols_meta.append("compartment")
    meta = tracking[cols_meta].drop_duplicates("sample")
    if samples is not None:
        extra = samples[[c for c in cols_meta if c in samples.columns]]
        meta = pd.concat([meta, extra[~extra["sample"].isin(meta["sample"])]])
    patients = sorted(meta["patient"].astype(str).unique())
    if not patients:
        fig = Figure(figsize=(5, 2), layout="constrained")
        fig.add_subplot().text(0.5, 0.5, "no clones", ha="center")
        return fig
    ncols = max(1, min(ncols, len(patients)))
    nrows = math.ceil(len(patients) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    cmap = colormaps["tab10" if top_n <= 10 else "tab20"]
    for ax, patient in zip(axes, patients, strict=False):
        _alluvial_panel(ax, patient, meta=meta, top=top, tracking=tracking, cmap=cmap)
    for ax in axes[len(patients):]:
        ax.set_axis_off()
    return fig


def _alluvial_panel(ax, patient: str, *, meta: pd.DataFrame, top: pd.DataFrame,
                    tracking: pd.DataFrame, cmap) -> None:
    """One patient's panel of :func:`plot_top_clones_alluvial`."""
    pm = _order_samples(meta[meta["patient"].astype(str) == patient])
    ptop = top[top["patient"].astype(str) == patient]
    clones = ptop["clone_id"].tolist()
    tr = tracking[(tracking["patient"].astype(str) == patient)
                  & tracking["clone_id"].isin(clones)]
    frac = tr.pivot_table(index="clone_id", columns="sample", values="frac_sample",
                          aggfunc="sum").reindex(index=clones, columns=pm["sample"])
    frac = frac.fillna(0.0).to_numpy(dtype=float)
    ns = frac.shape[1]
    lower = np.vstack([np.zeros((1, ns)), np.cumsum(frac, axis=0)[:-1]]) if clones else \
        np.zeros((0, ns))
    width = 0.28
    for c in range(len(clones)):
        color = cmap(c % cmap.N)
        for j in range(ns):
            if frac[c, j] > 0:
                ax.bar(j, frac[c, j], bottom=lower[c, j], width=2 * width, color=color,
                       edgecolor="white", linewidth=0.3)
        for j in range(ns - 1):
            if frac[c, j] > 0 or frac[c, j + 1] > 0:
                _ribbon(ax, j + width, j + 1 - width,
                        (lower[c, j], lower[c, j] + frac[c, j]),
                        (lower[c, j + 1], lower[c, j + 1] + frac[c, j + 1]), color)
    ax.set_xticks(np.arange(ns), [_sample_label(r) for _, r in pm.iterrows()],
                  rotation=45, ha="right", fontsize=7)
    ax.set_xlim(-0.6, ns - 0.4)
    total = frac.sum(axis=0).max() if frac.size else 0.0
    ax.set_ylim(0, max(0.05, total * 1.08))
    ax.set_ylabel("fraction of TCR+ cells", fontsize=8)
    ax.set_title(f"{patient}: top {len(clones)} clones", fontsize=9)
    if clones:
        handles = [Patch(color=cmap(c % cmap.N), label=str(cl))
                   for c, cl in enumerate(clones)]
        ax.legend(handles=handles, fontsize=5.5, loc="upper left",
                  bbox_to_anchor=(1.0, 1.0), frameon=False)


def clonotype_figures(
    samples: pd.DataFrame,
    tracking: pd.DataFrame,
    *,
    response: Mapping[str, str],
    responders: Sequence[str],
    top_clones_alluvial: int = 10,
) -> dict[str, Figure]:
    """The report figures of the clonotype step (rule ``plot_clonotypes``).

    Parameters
    ----------
    samples
        ``repertoire_samples.tsv``.
    tracking
        ``clone_tracking.tsv``.
    response
        Patient -> response code (clinical table), for the diversity figure's groups.
    responders
        Response codes that count as responders.
    top_clones_alluvial
        Clones per patient in the alluvial plot.

    Returns
    -------
    dict
        Figures keyed as the rule's outputs: ``expansion``
        (:func:`plot_clonal_expansion`), ``diversity``
        (:func:`plot_rarefied_diversity`) and ``alluvial``
        (:func:`plot_top_clones_alluvial`).
    """
    return {
        "expansion": plot_clonal_expansion(samples),
        "diversity": plot_rarefied_diversity(samples, response=response, responders=responders),
        "alluvial": plot_top_clones_alluvial(tracking, samples=samples,
                                             top_n=top_clones_alluvial),
    }
