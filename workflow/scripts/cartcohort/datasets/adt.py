"""Simulated CITE-seq antibody panel (ADT) with protein truth per cell.

Part of the demo libraries (:func:`has_adt`) get Antibody Capture features in their
filtered matrix and a Cell Ranger ``raw_feature_bc_matrix`` beside it holding the cells
plus empty droplets (one of them without the raw matrix: CLR). Counts per cell and
antibody are negative binomial around ``s_i (b_j + p_j x_ij)``: ``s_i`` the cell's staining
/ capture factor (log-normal), ``b_j`` the antibody's ambient (empty-droplet) level,
``p_j`` its specific signal and ``x_ij`` the protein truth (0/1); isotype controls carry
``s_i b_j`` only, so they track the per-cell technical component as dsb assumes. Empty
droplets hold Poisson ambient counts. Protein truth follows the RNA truth: lineage from
``cd4_cd8``, the memory subset from the cell state (naive/Tscm split by CD95), checkpoints
more often on exhausted cells, anti-CAR on CAR+ cells. A separate random stream is used,
so the RNA and TCR data of the demo do not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

#: Panel: (antibody name as written, marker or "" for isotypes), vendor-style names.
PANEL: tuple[tuple[str, str], ...] = (
    ("CD3_TotalSeqC", "CD3"), ("CD4_TotalSeqC", "CD4"), ("CD8a_TotalSeqC", "CD8"),
    ("CD45RA_TotalSeqC", "CD45RA"), ("CD45RO_TotalSeqC", "CD45RO"),
    ("CD197_TotalSeqC", "CCR7"), ("CD62L_TotalSeqC", "CD62L"), ("CD95 _TotalSeqC", "CD95"),
    ("CD27_TotalSeqC", "CD27"), ("CD28_TotalSeqC", "CD28"), ("CD279_TotalSeqC", "PD-1"),
    ("CD366_TotalSeqC", "TIM-3"), ("CD223_TotalSeqC", "LAG-3"),
    ("antiCAR_idiotype", "CAR"),
    ("Mouse IgG1 kappa isotype", ""), ("Mouse IgG2a kappa isotype", ""),
    ("Rat IgG2b kappa Isotype", ""),
)
#: Memory subset of each simulated cell state (naive_tscm splits into Tn / Tscm by CD95).
STATE_SUBSET = {"naive_tscm": "Tn", "tcm": "Tcm", "treg": "Tcm", "tem": "Tem",
                "exhausted": "Tem", "proliferating": "Tem", "teff": "Temra"}
#: Surface phenotype of each subset: marker -> P(positive).
SUBSET_MARKERS = {
    "Tn": {"CD45RA": 1, "CCR7": 1, "CD62L": 1, "CD95": 0, "CD27": 1, "CD28": 1},
    "Tscm": {"CD45RA": 1, "CCR7": 1, "CD62L": 1, "CD95": 1, "CD27": 1, "CD28": 1},
    "Tcm": {"CD45RA": 0, "CCR7": 1, "CD62L": 1, "CD95": 1, "CD27": 1, "CD28": 1},
    "Tem": {"CD45RA": 0, "CCR7": 0, "CD62L": 0, "CD95": 1, "CD27": 0.5, "CD28": 0.6},
    "Temra": {"CD45RA": 1, "CCR7": 0, "CD62L": 0, "CD95": 1, "CD27": 0, "CD28": 0.2},
}
#: P(checkpoint+) on exhausted cells and on the others.
CHECKPOINT_RATES = {"PD-1": (0.9, 0.08), "TIM-3": (0.7, 0.03), "LAG-3": (0.6, 0.03)}
#: Libraries (plan index) with an ADT panel: every fourth; the first lacks its raw matrix.
ADT_EVERY = 4


def has_adt(index: int) -> bool:
    """Whether library ``index`` of the plan gets the ADT panel."""
    return index % ADT_EVERY == 0


def has_raw_matrix(index: int) -> bool:
    """Whether that library also gets its raw matrix (else: CLR in the workflow)."""
    return has_adt(index) and index != 0


@dataclass(frozen=True)
class AdtLibrary:
    """Simulated ADT data of one library: ``counts`` (cells x antibodies), ``empty``
    (empty droplets x antibodies), ``names`` (antibodies) and ``truth`` (per cell:
    ``cell``, ``sample``, ``prot_cd4_cd8``, ``prot_memory``, one 0/1 column per marker)."""

    counts: sp.csr_matrix
    empty: sp.csr_matrix
    names: list[str]
    truth: pd.DataFrame


def protein_truth(cells: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Protein truth of each cell from its RNA truth (``state``, ``cd4_cd8``,
    ``car_positive``): 0/1 per marker, ``prot_memory`` and ``prot_cd4_cd8``."""
    n = len(cells)
    subset = cells["state"].map(STATE_SUBSET).fillna("Tem").to_numpy(dtype=object)
    naive = subset == "Tn"
    subset[naive & (rng.random(n) < 0.5)] = "Tscm"
    lin = cells["cd4_cd8"].astype(str).to_numpy()
    out = {"CD3": np.ones(n, int), "CD4": np.isin(lin, ["CD4", "DP"]).astype(int),
           "CD8": np.isin(lin, ["CD8", "DP"]).astype(int)}
    for marker in SUBSET_MARKERS["Tn"]:
        p = np.array([SUBSET_MARKERS[s][marker] for s in subset], float)
        out[marker] = (rng.random(n) < p).astype(int)
    out["CD45RO"] = 1 - out["CD45RA"]
    exhausted = cells["state"].to_numpy() == "exhausted"
    for marker, (p_exh, p_other) in CHECKPOINT_RATES.items():
        out[marker] = (rng.random(n) < np.where(exhausted, p_exh, p_other)).astype(int)
    out["CAR"] = cells["car_positive"].astype(bool).to_numpy().astype(int)
    truth = pd.DataFrame(out, index=cells.index)
    gd = lin == "gd"
    truth.insert(0, "prot_memory", subset)
    truth.insert(0, "prot_cd4_cd8", np.where(gd, "DN", lin))
    return truth


def simulate_adt(cells: pd.DataFrame, *, seed: int, index: int,
                 n_empty: int = 1500) -> AdtLibrary:
    """ADT counts, empty droplets and protein truth of one library (see module docstring).

    Parameters
    ----------
    cells
        The library's truth table (``cell``, ``sample``, ``state``, ``cd4_cd8``,
        ``car_positive``), one row per cell in the matrix order.
    seed, index
        Master seed and library index (the random stream ``[seed, 27, index]``).
    n_empty
        Empty droplets in the raw matrix.
    """
    rng = np.random.default_rng([seed, 27, index])
    truth = protein_truth(cells, rng)
    names = [a for a, _ in PANEL]
    markers = [m for _, m in PANEL]
    k = len(PANEL)
    ambient = rng.uniform(3.0, 12.0, size=k)
    signal = rng.uniform(40.0, 250.0, size=k)
    x = np.column_stack([truth[m].to_numpy() if m else np.zeros(len(cells))
                         for m in markers])
    stain = rng.lognormal(0.0, 0.35, size=(len(cells), 1))
    mean = stain * (ambient + signal * x)
    size = 8.0
    counts = rng.negative_binomial(size, size / (size + mean))
    drop = rng.lognormal(0.0, 0.4, size=(n_empty, 1))
    empty = rng.poisson(drop * ambient)
    truth = truth.assign(cell=cells["cell"].to_numpy(), sample=cells["sample"].to_numpy())
    cols = ["cell", "sample", "prot_cd4_cd8", "prot_memory",
            *[m for m in markers if m]]
    return AdtLibrary(counts=sp.csr_matrix(counts.astype(np.int32)),
                      empty=sp.csr_matrix(empty.astype(np.int32)), names=names,
                      truth=truth[cols].reset_index(drop=True))
