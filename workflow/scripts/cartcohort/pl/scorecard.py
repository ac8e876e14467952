"""The new product's fitness strips: one row per attribute, the cohort's responders and
non-responders as points, the responders' interval shaded, the product marked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

RESPONDER, NONRESPONDER, PRODUCT = "#1f77b4", "#ff7f0e", "#d62728"


def _scale(unit: str) -> float:
    """Display factor of a unit (fractions as %)."""
    return 100.0 if unit == "%" else 1.0


def fitness_strips(
    rows: pd.DataFrame,
    *,
    reference: pd.DataFrame,
    labels: Mapping[str, str],
    units: Mapping[str, str],
    title: str,
    seed: int = 0,
) -> Figure:
    """Strip plot of a product's fitness attributes against the cohort.

    Parameters
    ----------
    rows
        One row per attribute, in plot order: ``feature``, ``value``, ``ci_low``,
        ``ci_high`` (NaN: no CI), ``interval_low``, ``interval_high``,
        ``cohort_percentile``, ``flag_text``.
    reference
        ``reference_features.tsv``: ``responder`` (True/False, other values not shown)
        and one column per feature.
    labels, units
        Readable name and unit of each feature (:mod:`cartcohort.scorecards.catalogue`).
    title
        Figure title (the product id).
    seed
        Vertical jitter of the cohort points.

    Returns
    -------
    matplotlib.figure.Figure
        8.5 x (0.9 per attribute + 1.3) inches.
    """
    rng = np.random.default_rng(seed)
    n = len(rows)
    fig, axes = plt.subplots(n, 1, figsize=(8.5, 0.9 * n + 1.3), squeeze=False)
    resp = reference["responder"].astype(str).str.lower()
    for ax, (_, r) in zip(axes[:, 0], rows.iterrows()):
        f = str(r["feature"])
        k = _scale(units.get(f, ""))
        for flag, y, colour in (("true", 0.25, RESPONDER), ("false", -0.25, NONRESPONDER)):
            v = pd.to_numeric(reference.loc[resp == flag, f], errors="coerce").dropna() \
                if f in reference else pd.Series(dtype=float)
            ax.scatter(k * v, y + rng.uniform(-0.1, 0.1, len(v)), s=18, color=colour,
                       alpha=0.8, linewidths=0)
        lo, hi = float(r["interval_low"]), float(r["interval_high"])
        if np.isfinite(lo) and np.isfinite(hi):
            ax.axvspan(k * lo, k * hi, color=RESPONDER, alpha=0.08, lw=0)
        val = float(r["value"])
        if np.isfinite(float(r["ci_low"])) and np.isfinite(float(r["ci_high"])):
            ax.plot([k * float(r["ci_low"]), k * float(r["ci_high"])], [0, 0], color=PRODUCT,
                    lw=2)
        if np.isfinite(val):
            ax.axvline(k * val, color=PRODUCT, lw=1.5)
            ax.scatter([k * val], [0], marker="D", s=50, color=PRODUCT, zorder=3)
        unit = units.get(f, "")
        ax.set_ylabel(labels.get(f, f) + (f"\n({unit})" if unit else ""), rotation=0,
                      ha="right", va="center", fontsize=9)
        ax.set_yticks([])
        ax.set_ylim(-0.5, 0.5)
        ax.tick_params(axis="x", labelsize=8)
        pct = float(r["cohort_percentile"])
        ax.text(1.01, 0.5, (f"P{pct:.0f}" if np.isfinite(pct) else "P n/a") + "\n"
                + str(r["flag_text"]), transform=ax.transAxes, fontsize=8, va="center")
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    handles = [plt.Line2D([], [], marker="o", ls="", color=RESPONDER, label="responders"),
               plt.Line2D([], [], marker="o", ls="", color=NONRESPONDER,
                          label="non-responders"),
               plt.Line2D([], [], marker="D", ls="", color=PRODUCT, label=title),
               plt.Rectangle((0, 0), 1, 1, color=RESPONDER, alpha=0.15,
                             label="responders' interval")]
    height = 0.9 * n + 1.3
    fig.suptitle(f"{title}: fitness attributes against the cohort", y=1 - 0.08 / height,
                 fontsize=11)
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.35 / height))
    fig.subplots_adjust(left=0.27, right=0.76, top=1 - 0.9 / height, bottom=0.05,
                        hspace=0.9)
    return fig


def page_figure(strips: Figure, *, text_blocks: Sequence[str]) -> Figure:
    """``strips`` with text lines below (the PDF page: QC block and statement); returns
    a new A4-portrait figure."""
    import io

    buf = io.BytesIO()
    strips.savefig(buf, format="png", dpi=110)
    buf.seek(0)
    img = plt.imread(buf)
    page = plt.figure(figsize=(8.27, 11.69))
    h = img.shape[0] / img.shape[1] * 8.27 / 11.69
    ax = page.add_axes([0.0, 1 - h - 0.01, 1.0, h])
    ax.imshow(img)
    ax.axis("off")
    page.text(0.06, 1 - h - 0.03, "\n".join(text_blocks), va="top", fontsize=9, wrap=True,
              family="sans-serif")
    return page


def write_pdf_pages(pages: Sequence[Figure], path) -> None:
    """Write figures as the pages of one PDF (no creation date: byte-stable), closing
    them."""
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path, metadata={"CreationDate": None, "Creator": None,
                                  "Producer": None}) as pdf:
        for fig in pages:
            pdf.savefig(fig)
            plt.close(fig)
