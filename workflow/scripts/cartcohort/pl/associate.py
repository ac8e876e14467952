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

from ._save import save_figure

logger = logging.getLogger(__name__)

_FAMILY_LABEL = {
    "mann_whitney": "rank-biserial correlation (responders vs non-responders)",
    "auroc": "AUROC",
    "logistic": "log odds ratio of response per SD",
    "compositional": "difference of transformed proportions",
}


def message_figure(text: str, *, title: str = "") -> Figure:
    """A figure that only states why there is nothing to plot."""
    fig = Figure(figsize=(6, 2))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10)
    if title:
        ax.set_title(title)
    return fig


def forest_plot(
    association: pd.DataFrame,
    *,
    test: str = "mann_whitney",
    max_features: int = 30,
    q_threshold: float = 0.05,
) -> Figure:
    """Effect and CI of the features with the smallest p-values of one test family.

    Parameters
    ----------
    association
        ``association.tsv``.
    test
        Test family to plot.
    max_features
        At most this many features (smallest p-values).
    q_threshold
        Features with ``qvalue`` below it are drawn in colour and marked.
    """
    tab = association[(association["test"] == test) & association["effect"].notna()]
    if tab.empty:
        notes = association.get("note", pd.Series(dtype=str)).dropna()
        reason = notes.iloc[0] if len(notes) else f"no '{test}' results"
        return message_figure(str(reason), title="Association with response")
    tab = tab.sort_values(["pvalue", "feature"], kind="mergesort").head(max_features)
    tab = tab.iloc[::-1]  # smallest p-value at the top
    null = 0.5 if test == "auroc" else 0.0
    fig = Figure(figsize=(7.5, 1.2 + 0.28 * len(tab)))
    ax = fig.add_subplot()
    y = np.arange(len(tab))
    sig = (tab["qvalue"] < q_threshold).to_numpy()
    eff = tab["effect"].to_numpy(float)
    lo = tab["ci_low"].to_numpy(float)
    hi = tab["ci_high"].to_numpy(float)
    colors = np.where(sig, np.where(eff > null, "#b2182b", "#2166ac"), "#888888")
    for yi, l_, h_, c in zip(y, lo, hi, colors, strict=True):
        ax.plot([l_, h_], [yi, yi], color=c, lw=1.5)
    ax.scatter(eff, y, color=colors, zorder=3, s=25)
    ax.axvline(null, color="black", lw=0.8, ls="--")
    labels = [
        f"{f}  (q={q:.2g})" if np.isfinite(q) else f
        for f, q in zip(tab["feature"], tab["qvalue"].to_numpy(float), strict=True)
    ]
    ax.set_yticks(y, labels, fontsize=8)
    n1 = int(tab["n_responders"].max())
    n0 = int(tab["n_nonresponders"].max())
    ax.set_xlabel(_FAMILY_LABEL.get(test, "effect"))
    ax.set_title(
        f"{test}: {n1} responders vs {n0} non-responders (patients)\n"
        f"{len(tab)} smallest p-values; coloured: q < {q_threshold:g}",
        fontsize=9,
    )
    fig.tight_layout()
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
    cards), in panel order, labelled with their association q-value; an ``x``
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
    cols = [f"{f} (q={q[f]:.1g})" if np.isfinite(q[f]) else f for f in feats]
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
    volcano: str | os.PathLike,
) -> None:
    """Write the two association figures of the report (rule ``plot_association``).

    Parameters
    ----------
    association
        ``tables/association.tsv`` (:func:`forest_plot`).
    de
        ``tables/pseudobulk_de.tsv`` (:func:`volcano_plot`).
    forest, volcano
        Output paths of the forest plot and the volcano plot (byte-stable PNGs).

    Returns
    -------
    None
        The figures are written to ``forest`` and ``volcano``.
    """
    save_figure(forest_plot(association), forest)
    save_figure(volcano_plot(de), volcano)
    logger.info("wrote %s and %s", forest, volcano)
