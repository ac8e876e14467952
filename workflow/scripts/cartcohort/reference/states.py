"""State calls of new cells in the cohort's scale.

The cohort's ``score_<state>`` (:func:`cartcohort.tl.annotate.score_states`) standardise
each signature gene's kNN-smoothed log expression by its mean and SD over the cohort's
cells, smoothing over the cohort graph, where a cell's neighbours are mostly cells of
other libraries (94 % on the demo). A new library scored alone would be standardised
and smoothed within itself, and its calls drift (0.77 agreement with the in-cohort calls
on the demo, leaving each library out). Here the cohort's means and SDs are frozen
(:func:`state_scale`), and a new cell is smoothed over its row of the kNN graph of
reference and new cells together in the integrated space, built as the cohort's
(:func:`~.project.joint_graph`, on the batch-corrected coordinates of
:func:`~.project.corrected_embedding`), which reproduces the cohort's scores exactly
when the new cells sit where the integration put them; the call rule is the cohort's
(:func:`cartcohort.tl.annotate.call_states`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import CartCohortError


def signature_genes(signatures: Any, *, genes: pd.Index) -> tuple[Any, list[str]]:
    """The programs restricted to ``genes`` (as annotation does) and their genes."""
    from ..tl.annotate import restrict_signatures

    used, _ = restrict_signatures(signatures, genes=genes)
    return used, sorted({g for s in used.states for g in (*s.up, *s.down)})


def state_scale(
    x: sp.spmatrix,
    graph: sp.spmatrix,
    *,
    genes: pd.Index,
    signatures: Any,
    smoothing: float,
    sd_floor: float,
) -> tuple[list[str], np.ndarray, np.ndarray, sp.csr_matrix]:
    """The cohort's scale of the signature genes.

    Parameters
    ----------
    x
        Cohort cells x genes, log-normalised.
    graph
        The cohort's kNN graph (``obsp['connectivities']`` of the integration used).
    genes
        ``var_names`` of ``x``.
    signatures
        The marker programs (:func:`cartcohort.tl.annotate.load_signatures`).
    smoothing, sd_floor
        ``annotate.smoothing`` and ``annotate.sd_floor`` of the run.

    Returns
    -------
    (list, numpy.ndarray, numpy.ndarray, scipy.sparse.csr_matrix)
        The signature genes, the mean and SD (``sqrt(var + sd_floor**2)``) of their
        smoothed expression over the cohort, and their unsmoothed expression (cells x
        genes, float32 CSR) used to smooth new cells.
    """
    from ..tl.annotate import smoothing_operator

    _, names = signature_genes(signatures, genes=genes)
    idx = genes.get_indexer(names)
    expr = sp.csr_matrix(x[:, idx], dtype=np.float64)
    g = sp.csr_matrix(graph, dtype=np.float64)
    g.setdiag(0)
    g.eliminate_zeros()
    dense = expr.toarray()
    sm = np.asarray(smoothing_operator(g, smoothing=smoothing) @ dense) if smoothing > 0 \
        else dense
    mean = sm.mean(axis=0)
    sd = np.sqrt(sm.var(axis=0) + sd_floor**2)
    return names, mean, sd, sp.csr_matrix(expr, dtype=np.float32)


def frozen_state_calls(
    x: sp.spmatrix,
    *,
    model: ad.AnnData,
    graph_ref: sp.spmatrix,
    graph_new: sp.spmatrix,
    lineage: np.ndarray,
    signatures: Any,
    settings: Mapping[str, Any],
) -> pd.DataFrame:
    """``score_<state>``, ``state`` and ``state_confidence`` of new cells in the cohort's
    scale.

    Parameters
    ----------
    x
        New cells x reference genes, log-normalised (:func:`cartcohort.pp.log_normalise`).
    model
        The reference (``uns['state_scale']``, ``obsm['X_signature']``).
    graph_ref, graph_new
        The new cells' kNN-graph weights to reference cells and to new cells
        (:func:`~.project.joint_graph`); a cell without neighbours keeps its own value.
    lineage
        ``cd4_cd8`` call of each new cell (states restricted to a lineage).
    signatures
        The reference's marker programs.
    settings
        The frozen ``annotate`` settings (``smoothing``, ``down_weight``,
        ``min_state_score``, ``min_confidence_margin``, ``cluster_consensus``).

    Returns
    -------
    pandas.DataFrame
        One row per new cell (positional index).
    """
    from ..tl.annotate import call_states

    if settings["cluster_consensus"]:
        raise CartCohortError(
            "the reference was annotated with annotate.cluster_consensus: true (states of "
            "Leiden clusters), which new cells cannot join. Fix: build the reference with "
            "annotate.cluster_consensus: false")
    scale = model.uns["state_scale"]
    names = list(scale["genes"])
    used, _ = signature_genes(signatures, genes=pd.Index(names))
    own = np.asarray(sp.csr_matrix(x)[:, model.var_names.get_indexer(names)].toarray(),
                     dtype=np.float64)
    ref = sp.csr_matrix(model.obsm["X_signature"], dtype=np.float64)
    to_ref = sp.csr_matrix(graph_ref, dtype=np.float64)
    to_new = sp.csr_matrix(graph_new, dtype=np.float64)
    deg = np.asarray(to_ref.sum(axis=1)).ravel() + np.asarray(to_new.sum(axis=1)).ravel()
    nbr = np.asarray((to_ref @ ref).toarray() + to_new @ own)
    nbr = np.divide(nbr, deg[:, None], out=own.copy(), where=deg[:, None] > 0)
    s = float(settings["smoothing"])
    z = ((1 - s) * own + s * nbr - np.asarray(scale["mean"])) / np.asarray(scale["sd"])
    col = {g: i for i, g in enumerate(names)}
    scores = {}
    for st in used.states:
        v = z[:, [col[g] for g in st.up]].mean(axis=1)
        if st.down:
            v = v - float(settings["down_weight"]) * z[:, [col[g] for g in st.down]].mean(axis=1)
        scores[f"score_{st.id}"] = v
    table = pd.DataFrame(scores)
    calls = call_states(table, lineage=np.asarray(lineage, dtype=object),
                        restrictions={st.id: st.lineage for st in used.states},
                        min_score=float(settings["min_state_score"]),
                        min_margin=float(settings["min_confidence_margin"]))
    return pd.concat([table, calls[["state", "state_confidence"]].reset_index(drop=True)],
                     axis=1)
