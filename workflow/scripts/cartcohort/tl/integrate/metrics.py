"""Integration metrics, scib-style and vectorised: batch mixing (:func:`ilisi`,
:func:`batch_asw`, :func:`graph_connectivity`) and conservation of a biological label
(:func:`clisi`, :func:`label_asw`), gathered by :func:`integration_metrics`. All are
"higher is better" and lie in [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...errors import CartCohortError

logger = logging.getLogger(__name__)


def knn(embedding: np.ndarray, *, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every cell (itself excluded), euclidean.

    Returns
    -------
    (indices, distances)
        Both cells x k; neighbours sorted by distance.
    """
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(embedding, dtype=np.float64)
    n = x.shape[0]
    k = int(min(k, n - 1))
    if k < 1:
        raise CartCohortError("need at least 2 cells for a kNN graph")
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", n_jobs=1).fit(x)
    dist, idx = nn.kneighbors(x)
    # drop each cell itself (not necessarily in column 0 when points coincide)
    is_self = idx == np.arange(n)[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    keep = ~is_self
    return idx[keep].reshape(n, k), dist[keep].reshape(n, k)


def knn_from_graph(distances: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists of a sparse distance graph, padded (index -1, distance inf).

    Used for graph-output methods (bbknn) where no corrected embedding exists.
    """
    g = sp.csr_matrix(distances)
    g.setdiag(0)
    g.eliminate_zeros()
    n = g.shape[0]
    deg = np.diff(g.indptr)
    k = int(deg.max()) if n else 0
    idx = np.full((n, k), -1, dtype=np.int64)
    dist = np.full((n, k), np.inf)
    rows = np.repeat(np.arange(n), deg)
    cols = np.arange(g.nnz) - np.repeat(g.indptr[:-1], deg)
    idx[rows, cols] = g.indices
    dist[rows, cols] = g.data
    return idx, dist


def lisi(
    indices: np.ndarray,
    distances: np.ndarray,
    labels: Sequence | np.ndarray,
    *,
    perplexity: float = 30.0,
    tol: float = 1e-5,
    max_iter: int = 50,
) -> np.ndarray:
    """Local inverse Simpson's index of every cell (Korsunsky et al. 2019).

    Neighbour weights are a Gaussian kernel on the distances whose bandwidth is
    calibrated per cell to the given perplexity (binary search, all cells at once);
    LISI = 1 / sum over categories of (weight of neighbours in the category)^2, i.e.
    the effective number of categories in the neighbourhood (1 to n categories).

    Parameters
    ----------
    indices, distances
        Cells x k neighbour lists (:func:`knn` or :func:`knn_from_graph`; -1/inf pad).
    labels
        Category of every cell.
    perplexity
        Effective neighbourhood size (should be <= k / 3).

    Returns
    -------
    numpy.ndarray
        LISI per cell (NaN for a cell without neighbours).
    """
    codes, uniques = pd.factorize(pd.Series(np.asarray(labels)).astype(str), sort=True)
    n_cat = len(uniques)
    idx = np.asarray(indices)
    d = np.asarray(distances, dtype=np.float64)
    valid = (idx >= 0) & np.isfinite(d)
    n, k = d.shape
    # shift by each row's smallest distance: exact (normalised weights and entropy are
    # unchanged) and avoids exp underflow for far-away neighbourhoods
    dmin = np.where(valid, d, np.inf).min(axis=1, initial=np.inf)
    dmin = np.where(np.isfinite(dmin), dmin, 0.0)
    ds = np.where(valid, d - dmin[:, None], 0.0)
    log_u = np.log(perplexity)

    def entropy(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.where(valid, np.exp(-ds * beta[:, None]), 0.0)
        sp_ = p.sum(axis=1)
        safe = np.where(sp_ > 0, sp_, 1.0)
        h = np.log(safe) + beta * (ds * p).sum(axis=1) / safe
        return np.where(sp_ > 0, h, 0.0), p / safe[:, None]

    beta = np.ones(n)
    bmin = np.full(n, -np.inf)
    bmax = np.full(n, np.inf)
    h, p = entropy(beta)
    for _ in range(max_iter):
        diff = h - log_u
        active = np.abs(diff) > tol
        if not active.any():
            break
        up = active & (diff > 0)
        down = active & (diff <= 0)
        bmin = np.where(up, beta, bmin)
        bmax = np.where(down, beta, bmax)
        beta = np.where(
            up, np.where(np.isinf(bmax), beta * 2, (beta + bmax) / 2),
            np.where(down, np.where(np.isinf(bmin), beta / 2, (beta + bmin) / 2), beta),
        )
        h, p = entropy(beta)
    neigh_codes = np.where(valid, codes[np.where(idx >= 0, idx, 0)], 0)
    flat = (np.arange(n)[:, None] * n_cat + neigh_codes).ravel()
    mass = np.bincount(flat, weights=np.where(valid, p, 0.0).ravel(),
                       minlength=n * n_cat).reshape(n, n_cat)
    simpson = (mass**2).sum(axis=1)
    with np.errstate(divide="ignore"):
        out = np.where(simpson > 0, 1.0 / np.where(simpson > 0, simpson, 1.0), np.nan)
    return out


def ilisi(
    indices: np.ndarray, distances: np.ndarray, batches: Sequence, *, perplexity: float = 30.0
) -> float:
    """Batch mixing: (median iLISI - 1) / (n batches - 1), in [0, 1], 1 = fully mixed.

    With unequal batch sizes the best attainable value is below 1.
    """
    n_b = pd.Series(np.asarray(batches)).nunique()
    if n_b < 2:
        return float("nan")
    med = np.nanmedian(lisi(indices, distances, batches, perplexity=perplexity))
    return float((med - 1) / (n_b - 1))


def clisi(
    indices: np.ndarray, distances: np.ndarray, labels: Sequence, *, perplexity: float = 30.0
) -> float:
    """Label separation: (n labels - median cLISI) / (n labels - 1), 1 = pure neighbourhoods."""
    n_l = pd.Series(np.asarray(labels)).nunique()
    if n_l < 2:
        return float("nan")
    med = np.nanmedian(lisi(indices, distances, labels, perplexity=perplexity))
    return float((n_l - med) / (n_l - 1))


def silhouette_samples(
    x: np.ndarray, labels: Sequence, *, chunk_size: int = 1024
) -> np.ndarray:
    """Silhouette width of every cell (euclidean), computed in row chunks.

    s = (b - a) / max(a, b) with a the mean distance to the other cells of the own
    cluster and b the smallest mean distance to another cluster; 0 for cells of a
    singleton cluster (as scikit-learn).
    """
    x = np.asarray(x, dtype=np.float64)
    codes, uniques = pd.factorize(pd.Series(np.asarray(labels)).astype(str), sort=True)
    n, n_cat = x.shape[0], len(uniques)
    if n_cat < 2:
        raise CartCohortError("silhouette needs at least 2 distinct labels")
    onehot = sp.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, n_cat))
    sizes = np.bincount(codes, minlength=n_cat).astype(np.float64)
    sq = (x**2).sum(axis=1)
    out = np.empty(n)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        d2 = sq[start:stop, None] + sq[None, :] - 2 * x[start:stop] @ x.T
        d = np.sqrt(np.maximum(d2, 0.0))
        d[np.arange(stop - start), np.arange(start, stop)] = 0.0
        sums = np.asarray((onehot.T @ d.T).T)
        own = codes[start:stop]
        rows = np.arange(stop - start)
        own_n = sizes[own] - 1
        a = np.divide(sums[rows, own], own_n, out=np.zeros(stop - start), where=own_n > 0)
        means = sums / sizes[None, :]
        means[rows, own] = np.inf
        b = means.min(axis=1)
        denom = np.maximum(a, b)
        s = np.divide(b - a, denom, out=np.zeros(stop - start), where=denom > 0)
        s[own_n == 0] = 0.0
        out[start:stop] = s
    return out


def label_asw(x: np.ndarray, labels: Sequence) -> float:
    """Label (cell-state) separation: (mean silhouette of labels + 1) / 2, in [0, 1]."""
    return float((silhouette_samples(x, labels).mean() + 1) / 2)


def batch_asw(x: np.ndarray, batches: Sequence, labels: Sequence) -> float:
    """Batch mixing within labels (scib): mean over labels of mean(1 - |s_batch|).

    Within each label, the silhouette of the cells with their batch as cluster is
    computed; 1 - |s| is 1 when batches overlap and 0 when they are separated.
    Labels present in a single batch (or with one cell per batch) are skipped.
    """
    b = np.asarray(pd.Series(np.asarray(batches)).astype(str))
    lab = np.asarray(pd.Series(np.asarray(labels)).astype(str))
    x = np.asarray(x, dtype=np.float64)
    scores = []
    for value in np.unique(lab):
        sel = lab == value
        nb = len(np.unique(b[sel]))
        if nb < 2 or nb == sel.sum():
            continue
        s = silhouette_samples(x[sel], b[sel])
        scores.append(float(np.mean(1 - np.abs(s))))
    return float(np.mean(scores)) if scores else float("nan")


def graph_connectivity(graph: sp.spmatrix, labels: Sequence) -> float:
    """Mean over labels of the fraction of the label's cells in its largest connected
    component of the kNN graph restricted to that label (1 = every label connected)."""
    from scipy.sparse.csgraph import connected_components

    g = sp.csr_matrix(graph)
    lab = np.asarray(pd.Series(np.asarray(labels)).astype(str))
    fracs = []
    for value in np.unique(lab):
        sel = np.flatnonzero(lab == value)
        _, comp = connected_components(g[sel][:, sel], directed=True, connection="strong")
        fracs.append(np.bincount(comp).max() / sel.size)
    return float(np.mean(fracs))


METRIC_GROUPS = {
    "ilisi": "batch_correction",
    "batch_asw": "batch_correction",
    "graph_connectivity": "batch_correction",
    "clisi": "bio_conservation",
    "label_asw": "bio_conservation",
}


def _uniform(knn_lists: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists with every real neighbour at distance 1 (padding stays inf)."""
    idx, dist = knn_lists
    return idx, np.where(np.isfinite(dist), 1.0, np.inf)



def _neighbours(
    adata: ad.AnnData,
    x: np.ndarray | None,
    *,
    perplexity: float,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """LISI neighbour lists of the cells (or the ``keep`` subset) and the perplexity
    they allow: the corrected graph's neighbours weighted uniformly when ``x`` is
    ``None`` (graph output), else the exact 3 x perplexity neighbours in ``x``."""
    if x is None:
        # The corrected graph defines who is a neighbour; its stored distances are the
        # uncorrected PCA distances, which would weight same-batch neighbours up again,
        # so graph neighbours are weighted uniformly (scib's graph LISI idea).
        distances = adata.obsp["distances"]
        if keep is not None:
            distances = sp.csr_matrix(distances)[keep][:, keep]
        idx, dist = _uniform(knn_from_graph(distances))
        return idx, dist, min(perplexity, max(idx.shape[1] / 3, 1.0))
    perp = min(perplexity, max((x.shape[0] - 1) / 3, 1.0))
    idx, dist = knn(x, k=int(3 * perp))
    return idx, dist, perp


def _asw(x: np.ndarray | None, batches: np.ndarray, labels: np.ndarray, *,
         asw_max_cells: int, seed: int) -> dict[str, float]:
    """Batch and label ASW on a seeded subset of at most ``asw_max_cells`` cells
    (NaN without an embedding)."""
    if x is None:
        logger.info("graph-output method: ASW metrics not applicable (NA)")
        return {"batch_asw": float("nan"), "label_asw": float("nan")}
    n_l = x.shape[0]
    sel = np.arange(n_l)
    if n_l > asw_max_cells:
        rng = np.random.default_rng(seed)
        sel = np.sort(rng.choice(n_l, size=asw_max_cells, replace=False))
        logger.info("silhouettes on a random subset of %d of %d cells", sel.size, n_l)
    return {
        "batch_asw": batch_asw(x[sel], batches[sel], labels[sel]),
        "label_asw": label_asw(x[sel], labels[sel]) if len(
            np.unique(labels[sel])) > 1 else float("nan"),
    }


def _metrics_table(values: dict[str, float]) -> pd.DataFrame:
    """The five metrics with their aggregates, one row each."""
    batch = np.nanmean([values[m] for m, g in METRIC_GROUPS.items() if g == "batch_correction"])
    bio = np.nanmean([values[m] for m, g in METRIC_GROUPS.items() if g == "bio_conservation"])
    values["batch_correction"] = float(batch)
    values["bio_conservation"] = float(bio)
    values["overall"] = float(0.4 * batch + 0.6 * bio)
    order = ["ilisi", "batch_asw", "graph_connectivity", "clisi", "label_asw",
             "batch_correction", "bio_conservation", "overall"]
    return pd.DataFrame(
        {"metric": order, "value": [values[m] for m in order],
         "direction": ["higher_better"] * len(order)}
    )


def integration_metrics(
    adata: ad.AnnData,
    *,
    batch_key: str,
    label_key: str,
    use_rep: str = "X_integrated",
    perplexity: float = 30.0,
    asw_max_cells: int = 20000,
    seed: int = 0,
) -> pd.DataFrame:
    """Batch-mixing and label-conservation metrics of one integrated AnnData.

    Parameters
    ----------
    adata
        ``integrate/{method}.h5ad``: ``obsm[use_rep]``, ``obsp['connectivities']``
        (and ``obsp['distances']`` for graph-output methods).
    batch_key
        ``obs`` column with batches.
    label_key
        ``obs`` column with the biological label (cell state or a reference
        clustering) whose separation should be conserved. Cells with a missing
        label are left out of the label metrics (not of iLISI).
    use_rep
        Embedding the embedding metrics are computed on.
    perplexity
        LISI perplexity; k = 3 x perplexity neighbours (exact kNN on ``use_rep``).
    asw_max_cells
        Silhouettes use a random subset of this many cells (seeded) when larger.
    seed
        Seed of that subset.

    Returns
    -------
    pandas.DataFrame
        ``metric, value, direction`` for ``ilisi, batch_asw, graph_connectivity,
        clisi, label_asw`` and the aggregates ``batch_correction`` (mean of the first
        three), ``bio_conservation`` (mean of the last two) and ``overall``
        (0.4 x batch + 0.6 x bio, as scib). ASW metrics are NA for graph-output
        methods (bbknn leaves the embedding unchanged).
    """
    for key in (batch_key, label_key):
        if key not in adata.obs:
            raise CartCohortError(
                f"obs has no column '{key}' needed for integration metrics. Fix: set "
                "integrate.batch_key / integrate.label_key to an existing column"
            )
    batches = adata.obs[batch_key].astype(str).to_numpy()
    has_label = adata.obs[label_key].notna().to_numpy()
    if not has_label.any():
        raise CartCohortError(f"obs['{label_key}'] is missing for every cell")
    labels = adata.obs[label_key].astype(str).to_numpy()
    graph_output = adata.uns.get("integration", {}).get("output", "embedding") == "graph"
    x = None if graph_output else np.asarray(adata.obsm[use_rep], dtype=np.float64)
    idx, dist, perp = _neighbours(adata, x, perplexity=perplexity)
    values = {"ilisi": ilisi(idx, dist, batches, perplexity=perp)}
    graph = sp.csr_matrix(adata.obsp["connectivities"])
    batches_l = batches
    if not has_label.all():
        # label metrics on the labelled cells only (neighbours among them)
        logger.info("%d of %d cells have no '%s'; label metrics use the others",
                    int((~has_label).sum()), adata.n_obs, label_key)
        keep = np.flatnonzero(has_label)
        labels, batches_l = labels[keep], batches[keep]
        graph = graph[keep][:, keep]
        x = None if x is None else x[keep]
        idx, dist, perp = _neighbours(adata, x, perplexity=perplexity, keep=keep)
    values["clisi"] = clisi(idx, dist, labels, perplexity=perp)
    values["graph_connectivity"] = graph_connectivity(graph, labels)
    values.update(_asw(x, batches_l, labels, asw_max_cells=asw_max_cells, seed=seed))
    return _metrics_table(values)
