"""Annotation figures: UMAPs by state, lineage and CAR; state fractions; signature dot plot."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ._save import save_figure  # noqa: F401  (re-exported for entry scripts)
import matplotlib

matplotlib.use("Agg")
import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import sparse  # noqa: E402

from ..errors import CartCohortError  # noqa: E402

#: Fixed colours so a state has the same colour in every figure and run.
STATE_COLORS: dict[str, str] = {
    "naive_tscm": "#1b9e77",
    "tcm": "#66c2a5",
    "tem": "#8da0cb",
    "teff": "#e78ac3",
    "exhausted": "#d95f02",
    "treg": "#7570b3",
    "proliferating": "#e6ab02",
    "gd": "#a6761d",
    "mait": "#666666",
    "unassigned": "#d9d9d9",
}
LINEAGE_COLORS: dict[str, str] = {"CD4": "#1f78b4", "CD8": "#e31a1c", "DN": "#b2df8a",
                                  "DP": "#6a3d9a", "gd": "#a6761d"}
CAR_COLORS: dict[str, str] = {
    "CAR+ (own UMIs)": "#e31a1c",
    "CAR+ (from clone)": "#fb9a99",
    "CAR-": "#bdbdbd",
    "unknown": "#f0f0f0",
}
_EXTRA = ["#b15928", "#cab2d6", "#ffff99", "#1f78b4", "#33a02c"]


def _umap(adata: ad.AnnData) -> np.ndarray:
    if "X_umap" not in adata.obsm:
        raise CartCohortError("the annotated object has no obsm['X_umap']; re-run rule integrate")
    return np.asarray(adata.obsm["X_umap"])[:, :2]


def _colors(categories: Sequence[str], palette: Mapping[str, str]) -> dict[str, str]:
    out = {}
    extra = iter(_EXTRA * 10)
    for c in categories:
        out[c] = palette.get(c) or next(extra)
    return out


def umap_categorical(
    adata: ad.AnnData,
    *,
    labels: pd.Series,
    order: Sequence[str],
    palette: Mapping[str, str],
    title: str,
    background: Sequence[str] = (),
) -> Figure:
    """UMAP coloured by a categorical per-cell label (deterministic draw order).

    Categories in ``background`` are drawn first (underneath); the rest in a
    fixed pseudo-random order of cells so that no category hides another.
    """
    xy = _umap(adata)
    labels = pd.Series(np.asarray(labels, dtype=object), index=adata.obs_names).fillna("unknown")
    present = [c for c in order if (labels == c).any()]
    present += sorted(set(labels.unique()) - set(present))
    colors = _colors(present, palette)
    n = len(labels)
    rank = np.argsort(np.random.default_rng(0).permutation(n), kind="mergesort")
    bg = labels.isin(list(background)).to_numpy()
    draw = np.lexsort((rank, ~bg))
    fig, ax = plt.subplots(figsize=(7.5, 6))
    size = max(0.5, min(8.0, 20000.0 / max(n, 1)))
    ax.scatter(xy[draw, 0], xy[draw, 1], c=[colors[v] for v in labels.to_numpy()[draw]],
               s=size, linewidths=0, rasterized=True)
    counts = labels.value_counts()
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[c],
                          label=f"{c} ({counts.get(c, 0)})") for c in present]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
              fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def umap_state(adata: ad.AnnData, *, states: Sequence[str]) -> Figure:
    """UMAP coloured by the final state call."""
    return umap_categorical(adata, labels=adata.obs["state"].astype(object),
                            order=[*states, "unassigned"], palette=STATE_COLORS,
                            title="T-cell state", background=["unassigned"])


def umap_lineage(adata: ad.AnnData) -> Figure:
    """UMAP coloured by the final (clone-aware) CD4/CD8/DN/DP call."""
    return umap_categorical(adata, labels=adata.obs["cd4_cd8"].astype(object),
                            order=list(LINEAGE_COLORS), palette=LINEAGE_COLORS,
                            title="Lineage (clone-aware)")


def car_category(obs: pd.DataFrame) -> pd.Series:
    """``CAR+ (own UMIs)``, ``CAR+ (from clone)``, ``CAR-`` or ``unknown`` per cell."""
    final = obs["car_positive"].astype("boolean")
    cell = obs["car_positive_cell"].astype("boolean")
    out = pd.Series("unknown", index=obs.index, dtype=object)
    known = final.notna().to_numpy()
    f = final.fillna(False).to_numpy(dtype=bool)
    c = cell.fillna(False).to_numpy(dtype=bool)
    out[known & f & c] = "CAR+ (own UMIs)"
    out[known & f & ~c] = "CAR+ (from clone)"
    out[known & ~f] = "CAR-"
    return out


def umap_car(adata: ad.AnnData) -> Figure:
    """UMAP coloured by CAR status, separating calls made from the clone."""
    cat = car_category(adata.obs)
    title = "CAR status" if (cat != "unknown").any() else "CAR status (no CAR feature: unknown)"
    return umap_categorical(adata, labels=cat, order=list(CAR_COLORS), palette=CAR_COLORS,
                            title=title, background=["CAR-", "unknown"])


def _group_order(obs: pd.DataFrame) -> pd.DataFrame:
    cols = ["patient", "timepoint"]
    g = obs[cols].astype(str).copy()
    g["day"] = (pd.to_numeric(obs["timepoint_day"], errors="coerce")
                if "timepoint_day" in obs else np.nan)
    first = g.groupby(cols, sort=False)["day"].min().reset_index()
    first["day_key"] = first["day"].fillna(np.inf)
    return first.sort_values(["patient", "day_key", "timepoint"], kind="mergesort")


def state_fraction_bars(adata: ad.AnnData, *, states: Sequence[str]) -> Figure:
    """Stacked bars of state fractions for every patient x timepoint."""
    obs = adata.obs
    for col in ("patient", "timepoint", "state"):
        if col not in obs:
            raise CartCohortError(f"obs['{col}'] is missing; cannot draw state fractions")
    groups = _group_order(obs)
    key = obs["patient"].astype(str) + " | " + obs["timepoint"].astype(str)
    labels = (groups["patient"] + " | " + groups["timepoint"]).tolist()
    order = [*states, "unassigned"]
    present = [s for s in order if (obs["state"].astype(str) == s).any()]
    tab = pd.crosstab(key, obs["state"].astype(str)).reindex(index=labels, columns=present,
                                                              fill_value=0)
    n = tab.sum(axis=1)
    frac = tab.div(n.replace(0, np.nan), axis=0).fillna(0.0)
    colors = _colors(present, STATE_COLORS)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(labels) + 2.5), 5))
    bottom = np.zeros(len(labels))
    x = np.arange(len(labels))
    for s in present:
        ax.bar(x, frac[s].to_numpy(), bottom=bottom, color=colors[s], width=0.85, label=s,
               linewidth=0)
        bottom += frac[s].to_numpy()
    ax.set_xticks(x)
    ax.set_xticklabels([f"{lab} (n={n.iloc[i]})" for i, lab in enumerate(labels)], rotation=90,
                       fontsize=7)
    ax.set_ylabel("fraction of cells")
    ax.set_ylim(0, 1)
    ax.set_title("State composition per patient and timepoint")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def signature_dotplot(
    adata: ad.AnnData, *, genes_by_state: Mapping[str, Sequence[str]], max_genes: int = 6
) -> Figure:
    """Dot plot of signature genes (columns) by called state (rows).

    Dot size: fraction of the state's cells with at least one UMI of the gene;
    colour: mean log-normalised expression scaled to the gene's maximum over states.
    """
    obs = adata.obs
    states = [s for s in genes_by_state if (obs["state"].astype(str) == s).any()]
    genes: list[str] = []
    for s in genes_by_state:
        for g in list(genes_by_state[s])[:max_genes]:
            if g in adata.var_names and g not in genes:
                genes.append(g)
    if not states or not genes:
        raise CartCohortError("no called state or no signature gene in the data to plot")
    idx = adata.var_names.get_indexer(genes)
    expr = adata.X[:, idx]
    expr = expr.toarray() if sparse.issparse(expr) else np.asarray(expr)
    counts = adata.layers["counts"][:, idx] if "counts" in adata.layers else adata.X[:, idx]
    counts = counts.toarray() if sparse.issparse(counts) else np.asarray(counts)
    lab = obs["state"].astype(str).to_numpy()
    mean = np.array([expr[lab == s].mean(axis=0) for s in states])
    frac = np.array([(counts[lab == s] > 0).mean(axis=0) for s in states])
    scaled = mean / np.where(mean.max(axis=0) > 0, mean.max(axis=0), 1.0)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(genes) + 3), 0.4 * len(states) + 2.2))
    yy, xx = np.meshgrid(np.arange(len(states)), np.arange(len(genes)), indexing="ij")
    sc = ax.scatter(xx.ravel(), yy.ravel(), s=frac.ravel() * 120, c=scaled.ravel(), cmap="Reds",
                    vmin=0, vmax=1, edgecolors="#777777", linewidths=0.3)
    ax.set_xticks(range(len(genes)))
    ax.set_xticklabels(genes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(states)))
    ax.set_yticklabels([f"{s} (n={(lab == s).sum()})" for s in states], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-0.7, len(genes) - 0.3)
    cb = fig.colorbar(sc, ax=ax, fraction=0.03, pad=0.02)
    cb.set_label("mean expression (scaled)")
    for f in (0.25, 0.5, 1.0):
        ax.scatter([], [], s=f * 120, c="#999999", label=f"{int(f * 100)}% expressing")
    ax.legend(loc="upper left", bbox_to_anchor=(1.12, 1.0), frameon=False, fontsize=7)
    ax.set_title("Signature genes by called state")
    fig.tight_layout()
    return fig


def library_calls(libraries: pd.DataFrame) -> Figure:
    """Per library: lineage fractions and CAR+ fraction of the model beside the naive rule's.

    Parameters
    ----------
    libraries
        ``tables/annotation_libraries.tsv``.
    """
    libs = libraries.sort_values("sample").reset_index(drop=True)
    n = len(libs)
    y = np.arange(n)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, max(3.0, 0.28 * n + 1.5)), sharey=True,
                                   gridspec_kw={"width_ratios": [2, 1]})
    gd = pd.to_numeric(libs["gd_fraction"], errors="coerce").fillna(0).to_numpy()
    for offset, prefix, scale in ((-0.2, "", 1 - gd), (0.2, "naive_", np.ones(n))):
        left = np.zeros(n)
        for lin in ("CD4", "CD8", "DN", "DP"):
            v = pd.to_numeric(libs[f"{prefix}{lin.lower()}_fraction"], errors="coerce")
            v = v.fillna(0).to_numpy() * scale
            ax1.barh(y + offset, v, left=left, height=0.38, color=LINEAGE_COLORS[lin],
                     label=lin if not prefix else None, hatch="//" if prefix else None,
                     edgecolor="white", linewidth=0)
            left += v
        if not prefix:
            ax1.barh(y + offset, gd, left=left, height=0.38, color=LINEAGE_COLORS["gd"],
                     label="gd", linewidth=0)
    ax1.set_yticks(y)
    ax1.set_yticklabels([f"{s} ({v})" for s, v in zip(libs["sample"], libs["sort"])],
                        fontsize=7)
    ax1.set_xlim(0, 1)
    ax1.set_xlabel("fraction of cells (upper bar: model; lower, hatched: naive rule)")
    ax1.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=5, frameon=False,
               fontsize=8)
    model = pd.to_numeric(libs["car_positive_fraction"], errors="coerce").to_numpy()
    naive = pd.to_numeric(libs["naive_car_positive_fraction"], errors="coerce").to_numpy()
    ax2.barh(y - 0.2, np.nan_to_num(model), height=0.38, color="#e31a1c", label="model")
    ax2.barh(y + 0.2, np.nan_to_num(naive), height=0.38, color="#bdbdbd", label="naive rule")
    ax2.set_xlim(0, 1)
    ax2.set_xlabel("CAR+ fraction")
    ax2.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False,
               fontsize=8)
    ax1.invert_yaxis()
    fig.tight_layout()
    return fig


def annotation_figures(adata: ad.AnnData) -> Iterator[tuple[str, Figure]]:
    """The figures of rule ``plot_annotation``, one at a time (save and close each).

    Parameters
    ----------
    adata
        ``gex`` of ``results/cohort.h5mu``: calls in ``obs``, ``obsm['X_umap']``
        and ``uns['annotation']['signature_genes']``.

    Yields
    ------
    (name, Figure)
        ``umap_state``, ``umap_lineage``, ``umap_car``, ``state_fractions`` and
        ``dotplot`` (the output names of the rule), in this order.
    """
    import logging

    genes = {k: list(v) for k, v in adata.uns["annotation"]["signature_genes"].items()}
    states = list(genes)
    logging.getLogger(__name__).info("plotting %d cells, states %s", adata.n_obs, states)
    yield "umap_state", umap_state(adata, states=states)
    yield "umap_lineage", umap_lineage(adata)
    yield "umap_car", umap_car(adata)
    yield "state_fractions", state_fraction_bars(adata, states=states)
    yield "dotplot", signature_dotplot(adata, genes_by_state=genes)

