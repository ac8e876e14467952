"""QC figures: per-sample metric violins with thresholds, counts vs genes scatter."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ._save import save_figure  # noqa: F401  (re-exported for entry scripts)
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ..errors import CartCohortError  # noqa: E402

_NEEDED = (
    "sample",
    "qc_total_counts",
    "qc_n_genes",
    "qc_pct_mito",
    "qc_pct_top20",
    "qc_is_doublet",
    "qc_tcr_multichain",
    "qc_pass",
    "qc_reason",
)

_PANELS = (
    ("total_counts", "total UMI counts", True),
    ("n_genes", "detected genes", True),
    ("pct_mito", "% counts mitochondrial", False),
    ("pct_top20", "% counts in top-20 genes", False),
)

_METRIC_REASONS = (
    "low_counts", "high_counts", "low_genes", "high_genes", "high_mito", "high_top20",
)

#: QC outcome categories of :func:`qc_outcome`, in drawing order, with colours.
OUTCOME_COLORS = {
    "pass": "#bdbdbd",
    "low quality": "#e41a1c",
    "doublet (expression)": "#377eb8",
    "doublet (TCR)": "#984ea3",
}


def read_qc_obs(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Read only ``gex.obs`` of QC'd ``.h5mu`` files (no matrices), stacked.

    Raises
    ------
    CartCohortError
        A file lacks the ``gex`` modality or a QC column.
    """
    import h5py
    from anndata.io import read_elem

    frames = []
    for p in paths:
        with h5py.File(p, "r") as f:
            if "mod/gex/obs" not in f:
                raise CartCohortError(f"{p}: no 'gex' modality; re-run rule qc_sample")
            obs = read_elem(f["mod/gex/obs"])
        missing = [c for c in _NEEDED if c not in obs.columns]
        if missing:
            raise CartCohortError(f"{p}: gex.obs lacks QC columns {missing}; re-run rule qc_sample")
        frames.append(obs[list(_NEEDED)])
    if not frames:
        raise CartCohortError("no QC files to plot")
    out = pd.concat(frames)
    out["sample"] = out["sample"].astype(str)
    return out


def qc_outcome(obs: pd.DataFrame) -> pd.Series:
    """One category per cell: ``pass``, ``low quality`` (any metric flag),
    ``doublet (expression)``, ``doublet (TCR)`` (first that applies, in that order
    after ``pass``)."""
    reason = obs["qc_reason"].astype(str)
    metric_fail = reason.str.split(";").apply(lambda r: any(x in _METRIC_REASONS for x in r))
    out = pd.Series("pass", index=obs.index, dtype=object)
    tcr = reason.str.contains("tcr_", regex=False)
    expr = reason.str.split(";").apply(lambda r: "doublet" in r)
    out[tcr] = "doublet (TCR)"
    out[expr] = "doublet (expression)"
    out[metric_fail] = "low quality"
    return out


def _thr(thresholds: pd.DataFrame, sample: str, col: str) -> float:
    row = thresholds.loc[thresholds["sample"].astype(str) == sample]
    if row.empty or col not in row:
        return np.nan
    v = row.iloc[0][col]
    return float(v) if pd.notna(v) else np.nan


def qc_violins(obs: pd.DataFrame, *, thresholds: pd.DataFrame) -> Figure:
    """Per-sample violins of the four QC metrics with the thresholds used.

    Parameters
    ----------
    obs
        Output of :func:`read_qc_obs` (all cells, pass or not).
    thresholds
        ``tables/qc_samples.tsv`` (``sample``, ``lower_<metric>``, ``upper_<metric>``,
        ``sample_excluded``).

    Returns
    -------
    matplotlib.figure.Figure
        Four stacked panels; counts and genes on a log10 axis. Dashed blue: lower
        threshold, dashed red: upper threshold (per sample); grey sample names:
        samples excluded at QC.
    """
    samples = sorted(obs["sample"].unique())
    n = len(samples)
    fig, axes = plt.subplots(len(_PANELS), 1, figsize=(max(6.0, 0.5 * n + 2.5), 11), sharex=True)
    excluded = set()
    if "sample_excluded" in thresholds:
        ex = thresholds["sample_excluded"].astype(str).str.lower() == "true"
        excluded = set(thresholds.loc[ex, "sample"].astype(str))
    for ax, (metric, label, log) in zip(axes, _PANELS):
        data = []
        for s in samples:
            v = obs.loc[obs["sample"] == s, f"qc_{metric}"].to_numpy(dtype=np.float64)
            v = v[np.isfinite(v)]
            if log:
                v = np.log10(v + 1)
            data.append(v)
        pos = np.arange(n)
        drawable = [i for i, v in enumerate(data) if v.size >= 2 and np.ptp(v) > 0]
        if drawable:
            parts = ax.violinplot([data[i] for i in drawable], positions=pos[drawable], widths=0.8,
                                  showextrema=False, showmedians=True)
            for body in parts["bodies"]:
                body.set_facecolor("#9ecae1")
                body.set_edgecolor("#3182bd")
                body.set_alpha(0.8)
        for i, v in enumerate(data):
            if i not in drawable and v.size:
                ax.scatter(np.full(v.size, i), v, s=6, color="#3182bd")
        for i, s in enumerate(samples):
            for side, color in (("lower", "#2171b5"), ("upper", "#cb181d")):
                t = _thr(thresholds, s, f"{side}_{metric}")
                if np.isnan(t):
                    continue
                if log:
                    if t <= 0:
                        continue
                    t = np.log10(t + 1)
                ax.hlines(t, i - 0.42, i + 0.42, colors=color, linestyles="--", linewidth=1.2)
        ax.set_ylabel(("log10 " if log else "") + label)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(np.arange(n))
    axes[-1].set_xticklabels(samples, rotation=90)
    for tick, s in zip(axes[-1].get_xticklabels(), samples):
        if s in excluded:
            tick.set_color("#969696")
    handles = [
        Line2D([], [], linestyle="--", color="#2171b5", label="lower threshold"),
        Line2D([], [], linestyle="--", color="#cb181d", label="upper threshold"),
    ]
    fig.legend(handles=handles, loc="upper right", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("QC metrics per sample (all cells) and the thresholds used", x=0.02,
                 ha="left", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def qc_scatter(obs: pd.DataFrame, *, thresholds: pd.DataFrame | None = None,
               max_points: int = 60000, seed: int = 0) -> Figure:
    """Total counts vs detected genes of every cell, coloured by % mito and by QC outcome.

    Parameters
    ----------
    obs
        Output of :func:`read_qc_obs`.
    thresholds
        ``tables/qc_samples.tsv``; the colour scale of % mito is capped at the
        largest upper mito threshold used (else the 99th percentile).
    max_points
        Above this, a fixed random subset (``seed``) is drawn.
    seed
        Seed of that subset.
    """
    d = obs
    if len(d) > max_points:
        rng = np.random.default_rng(seed)
        d = d.iloc[np.sort(rng.choice(len(d), size=max_points, replace=False))]
    x = np.log10(d["qc_total_counts"].to_numpy(dtype=np.float64) + 1)
    y = np.log10(d["qc_n_genes"].to_numpy(dtype=np.float64) + 1)
    mito = d["qc_pct_mito"].to_numpy(dtype=np.float64)
    vmax = np.nan
    if thresholds is not None and "upper_pct_mito" in thresholds:
        vmax = pd.to_numeric(thresholds["upper_pct_mito"], errors="coerce").max()
    if not np.isfinite(vmax) or vmax <= 0:
        finite = mito[np.isfinite(mito)]
        vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), sharex=True, sharey=True)
    order = np.argsort(np.nan_to_num(mito, nan=0.0), kind="mergesort")
    sc = axes[0].scatter(x[order], y[order], c=np.nan_to_num(mito[order], nan=0.0), s=3,
                         cmap="viridis", vmin=0, vmax=vmax, rasterized=True, linewidths=0)
    fig.colorbar(sc, ax=axes[0], label="% counts mitochondrial (capped)", extend="max")
    axes[0].set_title(f"coloured by % mito ({len(d)} cells)")
    outcome = qc_outcome(d).to_numpy()
    for cat, color in OUTCOME_COLORS.items():
        m = outcome == cat
        if m.any():
            axes[1].scatter(x[m], y[m], s=3, color=color, label=f"{cat} ({int(m.sum())})",
                            rasterized=True, linewidths=0)
    axes[1].legend(loc="lower right", markerscale=4, fontsize=8, frameon=False)
    axes[1].set_title("coloured by QC outcome")
    for ax in axes:
        ax.set_xlabel("log10 total UMI counts")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("log10 detected genes")
    fig.tight_layout()
    return fig



def qc_figures(
    h5mu: Sequence[str | os.PathLike],
    qc_samples: pd.DataFrame,
    *,
    violins: str | os.PathLike,
    scatter: str | os.PathLike,
) -> None:
    """Write the two QC figures of the report (rule ``plot_qc``) as byte-stable PNGs.

    Parameters
    ----------
    h5mu
        ``results/qc/{sample}.h5mu`` of the cohort (only ``gex.obs`` is read).
    qc_samples
        ``tables/qc_samples.tsv``: the thresholds applied to each sample.
    violins, scatter
        Output paths of :func:`qc_violins` and :func:`qc_scatter`.

    Returns
    -------
    None
        The figures are written to ``violins`` and ``scatter``.
    """
    obs = read_qc_obs(h5mu)
    logging.getLogger(__name__).info("plotting QC of %d cells in %d samples", len(obs),
                                     obs["sample"].nunique())
    save_figure(qc_violins(obs, thresholds=qc_samples), violins)
    save_figure(qc_scatter(obs, thresholds=qc_samples), scatter)
