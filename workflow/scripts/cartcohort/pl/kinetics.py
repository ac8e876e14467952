"""Figures of clone kinetics after infusion (rule ``plot_kinetics``).

From the tables of rule ``kinetics``: per-patient CAR+ fraction over time coloured by
response (:func:`plot_car_kinetics`), the pooled clone-fate alluvial (product state ->
in vivo state, :func:`plot_clone_fate`) and one expansion volcano per patient
(:func:`volcano_pages`, 8 patients a page so that each page fits the report viewer).
Figures are built without pyplot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Polygon

from ..tl.kinetics import KINETIC_CLASSES
from ._save import note_figure, save_figure, write_pages
from .clonotypes import GROUP_COLORS, response_group

CLASS_COLORS: dict[str, str] = {
    "expanded": "#d7301f", "persisting": "#4292c6", "contracted": "#2ca25f",
    "undetected": "#bdbdbd", "emergent": "#fdae6b",
}
STATE_COLORS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf",
)
#: Title symbol of each volcano marker shape.
SYMBOLS: tuple[str, ...] = ("\u25cf", "\u25a0", "\u25b2", "\u25c6", "\u25bc")
#: Patients per volcano page (rows x columns).
VOLCANO_GRID: tuple[int, int] = (2, 4)


def _sorted(sort: object, patterns: Sequence[str]) -> bool:
    return isinstance(sort, str) and any(p in sort for p in patterns)


def plot_car_kinetics(
    samples: pd.DataFrame,
    *,
    response: Mapping[str, str],
    responders: Sequence[str],
    blood_compartment: str,
    car_sorted_patterns: Sequence[str],
) -> Figure:
    """CAR+ fraction of each patient's product and unsorted blood libraries over days.

    Parameters
    ----------
    samples
        ``kinetics_samples.tsv``.
    response, responders
        Patient -> response code, and the responder codes (line colours).
    blood_compartment, car_sorted_patterns
        Which libraries are blood, and which are CAR-sorted (left out: the sort sets
        their CAR+ share).
    """
    keep = (samples["is_product"].astype(str).str.lower() == "true") | (
        (samples["compartment"].astype(str) == str(blood_compartment))
        & ~samples["sort"].map(lambda v: _sorted(v, car_sorted_patterns)))
    df = samples[keep & samples["car_fraction"].notna()].copy()
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.add_subplot()
    if df.empty:
        ax.axis("off")
        ax.text(0.5, 0.5, "no CAR+ calls in product or unsorted blood libraries",
                ha="center", va="center")
        return fig
    groups = response_group(df["patient"], response=response, responders=responders)
    for patient, g in df.groupby("patient", sort=True):
        g = g.sort_values("timepoint_day", kind="mergesort")
        color = GROUP_COLORS[groups[g.index[0]]]
        ax.plot(g["timepoint_day"], g["car_fraction"], marker="o", ms=4, lw=1.2,
                color=color, alpha=0.85)
        f = g["car_fraction"].to_numpy(float)
        err = np.vstack([f - g["car_fraction_ci_low"].to_numpy(float),
                         g["car_fraction_ci_high"].to_numpy(float) - f])
        ax.errorbar(g["timepoint_day"].to_numpy(float), f, yerr=err, fmt="none",
                    ecolor=color, alpha=0.4, lw=0.8)
        last = g.iloc[-1]
        ax.annotate(str(patient), (last["timepoint_day"], last["car_fraction"]),
                    xytext=(3, 0), textcoords="offset points", fontsize=7, color=color)
    ax.set_xlabel("days after infusion (product at its day)")
    ax.set_ylabel("CAR+ fraction of cells (95% CI)")
    ax.set_ylim(0, 1)
    ax.legend(handles=[Line2D([], [], color=c, marker="o", label=k)
                       for k, c in GROUP_COLORS.items() if k in set(groups)],
              loc="upper right", fontsize=8, frameon=False)
    ax.set_title(f"CAR+ kinetics: product and unsorted {blood_compartment} libraries")
    return fig


def plot_clone_fate(fate: pd.DataFrame) -> Figure:
    """Alluvial of the top product clones (scope ``top_product_clones`` of
    ``clone_fate.tsv``, each patient's largest product clones seen again, pooled):
    product state (left) -> in vivo state (right).

    Band widths are clones; bands take the colour of the product state.
    """
    pooled = fate[fate["scope"].astype(str) == "top_product_clones"]
    fig = Figure(figsize=(7.5, 5.2), layout="constrained")
    ax = fig.add_subplot()
    ax.axis("off")
    if pooled.empty:
        ax.text(0.5, 0.5, "no clone seen both in the product and after infusion",
                ha="center", va="center")
        return fig
    states = sorted(set(pooled["product_state"]) | set(pooled["in_vivo_state"]))
    color = {s: STATE_COLORS[i % len(STATE_COLORS)] for i, s in enumerate(states)}
    total = float(pooled["n_clones"].sum())
    gap = 0.02
    left = pooled.groupby("product_state")["n_clones"].sum().reindex(states).fillna(0)
    right = pooled.groupby("in_vivo_state")["n_clones"].sum().reindex(states).fillna(0)
    scale = (1.0 - gap * len(states)) / total

    def tops(sizes: pd.Series) -> dict[str, float]:
        out, y = {}, 1.0
        for s, v in sizes.items():
            out[s] = y
            y -= v * scale + (gap if v > 0 else 0)
        return out

    lt, rt = tops(left), tops(right)
    lcur, rcur = dict(lt), dict(rt)
    for _, r in pooled.sort_values(["product_state", "in_vivo_state"]).iterrows():
        h = r["n_clones"] * scale
        a, b = r["product_state"], r["in_vivo_state"]
        y0, y1 = lcur[a], rcur[b]
        ax.add_patch(Polygon([(0.12, y0), (0.88, y1), (0.88, y1 - h), (0.12, y0 - h)],
                             closed=True, color=color[a], alpha=0.45, lw=0))
        lcur[a] -= h
        rcur[b] -= h
    for x, sizes, topd, ha in ((0.0, left, lt, "left"), (0.88, right, rt, "left")):
        for s, v in sizes.items():
            if v <= 0:
                continue
            ax.add_patch(Polygon([(x, topd[s]), (x + 0.12, topd[s]),
                                  (x + 0.12, topd[s] - v * scale),
                                  (x, topd[s] - v * scale)], closed=True, color=color[s]))
            ax.text(x + (0.13 if x > 0.5 else -0.01), topd[s] - v * scale / 2,
                    f"{s} ({int(v)})", ha="left" if x > 0.5 else "right", va="center",
                    fontsize=8)
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylim(-0.02, 1.02)
    ax.text(0.06, 1.03, "product state", ha="center", fontsize=9, fontweight="bold")
    ax.text(0.94, 1.03, "in vivo state", ha="center", fontsize=9, fontweight="bold")
    ax.set_title(f"Fate of each patient's top product clones ({int(total)} clones seen "
                 "again after infusion)", fontsize=10, pad=22)
    return fig


def volcano_pages(clones: pd.DataFrame, *, alpha: float = 0.05) -> list[Figure]:
    """Per patient: log2 fold change vs -log10 p of every tested clone, by class.

    Marker shape tells the post-infusion library (first: circle, then square, triangle).
    """
    tested = clones[clones["pvalue"].notna()]
    patients = sorted(tested["patient"].astype(str).unique())
    rows, cols = VOLCANO_GRID
    pages = []
    markers = ("o", "s", "^", "D", "v")
    for start in range(0, len(patients), rows * cols):
        fig = Figure(figsize=(3.4 * cols, 3.1 * rows + 0.8), layout="constrained")
        for k, patient in enumerate(patients[start:start + rows * cols]):
            ax = fig.add_subplot(rows, cols, k + 1)
            t = tested[tested["patient"].astype(str) == patient]
            libs = list(t.sort_values("timepoint_day")["sample"].unique())
            for i, lib in enumerate(libs):
                u = t[t["sample"] == lib]
                ax.scatter(np.log2(u["fold_change"]), -np.log10(u["pvalue"]), s=12,
                           marker=markers[i % len(markers)],
                           c=[CLASS_COLORS.get(c, "#000000") for c in u["kinetic_class"]],
                           alpha=0.8, lw=0)
            ax.axvline(0, color="#999999", lw=0.6)
            ax.set_title(f"{patient}: " + ", ".join(f"{m} {lib}" for m, lib in
                                                  zip(SYMBOLS, libs, strict=False)),
                         fontsize=8)
            ax.set_xlabel("log2 fold change vs product", fontsize=8)
            ax.set_ylabel("-log10 p (Fisher)", fontsize=8)
            ax.tick_params(labelsize=7)
        fig.legend(handles=[Patch(color=CLASS_COLORS[c], label=c) for c in KINETIC_CLASSES],
                   loc="outside lower center", ncols=len(KINETIC_CLASSES), fontsize=8,
                   frameon=False)
        page = f" (page {len(pages) + 1})" if len(patients) > rows * cols else ""
        fig.suptitle(f"Clone expansion per patient{page}; classes at BH q < {alpha:g}",
                     fontsize=11)
        pages.append(fig)
    return pages


def kinetics_figures(
    samples: pd.DataFrame,
    clones: pd.DataFrame,
    fate: pd.DataFrame,
    *,
    car: str | os.PathLike,
    fate_png: str | os.PathLike,
    volcano: str | os.PathLike,
    response: Mapping[str, str],
    responders: Sequence[str],
    blood_compartment: str,
    car_sorted_patterns: Sequence[str],
    alpha: float,
) -> None:
    """Write the kinetics figures (rule ``plot_kinetics``).

    Parameters
    ----------
    samples, clones, fate
        ``kinetics_samples.tsv``, ``clone_kinetics.tsv``, ``clone_fate.tsv``.
    car, fate_png, volcano
        Output paths: the CAR+ kinetics PNG, the clone-fate PNG and the volcano folder
        (``page_01.png``, ...).
    response, responders
        Patient -> response code and the responder codes.
    blood_compartment, car_sorted_patterns
        ``associate.blood_compartment`` and ``annotate.car_sorted_patterns``.
    alpha
        ``kinetics.alpha`` (stated on the volcano).

    Returns
    -------
    None
        The figures are written.
    """
    save_figure(plot_car_kinetics(samples, response=response, responders=responders,
                                  blood_compartment=blood_compartment,
                                  car_sorted_patterns=car_sorted_patterns), car)
    save_figure(plot_clone_fate(fate), fate_png)
    pages = volcano_pages(clones, alpha=alpha)
    write_pages(pages or [note_figure("no patient has a product and a post-infusion library "
                                    "with testable clones", title="Clone expansion")],
                 volcano)
