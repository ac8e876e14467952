"""Placing new cells in a frozen reference (:mod:`.model`).

Mapping: ``scanpy.tl.ingest``-style. The new library is log-normalised like the
cohort, its HVGs are scaled with the cohort's means and SDs and projected on the
cohort's PCA loadings; each new cell then takes its ``k`` nearest cohort cells in that
PCA space. Their calls are voted (weights ``1 / (distance + eps)``), the winning share
being the label's confidence, and their integrated coordinates are averaged with the
same weights.

Why not symphony through the frozen harmony model: symphony only applies to harmony,
while integrate.use may be any method (scVI, scanorama, bbknn, none); and it would
correct the new library as a batch of its own, which the one library of a new product
cannot be separated from (its biology is what is being measured). The kNN on the
shared PCA keeps the reference fixed and needs nothing fitted on the new library; its
agreement with the in-cohort calls is tested by leaving a library out
(tests/test_reference.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import CartCohortError
from ..pp import log_normalise
from .model import TARGET_SUM, TRANSFER_LABELS


def align_counts(counts: sp.spmatrix, genes: Sequence[str], model: ad.AnnData) -> sp.csr_matrix:
    """The columns of ``counts`` in the reference's gene order (genes checked by
    :func:`~.model.gene_mismatch` first)."""
    index = pd.Index(list(map(str, genes)))
    pos = index.get_indexer(model.var_names)
    if (pos < 0).any():
        raise CartCohortError(
            "the library lacks reference genes; check it with reference.gene_mismatch")
    return sp.csr_matrix(sp.csr_matrix(counts)[:, pos], dtype=np.float32)


def project_pca(counts: sp.spmatrix, model: ad.AnnData) -> np.ndarray:
    """PCA coordinates of new cells under the frozen model.

    Parameters
    ----------
    counts
        Cells x reference genes (raw counts, in ``model.var_names`` order).
    model
        The reference (:func:`~.model.build_reference`).

    Returns
    -------
    numpy.ndarray
        Cells x PCs (float32): ``((log1p(normalised) - mean) / sd) @ PCs`` over the HVGs,
        as :func:`cartcohort.pp.run_pca` computed the cohort's (constant genes not scaled).
    """
    if counts.shape[1] != model.n_vars:
        raise CartCohortError(
            f"{counts.shape[1]} genes given for a reference of {model.n_vars}; align "
            "them with reference.align_counts")
    target = float(model.uns.get("preprocessing", {}).get("target_sum", TARGET_SUM))
    hv = model.var["highly_variable"].to_numpy(dtype=bool)
    x = log_normalise(counts, target_sum=target)[:, hv].toarray().astype(np.float64)
    mean = model.var["pca_mean"].to_numpy()[hv]
    sd = model.var["pca_sd"].to_numpy()[hv]
    scaled = bool(model.uns.get("preprocessing", {}).get("scale", True))
    inv = np.divide(1.0, sd, out=np.ones_like(sd), where=sd > 0) if scaled else np.ones_like(sd)
    loadings = np.asarray(model.varm["PCs"], dtype=np.float64)[hv]
    return (((x - mean) * inv) @ loadings).astype(np.float32)


@dataclass(frozen=True)
class Mapping:
    """New cells placed in the reference (:func:`map_to_reference`).

    Attributes
    ----------
    labels
        One row per new cell: each transferred label and ``{label}_confidence`` (the
        weighted share of the neighbours that voted for it), ``mapping_distance``
        (mean PCA distance to the neighbours).
    x_pca
        Cells x PCs in the frozen PCA.
    x_integrated
        Cells x dimensions: the neighbours' integrated coordinates, weighted.
    neighbours
        Cells x k: indices of each cell's nearest reference cells.
    weights
        Cells x k: their vote weights.
    """

    labels: pd.DataFrame
    x_pca: np.ndarray
    x_integrated: np.ndarray
    neighbours: np.ndarray
    weights: np.ndarray


def knn_vote(
    neighbours: np.ndarray, weights: np.ndarray, labels: pd.Series
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted majority label of each row of ``neighbours`` and its share.

    Parameters
    ----------
    neighbours
        Cells x k indices into ``labels``.
    weights
        Cells x k non-negative weights.
    labels
        The reference cells' labels.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The winning label of each cell (ties: the first in sorted order) and its share
        of the weight in ``[0, 1]``.
    """
    codes, uniques = pd.factorize(labels.astype(str), sort=True)
    votes = np.zeros((neighbours.shape[0], len(uniques)))
    rows = np.repeat(np.arange(neighbours.shape[0]), neighbours.shape[1])
    np.add.at(votes, (rows, codes[neighbours.ravel()]), weights.ravel())
    total = votes.sum(axis=1)
    best = votes.argmax(axis=1)
    share = np.divide(votes[np.arange(len(best)), best], total, out=np.zeros_like(total),
                      where=total > 0)
    return np.asarray(uniques)[best], share


def map_to_reference(
    counts: sp.spmatrix,
    *,
    model: ad.AnnData,
    cells: Sequence[str],
    n_neighbors: int = 15,
    labels: Sequence[str] = TRANSFER_LABELS,
) -> Mapping:
    """Project new cells and transfer the reference's calls by a kNN vote.

    Parameters
    ----------
    counts
        Cells x reference genes, raw counts (:func:`align_counts`).
    model
        The reference (:func:`~.model.build_reference`).
    cells
        Ids of the new cells (rows of ``counts``).
    n_neighbors
        Cohort cells voting for each new cell (``integrate.n_neighbors`` of the run).
    labels
        ``model.obs`` columns to transfer.

    Returns
    -------
    Mapping
        Labels with confidences, the PCA and integrated coordinates.
    """
    from sklearn.neighbors import NearestNeighbors

    if counts.shape[0] != len(cells):
        raise CartCohortError(f"{counts.shape[0]} count rows for {len(cells)} cell ids")
    k = int(min(n_neighbors, model.n_obs))
    if k < 1:
        raise CartCohortError("the reference holds no cell")
    x_pca = project_pca(counts, model)
    ref = np.asarray(model.obsm["X_pca"], dtype=np.float32)
    index = NearestNeighbors(n_neighbors=k).fit(ref)
    dist, nn = index.kneighbors(x_pca)
    w = 1.0 / (dist + 1e-6)
    out = pd.DataFrame(index=pd.Index(list(map(str, cells)), name="cell"))
    for label in labels:
        call, share = knn_vote(nn, w, model.obs[label])
        out[label] = call
        out[f"{label}_confidence"] = share
    out["mapping_distance"] = dist.mean(axis=1)
    emb = np.asarray(model.obsm["X_integrated"], dtype=np.float64)
    x_int = np.einsum("ck,ckd->cd", w / w.sum(axis=1, keepdims=True), emb[nn])
    return Mapping(labels=out, x_pca=x_pca, x_integrated=x_int.astype(np.float32),
                   neighbours=nn, weights=w)
