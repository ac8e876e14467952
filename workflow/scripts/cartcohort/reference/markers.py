"""Checkpoint-receptor calls of new cells with the cohort's count models.

In the cohort, ``pd1_pos``/``tim3_pos``/``lag3_pos`` come from a two-state count model
of each marker gene fitted on all cells (:func:`cartcohort.tl.annotate.marker_positivity`).
Fitted on one new library, the model splits noise when the library has few positive
cells (P11_IP on the demo, left out: 57 % PD-1+ against 1.5 % in the cohort). The
cohort's fits (rates, NB size, prior, neighbour agreement) are frozen
(:func:`marker_models`) and the new cells are called with them (:func:`frozen_marker_calls`),
pooling evidence with the cohort's agreement ``rho`` over their rows of the joint kNN
graph of reference and new cells (:func:`~.project.joint_graph`), as the states are: in
the cohort a cell's neighbours are mostly cells of other libraries, so pooling over the
new library's own graph alone moved its LAG-3+ fraction by 0.04 on demo P15_IP. The
reference keeps its cells' marker counts and library sizes for that
(:func:`marker_counts`).
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


def marker_counts(counts: sp.spmatrix, *, genes: pd.Index, is_car: np.ndarray,
                  models: dict[str, dict[str, Any]]) -> np.ndarray:
    """Cells x (one column per model of ``models``, in its order, then the CAR-free library
    size): what :func:`frozen_marker_calls` needs of the reference's cells."""
    c = sp.csr_matrix(counts)
    cols = [np.asarray(c[:, genes.get_loc(m["gene"])].toarray()).ravel()
            for m in models.values()]
    return np.column_stack([*cols, _library_size(c, np.asarray(is_car, dtype=bool))])


def _marker_log_lik(c: np.ndarray, lib: np.ndarray, m: dict[str, Any]) -> np.ndarray:
    from ..tl.annotate._utils import nb_logpmf, pois_logpmf

    return np.column_stack([pois_logpmf(c, lib * m["low_rate"]),
                            nb_logpmf(c, lib * m["high_rate"], m["size"])])


def frozen_marker_calls(
    counts: sp.spmatrix,
    *,
    genes: pd.Index,
    is_car: np.ndarray,
    graph_ref: sp.spmatrix,
    graph_new: sp.spmatrix,
    reference_counts: np.ndarray,
    models: dict[str, dict[str, Any]],
) -> pd.DataFrame:
    """``pd1_pos``, ``tim3_pos``, ``lag3_pos`` and ``triple_pos`` of new cells.

    Each cell's evidence is its own log-likelihood plus its neighbours' terms
    (:func:`cartcohort.tl.annotate.pool_neighbour_evidence`, the frozen ``rho``), over
    its reference and new neighbours.

    Parameters
    ----------
    counts
        New cells x genes, raw counts.
    genes, is_car
        Their ``var_names`` and CAR mask.
    graph_ref, graph_new
        The new cells' kNN-graph weights to reference cells and to new cells
        (:func:`~.project.joint_graph`).
    reference_counts
        :func:`marker_counts` of the reference cells (``obsm['X_marker_counts']``).
    models
        :func:`marker_models` of the cohort.

    Returns
    -------
    pandas.DataFrame
        Boolean columns, one row per cell (positional index); a marker without a model
        is missing (NA), as in the cohort.
    """
    from ..tl.annotate import MARKER_COLUMNS
    from ..tl.annotate._utils import normalise_log

    lib = _library_size(counts, np.asarray(is_car, dtype=bool))
    ref = np.asarray(reference_counts, dtype=np.float64)
    g_ref = sp.csr_matrix(graph_ref, dtype=np.float64)
    g_new = sp.csr_matrix(graph_new, dtype=np.float64)
    out = pd.DataFrame(index=pd.RangeIndex(counts.shape[0]))
    column = {col: j for j, col in enumerate(models)}
    for col in MARKER_COLUMNS:
        m = models.get(col)
        if m is None:
            out[col] = pd.array([pd.NA] * len(out), dtype="boolean")
            continue
        c = np.asarray(sp.csr_matrix(counts)[:, genes.get_loc(m["gene"])].toarray()).ravel()
        prior = np.asarray(m["prior"], dtype=float)
        rho = float(m["rho"])

        def term(ll: np.ndarray) -> np.ndarray:
            own = normalise_log(ll + np.log(prior)[None, :])
            return np.log(rho * own / prior[None, :] + (1.0 - rho))

        ll = _marker_log_lik(c, lib, m)
        ll_ref = _marker_log_lik(ref[:, column[col]], ref[:, -1], m)
        evidence = ll + (np.asarray(g_ref @ term(ll_ref)) + np.asarray(g_new @ term(ll))
                         if rho > 0 else 0.0)
        post = normalise_log(evidence + np.log(prior)[None, :])
        out[col] = pd.array(post[:, 1] >= 0.5, dtype="boolean")
    out["triple_pos"] = (out["pd1_pos"] & out["tim3_pos"] & out["lag3_pos"]).astype("boolean")
    return out
