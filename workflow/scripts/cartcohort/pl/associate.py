"""Figures of the association step: forest plot, pseudobulk volcano, scorecard heatmap.

Every plot function returns a :class:`matplotlib.figure.Figure` built without
pyplot (no global state, no display backend needed); :func:`association_figures`
writes the two figures of rule ``plot_association``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from ..dictionary import FAMILIES
from ..errors import CartCohortError
from ..tables import twin_names
from ._save import save_figure

logger = logging.getLogger(__name__)

def message_figure(text: str, *, title: str = "") -> Figure:
    """A figure that only states why there is nothing to plot."""
    fig = Figure(figsize=(6, 2))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10)
    if title:
        ax.set_title(title)
    return fig


#: Exploratory forest plot: features shown per feature family (7 families x 3 rows plus
#: the headers stay within the report's 1000 px height).
EXPLORATORY_PER_FAMILY = 3
_DIRECTION_COLOR = {"higher_in_responders": "#b2182b", "lower_in_responders": "#2166ac"}
_DIRECTION_TAG = {"higher_in_responders": "higher in R", "lower_in_responders": "lower in R"}


def _forest_rows(association: pd.DataFrame, family: str, max_per_family: int) -> pd.DataFrame:
    """One row per feature of ``family``: its oriented AUROC row joined to its logistic row,
    grouped by feature family (:data:`~cartcohort.dictionary.FAMILIES` order), at most
    ``max_per_family`` per feature family (smallest p-values), top to bottom."""
    missing = [c for c in ("label", "feature_family", "qvalue_family") if c not in association]
    if missing:
        raise CartCohortError(
            f"association table: no column(s) {missing}. Fix: label it with the feature "
            "dictionary (cartcohort.stats.associate does; cartcohort.stats.readable)")
    fam = association[association["family"] == family]
    cols = ["or_per_unit", "or_unit_ci_low", "or_unit_ci_high", "unit"]
    auc = fam[(fam["test"] == "auroc") & fam["effect"].notna()].drop(columns=cols)
    lg = fam.loc[fam["test"] == "logistic", ["feature", *cols]]
    tab = auc.merge(lg, on="feature", how="left", validate="one_to_one")
    order = {f: i for i, f in enumerate(FAMILIES)}
    tab = tab.assign(_fam=tab["feature_family"].map(order).fillna(len(order)))
    tab = tab.sort_values(["_fam", "feature_family", "pvalue", "feature"], kind="mergesort")
    return tab.groupby("feature_family", sort=False).head(max_per_family).drop(columns="_fam")


def _layout(tab: pd.DataFrame) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """y of each feature row (top to bottom) and the ``(y, name)`` of each family header."""
    y, heads, pos = [], [], 0.0
    for fam, rows in tab.groupby("feature_family", sort=False):
        heads.append((pos, str(fam)))
        pos -= 1
        for _ in range(len(rows)):
            y.append(pos)
            pos -= 1
        pos -= 0.3
    return np.asarray(y), heads


def _row_label(r) -> str:
    """``label (higher in R; q=0.01) +2 twins`` of one forest row."""
    tag = _DIRECTION_TAG.get(r.direction, r.direction)
    q = r.qvalue_family
    n_twins = len(twin_names(r.twins))
    twins = f" +{n_twins} twin{'s' if n_twins > 1 else ''}" if n_twins else ""
    return f"{r.label} ({tag}; q={q:.2g}){twins}" if np.isfinite(q) else f"{r.label}{twins}"


def _set_ticks(ax, y: np.ndarray, labels: list[str], heads: list[tuple[float, str]],
               fontsize: float) -> None:
    """Feature labels as y ticks, each family's name in bold above its rows."""
    ticks = [*y, *(h for h, _ in heads)]
    text = [*labels, *(name for _, name in heads)]
    ax.set_yticks(ticks, text, fontsize=fontsize)
    for tick in ax.get_yticklabels()[len(y):]:
        tick.set_fontweight("bold")
    ax.set_ylim(min(ticks) - 0.7, 0.7)


def _draw_auroc(ax, tab: pd.DataFrame, sig: np.ndarray, y: np.ndarray,
                heads: list[tuple[float, str]], fontsize: float) -> None:
    colors = [_DIRECTION_COLOR.get(d, "#888888") for d in tab["direction"]]
    for yi, lo, hi, c, s in zip(y, tab["ci_low"], tab["ci_high"], colors, sig, strict=True):
        ax.plot([lo, hi], [yi, yi], color=c, lw=2.2 if s else 1.2, alpha=1 if s else 0.6)
    ax.scatter(tab["effect"], y, color=colors, zorder=3, s=30,
               edgecolors=np.where(sig, "black", "none"))
    ax.axvline(0.5, color="black", lw=0.8, ls="--")
    for h, _ in heads[1:]:
        ax.axhline(h + 0.65, color="#bbbbbb", lw=0.6)
    ax.set_xlim(min(0.45, float(np.nanmin(tab["ci_low"])) - 0.02), 1.01)
    _set_ticks(ax, y, [_row_label(r) for r in tab.itertuples()], heads, fontsize)
    ax.set_xlabel("oriented AUROC (95% Newcombe CI)", fontsize=8)


def _draw_odds(ax, tab: pd.DataFrame, y: np.ndarray, heads: list[tuple[float, str]],
               fontsize: float) -> None:
    colors = [_DIRECTION_COLOR.get(d, "#888888") for d in tab["direction"]]
    orr = tab["or_per_unit"].to_numpy(float)
    lo = tab["or_unit_ci_low"].to_numpy(float)
    hi = tab["or_unit_ci_high"].to_numpy(float)
    ok = np.isfinite(orr) & (orr > 0)
    for yi, l_, h_, c, k in zip(y, lo, hi, colors, ok, strict=True):
        if k:
            ax.plot([max(l_, 1e-3), min(h_, 1e3)], [yi, yi], color=c, lw=1.5)
    ax.scatter(orr[ok], y[ok], color=np.asarray(colors)[ok], zorder=3, s=25, marker="s")
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1e3)
    ax.axvline(1.0, color="black", lw=0.8, ls="--")
    units = tab["unit"].fillna("NA").astype(str).tolist()
    _set_ticks(ax, y, [f"per {u}" for u in units], [(h, "") for h, _ in heads], fontsize)
    ax.yaxis.tick_right()
    ax.set_xlabel("odds ratio per unit (95% CI, clipped)", fontsize=8)


def forest_plot(
    association: pd.DataFrame,
    *,
    family: str = "primary",
    max_per_family: int = 12,
    q_threshold: float = 0.05,
) -> Figure:
    """Forest plot of one BH tier, grouped by feature family: oriented AUROC with CI and
    odds ratio per unit, each feature by its readable label.

    Parameters
    ----------
    association
        ``association.tsv`` (labelled: ``label``, ``feature_family``, ``qvalue_family``).
    family
        ``primary`` (the pre-specified panel, the report's figure) or ``exploratory``.
    max_per_family
        At most this many features per feature family (smallest p-values first).
    q_threshold
        Features with ``qvalue_family`` below it are drawn bold, circled.

    Returns
    -------
    matplotlib.figure.Figure
        Rows grouped under their feature family (dictionary order), smallest p-value
        first within a family. Left: AUROC oriented as ``max(AUC, 1 - AUC)`` with its
        Newcombe interval, colour and label giving the direction (red higher, blue lower
        in responders) and the family q-value; ``+n twins``: features collapsed into this
        one (``twins`` of ``association.tsv``). Right: logistic odds ratio per stated unit
        (log scale). Panel features that were not tested are listed under the plot.
    """
    tab = _forest_rows(association, family, max_per_family)
    gaps = association[(association["test"] == "skipped")
                       & (association.get("family", pd.Series(dtype=str)) == family)
                       & (association["feature"] != "(all)")]
    if tab.empty:
        notes = association.get("note", pd.Series(dtype=str)).dropna()
        reason = notes.iloc[0] if len(notes) else f"no '{family}' results"
        return message_figure(str(reason), title="Association with response")
    n_gap = len(gaps)
    y, heads = _layout(tab)
    n_rows = len(tab) + len(heads)
    fontsize = 8 if n_rows <= 24 else 7
    # at most 6.6 in tall (1000 px at 150 dpi): the report viewer shows it at full height
    fig = Figure(figsize=(10, min(6.6, 1.9 + 0.24 * n_rows + 0.18 * min(n_gap, 6))))
    grid = fig.add_gridspec(1, 2, width_ratios=[1.35, 1.0])
    ax, ax2 = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    sig = (tab["qvalue_family"] < q_threshold).to_numpy()
    _draw_auroc(ax, tab, sig, y, heads, fontsize)
    _draw_odds(ax2, tab, y, heads, fontsize)
    ax2.set_ylim(ax.get_ylim())
    version = tab["panel_version"].dropna().astype(str)
    what = (f"primary panel v{version.iloc[0]}" if family == "primary" and len(version)
            else f"{family} features (top {max_per_family} per family)")
    rule = ("BH within the panel" if family == "primary"
            else "BH within each feature family")
    n1, n0 = int(tab["n_responders"].max()), int(tab["n_nonresponders"].max())
    fig.suptitle(f"Product features vs response, {what}:\n{n1} responders vs {n0} "
                 f"non-responders (patients); {rule}, bold: q < {q_threshold:g}",
                 fontsize=9)
    if n_gap:
        text = "; ".join(f"{r.label}: {str(r.note).removeprefix('not tested: ')[:60]}"
                         for r in gaps.itertuples())
        fig.text(0.01, 0.005, f"not tested ({n_gap}): {text}", fontsize=6, wrap=True,
                 va="bottom")
    fig.tight_layout(rect=(0, 0.02 + 0.025 * min(n_gap, 6), 1, 0.94))
    return fig


def volcano_plot(
    de: pd.DataFrame, *, padj_threshold: float = 0.05, n_labels: int = 12
) -> Figure:
    """Pseudobulk DE volcano: log2 fold change vs -log10 p, one panel per state.

    Genes with ``padj`` below the threshold are coloured; the most significant
    ones are labelled.
    """
    tab = de[de["gene"].notna() & de["pvalue"].notna()] if "gene" in de else de.iloc[:0]
    if tab.empty:
        notes = de.get("note", pd.Series(dtype=str)).dropna()
        reason = "; ".join(sorted(set(map(str, notes)))[:3]) if len(notes) else "no results"
        return message_figure(f"pseudobulk DE: {reason}", title="Pseudobulk DE")
    states = sorted(tab["state"].unique())
    n = len(states)
    ncol = min(3, n)
    nrow = int(np.ceil(n / ncol))
    fig = Figure(figsize=(4.2 * ncol, 3.6 * nrow))
    for k, state in enumerate(states):
        ax = fig.add_subplot(nrow, ncol, k + 1)
        t = tab[tab["state"] == state]
        x = t["log2fc"].to_numpy(float)
        yv = -np.log10(np.clip(t["pvalue"].to_numpy(float), 1e-300, 1))
        sig = (t["padj"] < padj_threshold).to_numpy()
        ax.scatter(x[~sig], yv[~sig], s=6, color="#bbbbbb", rasterized=True)
        ax.scatter(
            x[sig], yv[sig], s=8, color=np.where(x[sig] > 0, "#b2182b", "#2166ac")
        )
        top = t.assign(_y=yv).sort_values(["_y", "gene"], ascending=[False, True], kind="mergesort")
        for _, r in top[top["padj"] < padj_threshold].head(n_labels).iterrows():
            ax.annotate(str(r["gene"]), (r["log2fc"], r["_y"]), fontsize=6)
        ax.axvline(0, color="black", lw=0.5)
        n1, n0 = int(t["n_responders"].iloc[0]), int(t["n_nonresponders"].iloc[0])
        ax.set_title(f"{state} ({n1} R vs {n0} NR; {int(sig.sum())} genes padj<{padj_threshold:g})",
                     fontsize=8)
        ax.set_xlabel("log2 fold change (responders / non-responders)", fontsize=7)
        ax.set_ylabel("-log10 p", fontsize=7)
    fig.tight_layout()
    return fig


def scorecard_heatmap(
    cards: Mapping[str, pd.DataFrame],
    *,
    labels: Mapping[str, str] | None = None,
    coverage: float | None = None,
) -> Figure:
    """Products x primary-panel features heatmap of cohort percentiles.

    Columns are the features of the primary panel (``primary`` column of the
    cards), in panel order, named by their ``label`` (labelled cards) with their
    association q-value; an ``x``
    marks a flagged value (outside the responders' leave-one-out interval).
    ``labels`` maps a sample to its row label (e.g. with the response);
    ``coverage`` (the interval's nominal coverage) is named in the title.
    """
    from ..scorecards import OUTSIDE

    if not cards:
        return message_figure("no infusion-product samples to score", title="Scorecards")
    allc = pd.concat(list(cards.values()), ignore_index=True)
    prim = allc[allc["primary"].astype(bool)]
    feats = list(dict.fromkeys(prim["feature"]))
    if not feats:
        return message_figure("no primary-panel feature on the scorecards", title="Scorecards")
    q = prim.groupby("feature", sort=False)["qvalue"].first()
    samples = list(cards)
    pct = np.full((len(samples), len(feats)), np.nan)
    out = np.zeros_like(pct, dtype=bool)
    for i, s in enumerate(samples):
        c = cards[s].set_index("feature")
        for j, f in enumerate(feats):
            if f in c.index:
                pct[i, j] = c.loc[f, "cohort_percentile"]
                out[i, j] = c.loc[f, "flag"] in OUTSIDE
    # wide rather than tall, so that the report shows it whole (<= 1000 px high at 150 dpi
    # for 20 products)
    fig = Figure(figsize=(3.5 + 0.4 * len(feats), 1.6 + 0.24 * len(samples)))
    ax = fig.add_subplot()
    im = ax.imshow(
        np.ma.masked_invalid(pct), aspect="auto", cmap="RdBu_r", norm=TwoSlopeNorm(50, 0, 100)
    )
    ii, jj = np.nonzero(out)
    ax.scatter(jj, ii, marker="x", color="black", s=18, lw=1)
    # readable names where the cards carry them (cohort_scorecards labels them)
    name = prim.groupby("feature", sort=False)["label"].first() if "label" in prim else {}
    cols = [f"{name.get(f, f)} (q={q[f]:.1g})" if np.isfinite(q[f]) else name.get(f, f)
            for f in feats]
    ax.set_xticks(np.arange(len(feats)), cols, rotation=40, ha="right",
                  rotation_mode="anchor", fontsize=7)
    rows = [labels.get(s, s) if labels else s for s in samples]
    ax.set_yticks(np.arange(len(samples)), rows, fontsize=7)
    cb = fig.colorbar(im, ax=ax, fraction=0.03)
    cb.set_label("cohort percentile", fontsize=8)
    interval = f"{100 * coverage:g}% " if coverage is not None else ""
    ax.set_title(f"Product scorecards, primary panel (x: outside the responders' "
                 f"{interval}prediction interval)", fontsize=9)
    fig.tight_layout()
    return fig


def association_figures(
    association: pd.DataFrame,
    de: pd.DataFrame,
    *,
    forest: str | os.PathLike,
    forest_exploratory: str | os.PathLike,
    volcano: str | os.PathLike,
) -> None:
    """Write the two association figures of the report (rule ``plot_association``).

    Parameters
    ----------
    association
        ``tables/association.tsv`` (:func:`forest_plot` of the primary panel).
    de
        ``tables/pseudobulk_de.tsv`` (:func:`volcano_plot`).
    forest, forest_exploratory, volcano
        Output paths of the forest plots (primary panel; exploratory features, at most
        :data:`EXPLORATORY_PER_FAMILY` per feature family) and the volcano plot
        (byte-stable PNGs).

    Returns
    -------
    None
        The figures are written to ``forest`` and ``volcano``.
    """
    save_figure(forest_plot(association, family="primary"), forest)
    save_figure(forest_plot(association, family="exploratory",
                            max_per_family=EXPLORATORY_PER_FAMILY), forest_exploratory)
    save_figure(volcano_plot(de), volcano)
    logger.info("wrote %s, %s and %s", forest, forest_exploratory, volcano)
