"""Checkpoint-receptor calls of new cells with the cohort's count models.

In the cohort, ``pd1_pos``/``tim3_pos``/``lag3_pos`` come from a two-state count model
of each marker gene fitted on all cells (:func:`cartcohort.tl.annotate.marker_positivity`).
Fitted on one new library, the model splits noise when the library has few positive
cells (P11_IP on the demo, left out: 57 % PD-1+ against 1.5 % in the cohort). The
cohort's fits (rates, NB size, prior, neighbour agreement) are frozen
(:func:`marker_models`) and the new cells are called with them (:func:`frozen_marker_calls`),
pooling evidence over their own kNN graph with the cohort's agreement ``rho``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

MARKER_DESIGN = np.array([[False], [True]])
"""Classes ``neg`` (Poisson low state) and ``pos`` (negative-binomial high state)."""


def _library_size(counts: sp.spmatrix, is_car: np.ndarray) -> np.ndarray:
    """CAR-free UMIs per cell (>= 1), as annotation's library size."""
    c = sp.csr_matrix(counts)
    total = np.asarray(c.sum(axis=1)).ravel()
    car = np.asarray(c[:, np.flatnonzero(is_car)].sum(axis=1)).ravel() if is_car.any() else 0
    return np.maximum(total - car, 1.0)


def marker_models(
    counts: sp.spmatrix,
    graph: sp.spmatrix,
    *,
    genes: pd.Index,
    is_car: np.ndarray,
    signatures: Any,
) -> dict[str, dict[str, Any]]:
    """The cohort's checkpoint-marker models, fitted as annotation fits them.

    Parameters
    ----------
    counts
        Cohort cells x genes, raw counts.
    graph
        The cohort's kNN graph.
    genes
        ``var_names``.
    is_car
        CAR features (left out of the library size).
    signatures
        The marker programs (``exhaustion_markers``).

    Returns
    -------
    dict
        Column (``pd1_pos`` ...) -> ``gene``, ``low_rate``, ``high_rate``, ``size``,
        ``prior`` (neg, pos), ``rho`` and ``fraction_positive``; markers whose gene is
        not in the data are absent.
    """
    from ..tl.annotate import MARKER_COLUMNS, marker_positivity

    lib = _library_size(counts, np.asarray(is_car, dtype=bool))
    g = sp.csr_matrix(graph, dtype=np.float64)
    g.setdiag(0)
    g.eliminate_zeros()
    out = {}
    for col in MARKER_COLUMNS:
        gene = signatures.exhaustion_markers.get(col)
        if gene is None or gene not in genes:
            continue
        c = np.asarray(sp.csr_matrix(counts)[:, genes.get_loc(gene)].toarray()).ravel()
        pos, _, fit, rho = marker_positivity(c, library_size=lib, graph=g)
        out[col] = {"gene": gene, "low_rate": float(fit.low_rate[0]),
                    "high_rate": float(fit.high_rate[0]), "size": float(fit.size[0]),
                    "prior": [float(p) for p in fit.prior], "rho": float(rho),
                    "fraction_positive": float(pos.mean())}
    return out


def frozen_marker_calls(
    counts: sp.spmatrix,
    *,
    genes: pd.Index,
    is_car: np.ndarray,
    graph: sp.spmatrix,
    models: dict[str, dict[str, Any]],
) -> pd.DataFrame:
    """``pd1_pos``, ``tim3_pos``, ``lag3_pos`` and ``triple_pos`` of new cells.

    Parameters
    ----------
    counts
        New cells x genes, raw counts.
    genes, is_car
        Their ``var_names`` and CAR mask.
    graph
        The new cells' kNN graph (evidence of neighbours pooled with the frozen ``rho``).
    models
        :func:`marker_models` of the cohort.

    Returns
    -------
    pandas.DataFrame
        Boolean columns, one row per cell (positional index); a marker without a model
        is missing (NA), as in the cohort.
    """
    from ..tl.annotate import MARKER_COLUMNS, pool_neighbour_evidence
    from ..tl.annotate._utils import nb_logpmf, pois_logpmf

    lib = _library_size(counts, np.asarray(is_car, dtype=bool))
    g = sp.csr_matrix(graph, dtype=np.float64)
    g.setdiag(0)
    g.eliminate_zeros()
    out = pd.DataFrame(index=pd.RangeIndex(counts.shape[0]))
    for col in MARKER_COLUMNS:
        m = models.get(col)
        if m is None:
            out[col] = pd.array([pd.NA] * len(out), dtype="boolean")
            continue
        c = np.asarray(sp.csr_matrix(counts)[:, genes.get_loc(m["gene"])].toarray()).ravel()
        ll = np.column_stack([pois_logpmf(c, lib * m["low_rate"]),
                              nb_logpmf(c, lib * m["high_rate"], m["size"])])
        post, _, _ = pool_neighbour_evidence(ll, prior=np.asarray(m["prior"]), graph=g,
                                             rho=m["rho"])
        out[col] = pd.array(post[:, 1] >= 0.5, dtype="boolean")
    out["triple_pos"] = (out["pd1_pos"] & out["tim3_pos"] & out["lag3_pos"]).astype("boolean")
    return out
