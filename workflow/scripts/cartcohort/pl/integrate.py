"""Integration figures: UMAP coloured by cohort keys, and the method-metrics heatmap."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..errors import CartCohortError  # noqa: E402

if TYPE_CHECKING:
    from anndata import AnnData

#: obs keys shown by :func:`umap_grid` by default (those present are drawn).
UMAP_KEYS = ("sample", "patient", "timepoint", "batch", "compartment", "leiden")

#: row order of :func:`metrics_heatmap`; metrics not listed go last.
METRIC_ORDER = (
    "ilisi",
    "batch_asw",
    "graph_connectivity",
    "clisi",
    "label_asw",
    "batch_correction",
    "bio_conservation",
    "overall",
)

_METRIC_LABELS = {
    "ilisi": "iLISI (batch mixing)",
    "batch_asw": "batch ASW",
    "graph_connectivity": "graph connectivity",
    "clisi": "cLISI (label purity)",
    "label_asw": "label ASW",
    "batch_correction": "batch correction (mean)",
    "bio_conservation": "bio conservation (mean)",
    "overall": "overall (0.4 batch + 0.6 bio)",
}


def _palette(n: int) -> list:
    """``n`` distinguishable colours (tab20, then a sampled continuous map)."""
    if n <= 10:
        cmap = plt.get_cmap("tab10")
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = plt.get_cmap("tab20")
        return [cmap(i) for i in range(n)]
    cmap = plt.get_cmap("nipy_spectral")
    return [cmap(x) for x in np.linspace(0.03, 0.97, n)]


def umap_grid(
    umap: np.ndarray,
    obs: pd.DataFrame,
    *,
    keys: Sequence[str] = UMAP_KEYS,
    title: str = "",
    max_legend: int = 30,
    seed: int = 0,
    point_size: float | None = None,
) -> Figure:
    """One UMAP panel per ``obs`` key, cells coloured by category.

    Cells are drawn in a random (seeded) order so that no category hides another.

    Parameters
    ----------
    umap
        Cells x 2 coordinates.
    obs
        Cell table with the keys (absent keys are skipped with no panel).
    keys
        ``obs`` columns to colour by.
    title
        Figure title.
    max_legend
        Keys with more categories get no legend (too many to read).
    seed
        Seed of the drawing order.
    point_size
        Marker size; default scales with the number of cells.
    """
    umap = np.asarray(umap)
    if umap.ndim != 2 or umap.shape[1] < 2 or umap.shape[0] != len(obs):
        raise CartCohortError(
            f"UMAP coordinates of shape {umap.shape} do not match {len(obs)} cells"
        )
    present = [k for k in keys if k in obs.columns]
    if not present:
        raise CartCohortError(f"none of the keys {list(keys)} is an obs column")
    n = len(present)
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.4 * nrows), squeeze=False)
    order = np.random.default_rng(seed).permutation(umap.shape[0])
    size = point_size if point_size is not None else float(np.clip(4e4 / max(len(obs), 1), 0.5, 20))
    for ax, key in zip(axes.ravel(), present, strict=False):
        values = obs[key].astype(str).where(obs[key].notna(), "NA")
        cats = sorted(values.unique(), key=_natural_key)
        colours = dict(zip(cats, _palette(len(cats)), strict=True))
        col = np.array([colours[v] for v in values.to_numpy()[order]])
        ax.scatter(umap[order, 0], umap[order, 1], c=col, s=size, linewidths=0,
                   rasterized=True)
        ax.set_title(f"{key} ({len(cats)})")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP1")
        ax.set_ylabel("UMAP2")
        if len(cats) <= max_legend:
            handles = [plt.Line2D([], [], marker="o", ls="", color=colours[c], label=c)
                       for c in cats]
            ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5),
                      fontsize=7, frameon=False, ncol=1 if len(cats) <= 15 else 2)
        else:
            ax.text(0.01, 0.01, f"{len(cats)} categories (no legend)", fontsize=7,
                    transform=ax.transAxes)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _natural_key(value: str) -> tuple:
    """Sort "2" before "10" (Leiden cluster ids), text alphabetically."""
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _metrics_panel(ax, table: pd.DataFrame, *, title: str):
    """Draw the methods x metrics heatmap of ``table`` on ``ax``; returns the image."""
    missing = [c for c in ("method", "metric", "value") if c not in table.columns]
    if missing:
        raise CartCohortError(f"metrics table lacks columns {missing}")
    wide = table.pivot(index="metric", columns="method", values="value")
    rows = [m for m in METRIC_ORDER if m in wide.index] + sorted(
        m for m in wide.index if m not in METRIC_ORDER
    )
    wide = wide.loc[rows]
    values = wide.to_numpy(dtype=float)
    masked = np.ma.masked_invalid(values)
    im = ax.imshow(masked, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        text = "NA" if not np.isfinite(v) else f"{v:.2f}"
        colour = "black" if np.isfinite(v) and v > 0.6 else "white"
        if not np.isfinite(v):
            colour = "black"
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(wide.shape[1]), [str(c) for c in wide.columns])
    ax.set_yticks(range(wide.shape[0]), [_METRIC_LABELS.get(m, m) for m in wide.index])
    n_single = sum(m in METRIC_ORDER[:5] for m in wide.index)
    if 0 < n_single < wide.shape[0]:
        ax.axhline(n_single - 0.5, color="white", lw=2)
    ax.set_title(title, fontsize=10)
    return im


def metrics_heatmap(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Methods (columns) x metrics (rows) heatmap of one pass of the integration metrics.

    Parameters
    ----------
    table
        Columns ``method, metric, value`` (all metrics higher = better, in [0, 1]).
    title
        Figure title.
    """
    n_methods = table["method"].nunique() if "method" in table.columns else 1
    n_metrics = table["metric"].nunique() if "metric" in table.columns else 1
    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * n_methods, 1.0 + 0.45 * n_metrics))
    im = _metrics_panel(ax, table, title=title or "Integration metrics by method")
    fig.colorbar(im, ax=ax, fraction=0.05, label="score (higher = better)")
    fig.tight_layout()
    return fig


#: Panel titles of the passes of ``integration_metrics.tsv``.
_PASS_TITLES = {"final_states": "final cell states", "pre_annotation": "pre-annotation label"}


def metrics_passes_heatmap(table: pd.DataFrame) -> Figure:
    """Side-by-side heatmaps of ``integration_metrics.tsv``, one per pass: the leading
    pass (``lead`` true: the final cell states) on the left, the first pass (e.g. the
    Leiden clusters of the unintegrated PCA) on the right, each titled with its label.

    Parameters
    ----------
    table
        ``method, metric, value, label, pass, lead`` (:func:`cartcohort.tl.integrate.
        score_final_states`).
    """
    missing = [c for c in ("label", "pass", "lead") if c not in table.columns]
    if missing:
        raise CartCohortError(f"integration_metrics table lacks columns {missing}")
    lead = table["lead"].astype(str).str.lower().isin(["true", "1"])
    passes = list(dict.fromkeys(table.loc[lead, "pass"])) + list(
        dict.fromkeys(table.loc[~lead, "pass"]))
    n_methods = table["method"].nunique()
    n_metrics = table["metric"].nunique()
    fig, axes = plt.subplots(
        1, len(passes), figsize=(1.0 + (2.2 + 1.1 * n_methods) * len(passes),
                                 1.4 + 0.45 * n_metrics), squeeze=False)
    im = None
    for k, (ax, name) in enumerate(zip(axes[0], passes)):
        part = table[table["pass"] == name]
        label = str(part["label"].iloc[0])
        role = "leading" if k == 0 else "also reported"
        im = _metrics_panel(ax, part, title=f"{_PASS_TITLES.get(name, name)} ({role})\n"
                                            f"label: {label}")
        if k:
            ax.set_yticklabels([])
    fig.colorbar(im, ax=list(axes[0]), fraction=0.03, label="score (higher = better)")
    fig.suptitle("Integration metrics by method: bio-conservation against the final cell "
                 "states and against the pre-annotation label", fontsize=10, y=1.03)
    return fig


def graph_description(
    integration: AnnData, *, method: str, corrects_graph: bool, exact_knn_max_cells: int
) -> str:
    """How the neighbour graph of ``integrate/{method}.h5ad`` was built, checked against
    what the configured method must have built.

    Parameters
    ----------
    integration
        ``integrate/{method}.h5ad`` (``uns['integration']`` and ``uns['neighbors']``).
    method
        The method used downstream (``integrate.use``); the file must be its output.
    corrects_graph
        Whether the method builds its own (batch-balanced) graph
        (:attr:`cartcohort.tl.integrate.Method.corrects_graph`).
    exact_knn_max_cells
        Cohorts up to this many cells get an exact kNN graph, larger ones an approximate
        (pynndescent) one (:data:`cartcohort.tl.integrate.EXACT_KNN_MAX_CELLS`).

    Returns
    -------
    str
        E.g. ``"exact kNN graph (k=15)"``, ``"approximate kNN graph (pynndescent, k=15)"``
        or ``"bbknn's batch-balanced graph"``.
    """
    recorded = integration.uns["integration"]["method"]
    if recorded != method:
        raise CartCohortError(
            f"the integration file holds method {recorded!r}, but integrate.use is {method!r}; "
            "re-run the workflow so that rule integrate writes the configured method"
        )
    built = dict(integration.uns.get("neighbors", {}).get("params", {}))
    mode, k = built.get("method"), built.get("n_neighbors")
    if corrects_graph:
        expected = method
    else:
        expected = "exact_knn" if integration.n_obs <= exact_knn_max_cells else "pynndescent"
    if mode != expected:
        raise CartCohortError(
            f"the {method} graph was built as {mode!r}, expected {expected!r} for "
            f"{integration.n_obs} cells; re-run rule integrate"
        )
    if corrects_graph:
        return f"{method}'s batch-balanced graph"
    if mode == "exact_knn":
        return f"exact kNN graph (k={k})"
    return f"approximate kNN graph (pynndescent, k={k})"


def integration_umap(
    integration: AnnData,
    layout: AnnData,
    *,
    path: str | os.PathLike,
    method: str,
    corrects_graph: bool,
    exact_knn_max_cells: int,
    seed: int,
    keys: Sequence[str] = UMAP_KEYS,
) -> None:
    """Write the UMAP figure of the method used downstream (rule ``plot_integration``);
    its title names the method and the neighbour graph actually built.

    Parameters
    ----------
    integration
        ``integrate/{method}.h5ad`` (``obs``, ``uns['integration']``, ``uns['neighbors']``).
    layout
        ``integrate/umap.h5ad``: ``obsm['X_umap']`` of the same cells.
    path
        Output PNG.
    method, corrects_graph, exact_knn_max_cells
        See :func:`graph_description`.
    seed
        Seed of the random drawing order of the cells (see :func:`umap_grid`).
    keys
        ``obs`` columns, one panel each (see :func:`umap_grid`).

    Returns
    -------
    None
        The figure is written to ``path``.
    """
    graph = graph_description(integration, method=method, corrects_graph=corrects_graph,
                              exact_knn_max_cells=exact_knn_max_cells)
    info = integration.uns["integration"]
    fig = umap_grid(
        layout.obsm["X_umap"], integration.obs, keys=list(keys),
        title=f"UMAP after integration with {info['method']} "
              f"({integration.n_obs} cells, batch key '{info['batch_key']}'; {graph})",
        seed=int(seed),
    )
    fig.savefig(path, dpi=150)


def metrics_figure(table: pd.DataFrame, *, path: str | os.PathLike) -> None:
    """Write the metrics heatmaps of rule ``integration_metrics_states``.

    Parameters
    ----------
    table
        ``integration_metrics.tsv`` (see :func:`metrics_passes_heatmap`).
    path
        Output PNG.

    Returns
    -------
    None
        The figure is written to ``path``.
    """
    fig = metrics_passes_heatmap(table)
    fig.savefig(path, dpi=150, bbox_inches="tight")
