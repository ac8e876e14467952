"""One integration method on the prepared cohort: the corrected embedding
(:attr:`Method.run`), the kNN graph (plain, or the method's own for a
graph-correcting method) and, for the method used downstream, Leiden clusterings.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...errors import CartCohortError
from ...pp import stringify_obs
from .graph import EmbeddingResult, embed_and_cluster, leiden_key
from .read import read_prepared
from .registry import Method, get_method, method_batches

logger = logging.getLogger(__name__)

def integrate_embedding(
    x_pca: np.ndarray,
    obs: pd.DataFrame,
    *,
    method: str,
    batch_key: str,
    seed: int = 0,
    n_threads: int = 1,
    counts: sp.spmatrix | None = None,
    params: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Batch-corrected embedding of the cells.

    Parameters
    ----------
    x_pca
        Cells x PCs.
    obs
        Cell table with ``batch_key``.
    method
        A name in :data:`METHODS`; graph-correcting methods (bbknn) and ``none``
        return ``X_pca`` itself.
    batch_key
        ``obs`` column with the batch of each cell.
    seed
        Random seed.
    n_threads
        Threads for harmony.
    counts
        Raw counts of the HVGs (cells x HVGs); needed by methods with
        :attr:`Method.needs_counts` (scVI) only.
    params
        Method-specific keyword arguments (``integrate.<method>`` in the config), e.g.
        harmony ``theta``, ``lamb``, ``sigma``, ``nclust``, ``max_iter_harmony``.

    Returns
    -------
    numpy.ndarray
        Cells x dimensions, float32.
    """
    m = get_method(method)
    x_pca = np.asarray(x_pca, dtype=np.float32)
    batches = method_batches(obs, batch_key, m.name) if m.needs_batches else None
    params = dict(params or {})
    m.check_params(params)
    return m.run(x_pca, batches, seed=seed, n_threads=n_threads, counts=counts,
                 params=params)


def _check_prepared(prepared: ad.AnnData, m: Method, *, batch_key: str, embed: bool,
                    leiden_resolutions: Sequence[float]) -> None:
    """Fail before the expensive steps: settings, inputs, the method's package."""
    if embed and not leiden_resolutions:
        raise CartCohortError("integrate.leiden_resolutions is empty; give at least one")
    if "X_pca" not in prepared.obsm or "highly_variable" not in prepared.var:
        raise CartCohortError(
            "the prepared cohort has no obsm['X_pca'] / var['highly_variable']. Fix: "
            "re-run the merge_samples rule"
        )
    if m.needs_batches:
        method_batches(prepared.obs, batch_key, m.name)
        m.require()
    if m.needs_counts and "counts" not in prepared.layers:
        raise CartCohortError(
            f"method '{m.name}' needs layers['counts'] of the prepared cohort")


def _record(out: ad.AnnData, prepared: ad.AnnData, m: Method, emb: EmbeddingResult, *,
            batch_key: str, n_neighbors: int, leiden_resolutions: Sequence[float],
            embed: bool, seed: int, method_params: Mapping[str, Any] | None) -> None:
    """``uns['neighbors']``, ``uns['integration']`` (settings) and ``uns['pca']``."""
    out.uns["neighbors"] = {
        "connectivities_key": "connectivities",
        "distances_key": "distances",
        "params": {"use_rep": "X_integrated", **emb.neighbors_params},
    }
    batches = out.obs[batch_key].astype(str) if batch_key in out.obs else None
    pre = dict(prepared.uns.get("preprocessing", {}))
    out.uns["integration"] = {
        **pre,
        "method": m.name,
        "output": "graph" if m.corrects_graph else "embedding",
        "batch_key": batch_key,
        "n_batches": int(batches.nunique()) if batches is not None else 1,
        "n_neighbors": int(n_neighbors),
        "embedded": bool(embed),
        "leiden_resolutions": [float(r) for r in leiden_resolutions] if embed else [],
        "seed": int(seed),
        "method_params": json.dumps(dict(method_params or {}), sort_keys=True, default=str),
        "samples": sorted(out.obs["sample"].astype(str).unique())
        if "sample" in out.obs else [],
    }
    if "pca" in prepared.uns:
        out.uns["pca"] = dict(prepared.uns["pca"])


def integrate_prepared(
    prepared: ad.AnnData,
    *,
    method: str,
    batch_key: str = "batch",
    n_neighbors: int = 15,
    leiden_resolutions: Sequence[float] = (0.5, 1.0),
    embed: bool = True,
    seed: int = 0,
    n_threads: int = 1,
    method_params: Mapping[str, Any] | None = None,
) -> ad.AnnData:
    """Integrate one method on a prepared cohort: corrected embedding, kNN graph and,
    for the method used downstream, Leiden clusterings.

    Parameters
    ----------
    prepared
        Output of :func:`cartcohort.pp.prepare_cohort` (or :func:`read_prepared`):
        ``obs``, ``var`` with ``highly_variable``, ``obsm['X_pca']``;
        ``layers['counts']`` only for a method with :attr:`Method.needs_counts`.
    method
        A name in :data:`METHODS`.
    batch_key
        ``obs`` column with the batch to correct (``integrate.batch_key``).
    n_neighbors
        Neighbours of the kNN graph (``integrate.n_neighbors``).
    leiden_resolutions
        Leiden resolutions (``integrate.leiden_resolutions``); the first is ``leiden``.
    embed
        Compute the Leiden clusterings. Methods compared only by the metrics need
        the graph alone.
    seed
        Random seed of the method, the approximate kNN graph and Leiden.
    n_threads
        Threads for harmony.
    method_params
        Extra keyword arguments of the method (``integrate.<method>``).

    Returns
    -------
    AnnData
        ``integrate/{method}.h5ad`` (no expression matrix): ``obs`` (all load/QC
        columns, plus ``leiden_r{res}`` and ``leiden`` when ``embed``), ``var``,
        ``obsm`` ``X_pca``, ``X_integrated``, ``obsp`` graph, ``uns['integration']``.
    """
    m = get_method(method)
    leiden_resolutions = [float(r) for r in leiden_resolutions]
    _check_prepared(prepared, m, batch_key=batch_key, embed=embed,
                    leiden_resolutions=leiden_resolutions)
    counts = None
    if m.needs_counts:
        hv = prepared.var["highly_variable"].to_numpy(dtype=bool)
        counts = sp.csr_matrix(prepared.layers["counts"])[:, hv]
    out = ad.AnnData(obs=prepared.obs.copy(), var=prepared.var.copy())
    out.obsm["X_pca"] = np.asarray(prepared.obsm["X_pca"], dtype=np.float32)
    x_int = integrate_embedding(
        out.obsm["X_pca"], out.obs, method=method, batch_key=batch_key, seed=seed,
        n_threads=n_threads, counts=counts, params=method_params,
    )
    out.obsm["X_integrated"] = x_int
    graph = None
    if m.corrects_graph:
        def graph(tmp: ad.AnnData, k: int) -> dict:
            return m.graph(tmp, out.obs[batch_key], n_neighbors=k)
    emb = embed_and_cluster(x_int, out.obs, n_neighbors=n_neighbors,
                            resolutions=leiden_resolutions if embed else (), seed=seed,
                            graph=graph)
    out.obsp["connectivities"] = emb.connectivities
    out.obsp["distances"] = emb.distances
    for col in emb.clusters.columns:
        out.obs[col] = emb.clusters[col].array
    if embed:
        out.obs["leiden"] = emb.clusters[leiden_key(leiden_resolutions[0])].array
    _record(out, prepared, m, emb, batch_key=batch_key, n_neighbors=n_neighbors,
            leiden_resolutions=leiden_resolutions, embed=embed, seed=seed,
            method_params=method_params)
    stringify_obs(out)
    return out


def integrate_method(
    merged_path: str | os.PathLike,
    *,
    method: str,
    batch_key: str,
    n_neighbors: int,
    leiden_resolutions: Sequence[float],
    embed: bool,
    seed: int,
    n_threads: int,
    method_params: Mapping[str, Any],
) -> ad.AnnData:
    """Step of rule ``integrate``: :func:`read_prepared` (with the counts when the
    method needs them) then :func:`integrate_prepared`.

    Parameters
    ----------
    merged_path
        ``integrate/merged.h5ad`` (rule ``merge_samples``).
    method, batch_key, n_neighbors, leiden_resolutions, embed, seed, n_threads, \
method_params
        See :func:`integrate_prepared`.

    Returns
    -------
    AnnData
        ``integrate/{method}.h5ad`` (see :func:`integrate_prepared`).
    """
    prepared = read_prepared(merged_path, counts=get_method(method).needs_counts)
    logger.info("%s: %d cells, %d PCs", method, prepared.n_obs, prepared.obsm["X_pca"].shape[1])
    return integrate_prepared(
        prepared, method=method, batch_key=batch_key, n_neighbors=int(n_neighbors),
        leiden_resolutions=leiden_resolutions, embed=bool(embed), seed=int(seed),
        n_threads=int(n_threads), method_params=method_params,
    )
