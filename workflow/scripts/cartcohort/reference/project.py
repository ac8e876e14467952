"""Placing new cells in a frozen reference (:mod:`.model`).

Mapping: ``scanpy.tl.ingest``-style projection plus the cohort's batch correction. The
new library is log-normalised like the cohort, its HVGs are scaled with the cohort's
means and SDs and projected on the cohort's PCA loadings. Its labels are voted by its
``k`` nearest cohort cells in that PCA space (weights ``1 / (distance + eps)``, the
winning share being the label's confidence).

Its integrated coordinates carry the cohort's batch correction (:func:`corrected_embedding`):
each new cell takes the correction (integrated minus PCA coordinates) of its ``k``
nearest reference cells *of its own batch* in the uncorrected PCA, as the integration
moved them; a batch the reference does not hold takes that of its nearest cells of
any batch, and the scorecard says so. Why: the cohort's state calls smooth each cell's
expression over its neighbours in the integrated space (:mod:`.states`); neighbours
looked up in the uncorrected PCA are other cells (leaving each demo product out, the
calls then agree with the in-cohort ones for 0.79-0.87 of cells; with the carried
correction 0.97-0.99, ``tools/lopo.py``). For an integration whose embedding is not in
the PCA's basis (scVI, scanorama, bbknn), the corrected coordinates are the neighbours'
integrated coordinates, weighted.

Why not symphony through the frozen harmony model: symphony only applies to harmony,
while integrate.use may be any method; and it would correct the new library as a batch
of its own from its own cells, whose biology is what is being measured (a symphony-style
per-cluster offset fitted on each left-out demo product gave 0.89-0.92). The carried
correction keeps the reference fixed and fits nothing on the new library.
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
        Cells x dimensions: integrated coordinates (:func:`corrected_embedding`).
    neighbours
        Cells x k: indices of each cell's nearest reference cells.
    weights
        Cells x k: their vote weights.
    batch_matched
        Whether the library's batch is one of the reference's (its correction carried
        from that batch's cells, :func:`corrected_embedding`).
    """

    labels: pd.DataFrame
    x_pca: np.ndarray
    x_integrated: np.ndarray
    neighbours: np.ndarray
    weights: np.ndarray
    batch_matched: bool = True


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


def corrected_embedding(
    x_pca: np.ndarray, *, model: ad.AnnData, batch: str | None, n_neighbors: int
) -> tuple[np.ndarray, bool]:
    """Integrated coordinates of new cells: the cohort's batch correction carried from
    their nearest reference cells of the same batch in the uncorrected PCA.

    Parameters
    ----------
    x_pca
        New cells x PCs (:func:`project_pca`).
    model
        The reference (``obsm`` ``X_pca``, ``X_integrated``; ``obs['batch']``).
    batch
        The new library's batch (``batch`` of its sample sheet); ``None`` or a batch the
        reference lacks: the nearest reference cells of any batch.
    n_neighbors
        Reference cells averaged per new cell.

    Returns
    -------
    (numpy.ndarray, bool)
        Cells x dimensions (float32): ``x_pca + weighted mean(X_integrated - X_pca)`` of
        the neighbours when the embedding is in the PCA's basis (harmony, none), else the
        neighbours' weighted ``X_integrated``; and whether the batch was matched.
    """
    from sklearn.neighbors import NearestNeighbors

    ref_pca = np.asarray(model.obsm["X_pca"], dtype=np.float64)
    ref_int = np.asarray(model.obsm["X_integrated"], dtype=np.float64)
    ref_batch = (model.obs["batch"].astype(str).to_numpy() if "batch" in model.obs
                 else np.full(model.n_obs, ""))
    matched = batch is not None and bool((ref_batch == str(batch)).any())
    pool = ref_batch == str(batch) if matched else np.ones(model.n_obs, dtype=bool)
    k = int(min(n_neighbors, pool.sum()))
    dist, nn = NearestNeighbors(n_neighbors=k).fit(ref_pca[pool]).kneighbors(x_pca)
    w = 1.0 / (dist + 1e-6)
    w /= w.sum(axis=1, keepdims=True)
    method = str(model.uns.get("integration", {}).get("method", ""))
    if method in ("harmony", "none") and ref_int.shape[1] <= ref_pca.shape[1]:
        d = ref_int.shape[1]
        delta = (ref_int - ref_pca[:, :d])[pool]
        out = np.asarray(x_pca, dtype=np.float64)[:, :d] + np.einsum("ck,ckd->cd", w, delta[nn])
    else:
        out = np.einsum("ck,ckd->cd", w, ref_int[pool][nn])
    return out.astype(np.float32), matched


def map_to_reference(
    counts: sp.spmatrix,
    *,
    model: ad.AnnData,
    cells: Sequence[str],
    batch: str | None = None,
    n_neighbors: int = 15,
    labels: Sequence[str] = TRANSFER_LABELS,
) -> Mapping:
    """Project new cells, transfer the reference's calls by a kNN vote and carry the
    cohort's batch correction to them.

    Parameters
    ----------
    counts
        Cells x reference genes, raw counts (:func:`align_counts`).
    model
        The reference (:func:`~.model.build_reference`).
    cells
        Ids of the new cells (rows of ``counts``).
    batch
        The new library's batch (:func:`corrected_embedding`).
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
    x_int, matched = corrected_embedding(x_pca, model=model, batch=batch, n_neighbors=k)
    return Mapping(labels=out, x_pca=x_pca, x_integrated=x_int, neighbours=nn, weights=w,
                   batch_matched=matched)


def joint_graph(
    x_integrated: np.ndarray, *, model: ad.AnnData, n_neighbors: int, seed: int = 0
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The new cells' rows of the kNN graph of reference and new cells together in the
    integrated space, built as the cohort's (:func:`cartcohort.tl.integrate.graph.knn_graph`:
    scanpy connectivities).

    Returns
    -------
    (scipy.sparse.csr_matrix, scipy.sparse.csr_matrix)
        New cells x reference cells and new cells x new cells (no self loops).
    """
    from ..tl.integrate.graph import knn_graph

    emb = np.vstack([np.asarray(model.obsm["X_integrated"], dtype=np.float32),
                     np.asarray(x_integrated, dtype=np.float32)])
    tmp = ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(len(emb)).astype(str)))
    tmp.obsm["X_integrated"] = emb
    knn_graph(tmp, n_neighbors=int(min(n_neighbors, len(emb) - 1)), seed=seed)
    g = sp.csr_matrix(tmp.obsp["connectivities"], dtype=np.float64)
    g.setdiag(0)
    g.eliminate_zeros()
    n = model.n_obs
    return g[n:, :n].tocsr(), g[n:, n:].tocsr()
