"""The kNN graph of an embedding and its Leiden clusterings.

The graph is exact (brute force) up to :data:`EXACT_KNN_MAX_CELLS` cells and an
approximate, seeded pynndescent graph above; a method that corrects the graph
(:attr:`Method.corrects_graph`, e.g. bbknn) builds its own instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .registry import EXACT_KNN_MAX_CELLS

logger = logging.getLogger(__name__)


def leiden_key(resolution: float) -> str:
    """``obs`` column of the Leiden clustering at ``resolution`` (``leiden_r0.5``)."""
    return f"leiden_r{resolution}"


@dataclass(frozen=True)
class EmbeddingResult:
    """kNN graph and Leiden clusterings of one embedding.

    Attributes
    ----------
    connectivities, distances
        Cells x cells graph (CSR), as scanpy's ``obsp``.
    clusters
        One categorical column per Leiden resolution (:func:`leiden_key`), indexed
        by cell id; categories in natural order ("2" before "10").
    neighbors_params
        How the graph was built: ``method`` (``exact_knn``, ``pynndescent`` or the
        graph-correcting method's name) and its neighbour counts.
    """

    connectivities: sp.csr_matrix
    distances: sp.csr_matrix
    clusters: pd.DataFrame
    neighbors_params: dict


def knn_graph(
    tmp: ad.AnnData,
    *,
    n_neighbors: int,
    seed: int = 0,
    exact_knn_max_cells: int = EXACT_KNN_MAX_CELLS,
) -> dict:
    """scanpy neighbours of ``tmp.obsm['X_integrated']``, written into ``tmp``: exact
    up to ``exact_knn_max_cells`` cells, else approximate (pynndescent, seeded).

    Returns
    -------
    dict
        ``{"method": "exact_knn" | "pynndescent", "n_neighbors": n_neighbors}``.
    """
    import scanpy as sc

    if tmp.n_obs <= exact_knn_max_cells:
        # exact kNN (sklearn, brute force): deterministic, independent of threads
        sc.pp.neighbors(tmp, n_neighbors=n_neighbors, use_rep="X_integrated",
                        transformer="sklearn", random_state=seed)
        return {"method": "exact_knn", "n_neighbors": n_neighbors}
    logger.info("%d cells > %d: approximate kNN (pynndescent, seeded)", tmp.n_obs,
                exact_knn_max_cells)
    sc.pp.neighbors(tmp, n_neighbors=n_neighbors, use_rep="X_integrated", random_state=seed)
    return {"method": "pynndescent", "n_neighbors": n_neighbors}


def _leiden(tmp: ad.AnnData, index: pd.Index, resolutions: Sequence[float],
            seed: int) -> pd.DataFrame:
    """Leiden (igraph flavour, seeded) of the graph of ``tmp`` at each resolution."""
    import scanpy as sc

    clusters = pd.DataFrame(index=index.copy())
    for res in resolutions:
        key = leiden_key(res)
        sc.tl.leiden(tmp, resolution=float(res), flavor="igraph", n_iterations=2,
                     directed=False, random_state=seed, key_added=key)
        values = tmp.obs[key].astype(str)
        cats = sorted(values.unique(), key=lambda v: (len(v), v))  # "2" before "10"
        clusters[key] = pd.Categorical(values.to_numpy(), categories=cats)
        logger.info("Leiden resolution %s: %d clusters", res, clusters[key].nunique())
    return clusters


def embed_and_cluster(
    x_integrated: np.ndarray,
    obs: pd.DataFrame,
    *,
    n_neighbors: int = 15,
    resolutions: Sequence[float] = (1.0,),
    seed: int = 0,
    graph: Callable[[ad.AnnData, int], dict] | None = None,
    exact_knn_max_cells: int = EXACT_KNN_MAX_CELLS,
) -> EmbeddingResult:
    """kNN graph (:func:`knn_graph`, or a method's own) and Leiden clusterings.

    Parameters
    ----------
    x_integrated
        Cells x dimensions embedding the graph is built on.
    obs
        Cell table (index = cell ids).
    n_neighbors
        Neighbours per cell (capped at the number of cells - 1).
    resolutions
        Leiden resolutions; one ``obs`` column per resolution (:func:`leiden_key`).
    seed
        Random state of the approximate kNN graph and of Leiden.
    graph
        Builds the graph instead of :func:`knn_graph`: called with the cells (the
        embedding in ``obsm['X_integrated']``) and the capped ``n_neighbors``, writes
        ``obsp`` and returns the ``neighbors_params`` (a graph-correcting method's
        :attr:`Method.graph` with its batches bound).
    exact_knn_max_cells
        Up to this many cells the kNN graph is exact (brute force); above, scanpy's
        approximate pynndescent graph (seeded) is used to bound the run time.

    Returns
    -------
    EmbeddingResult
        The graph, the clusterings and how the graph was built.
    """
    tmp = ad.AnnData(obs=pd.DataFrame(index=obs.index.copy()))
    tmp.obsm["X_integrated"] = np.asarray(x_integrated, dtype=np.float32)
    k = int(min(n_neighbors, tmp.n_obs - 1))
    if graph is not None:
        params = graph(tmp, k)
    else:
        params = knn_graph(tmp, n_neighbors=k, seed=seed,
                           exact_knn_max_cells=exact_knn_max_cells)
    clusters = _leiden(tmp, obs.index, resolutions, seed)
    return EmbeddingResult(
        connectivities=sp.csr_matrix(tmp.obsp["connectivities"]),
        distances=sp.csr_matrix(tmp.obsp["distances"]),
        clusters=clusters,
        neighbors_params=params,
    )
