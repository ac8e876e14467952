"""Evidence pooling over the kNN graph and over the cells of a TCR clone.

Neighbourhood pooling overcomes dropout by adding the per-cell likelihoods of the kNN
neighbours (:func:`pool_neighbour_evidence`). How much a neighbour's evidence counts is
learned, not assumed: ``rho`` = chance-corrected agreement of confident cells with their
confident neighbours (Cohen's kappa over graph edges). Neighbour ``j`` contributes
``w_ij * log(rho * P_j(k) / pi_k + 1 - rho)`` to class ``k`` of cell ``i`` (``w`` =
connectivities). With ``rho = 0`` (neighbourhoods that do not share the class) only the
cell's own counts are used.

All cells of a TCR clone share lineage and CAR status: the clone posterior is the prior
times the product of the members' (clipped) likelihood ratios (:func:`pool_by_clone`).
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ...errors import CartCohortError
from ._utils import clone_codes, normalise_log

logger = logging.getLogger(__name__)

#: Per-cell log-likelihood ratios are clipped to +-this many nats before clone pooling,
#: so that one odd cell (a doublet, a mis-assigned barcode) cannot decide a clone.
CLONE_CLIP = 10.0
#: Cells whose own posterior reaches this are "confident" when estimating rho.
CONFIDENT = 0.9
#: Pseudo-cells of the library prior in each kNN neighbourhood (:func:`local_class_prior`).
LOCAL_PRIOR_STRENGTH = 5.0
#: EM iterations of :func:`local_class_prior`.
LOCAL_PRIOR_ITER = 50


def neighbour_graph(adata: ad.AnnData, *, key: str = "connectivities") -> sparse.csr_matrix:
    """The kNN graph of the integrated object, without self loops.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``obsp[key]`` as float64 with a zero diagonal.

    Raises
    ------
    CartCohortError
        When ``obsp[key]`` is missing or has the wrong shape.
    """
    if key not in adata.obsp:
        raise CartCohortError(
            f"the integrated AnnData has no obsp['{key}'] (kNN graph); annotation pools "
            "evidence over it. Fix: re-run rule integrate (it builds the neighbours)")
    g = sparse.csr_matrix(adata.obsp[key], dtype=np.float64)
    if g.shape != (adata.n_obs, adata.n_obs):
        raise CartCohortError(f"obsp['{key}'] has shape {g.shape}, expected {(adata.n_obs,) * 2}")
    g.setdiag(0)
    g.eliminate_zeros()
    return g


def library_graph(adata: ad.AnnData, *, n_neighbors: int, seed: int = 0,
                  key: str = "X_integrated", library_key: str = "sample") -> sparse.csr_matrix:
    """kNN graph of each library's cells among themselves (block diagonal, no self loops).

    The per-sample calls that pool neighbours' evidence (lineage, checkpoint receptors)
    use it, so that a sample's calls come from its own cells: pooling over the cohort
    graph, whose neighbours are mostly other libraries' cells, couples the samples that
    the association treats as independent units, and a new product scored against a
    frozen reference (which has only its own cells) would be called differently from the
    same product in the cohort. Each block is
    :func:`~cartcohort.tl.integrate.graph.embed_and_cluster`'s graph of that library's
    ``obsm[key]``, as a new product's.

    Returns
    -------
    scipy.sparse.csr_matrix
        Cells x cells connectivities, float64, zero across libraries and on the diagonal.

    Raises
    ------
    CartCohortError
        When ``obsm[key]`` or ``obs[library_key]`` is missing.
    """
    from ..integrate.graph import embed_and_cluster

    if key not in adata.obsm:
        raise CartCohortError(f"the integrated AnnData has no obsm['{key}']; the per-library "
                              "graphs are built on it. Fix: re-run rule integrate")
    if library_key not in adata.obs:
        raise CartCohortError(f"the integrated AnnData has no obs['{library_key}'] column. "
                              "Fix: re-run rules merge_samples and integrate")
    x = np.asarray(adata.obsm[key], dtype=np.float32)
    # positions of each library's cells in one pass (not a scan of every cell per library)
    library = adata.obs[library_key].astype(str).to_numpy()
    blocks = pd.Series(np.arange(len(library))).groupby(library, sort=False).indices
    rows, cols, vals = [], [], []
    for idx in blocks.values():
        if len(idx) < 3:  # scanpy's kNN needs 2 neighbours; nothing to pool with fewer
            continue
        emb = embed_and_cluster(x[idx], pd.DataFrame(index=adata.obs_names[idx]),
                                n_neighbors=int(n_neighbors), resolutions=(), seed=int(seed))
        c = emb.connectivities.tocoo()
        rows.append(idx[c.row])
        cols.append(idx[c.col])
        vals.append(c.data.astype(np.float64))
    n = adata.n_obs
    if not rows:
        return sparse.csr_matrix((n, n), dtype=np.float64)
    g = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(n, n))
    g.setdiag(0)
    g.eliminate_zeros()
    return g


def smoothing_operator(graph: sparse.spmatrix, *, smoothing: float) -> sparse.csr_matrix:
    """Lazy random-walk operator ``(1 - s) I + s D^-1 G`` (rows sum to 1).

    Parameters
    ----------
    graph
        Symmetric kNN weights without self loops.
    smoothing
        Weight ``s`` in [0, 1) of the neighbours; cells without neighbours keep
        their own value.

    Returns
    -------
    scipy.sparse.csr_matrix
        The ``(n_cells, n_cells)`` operator.
    """
    if not 0.0 <= smoothing < 1.0:
        raise CartCohortError(f"annotate.smoothing must be in [0, 1), got {smoothing}")
    g = sparse.csr_matrix(graph, dtype=np.float64)
    deg = np.asarray(g.sum(axis=1)).ravel()
    inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
    s = np.where(deg > 0, smoothing, 0.0)
    walk = sparse.diags(inv * s) @ g
    return (sparse.diags(1.0 - s) + walk).tocsr()


def neighbour_agreement(posterior: np.ndarray, *, graph: sparse.spmatrix,
                        confident: float = CONFIDENT) -> float:
    """Chance-corrected agreement (kappa) of confident cells with confident neighbours.

    Returns ``rho`` in [0, 1]: the probability that a neighbour shares the
    cell's class beyond chance. 0 when fewer than 20 confident edges exist.
    """
    call = posterior.argmax(axis=1)
    conf = posterior.max(axis=1) >= confident
    g = sparse.triu(sparse.csr_matrix(graph), k=1).tocoo()
    keep = conf[g.row] & conf[g.col]
    if keep.sum() < 20:
        return 0.0
    a, b = call[g.row[keep]], call[g.col[keep]]
    observed = float(np.mean(a == b))
    freq = np.bincount(np.concatenate([a, b]), minlength=posterior.shape[1]) / (2 * keep.sum())
    expected = float(np.sum(freq**2))
    if expected >= 1.0 - 1e-9:
        return 1.0 if observed >= 1.0 - 1e-9 else 0.0
    return float(np.clip((observed - expected) / (1.0 - expected), 0.0, 1.0))


def pool_neighbour_evidence(
    log_lik: np.ndarray,
    *,
    prior: np.ndarray,
    graph: sparse.spmatrix,
    rho: float | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Add the kNN neighbours' evidence to each cell's own likelihood.

    Parameters
    ----------
    log_lik
        ``(n_cells, n_classes)`` own log-likelihoods.
    prior
        Class priors.
    graph
        kNN weights without self loops (``obsp['connectivities']``).
    rho
        Probability that a neighbour shares the cell's class; estimated with
        :func:`neighbour_agreement` when None.

    Returns
    -------
    (posterior, log_evidence, rho)
        Posterior with neighbours, the pooled log-evidence (own + neighbours,
        without the prior) and the rho used.
    """
    logprior = np.log(prior)[None, :]
    own = normalise_log(log_lik + logprior)
    if rho is None:
        rho = neighbour_agreement(own, graph=graph)
    if rho <= 0:
        return own, log_lik.copy(), 0.0
    term = np.log(rho * own / np.asarray(prior)[None, :] + (1.0 - rho))
    g = sparse.csr_matrix(graph)
    evidence = log_lik + np.asarray(g @ term)
    return normalise_log(evidence + logprior), evidence, float(rho)


def local_class_prior(
    log_lik: np.ndarray,
    *,
    base_prior: np.ndarray,
    graph: sparse.spmatrix,
    strength: float = LOCAL_PRIOR_STRENGTH,
    n_iter: int = LOCAL_PRIOR_ITER,
    chunk: int = 100_000,
    binary: bool = True,
) -> np.ndarray:
    """Per-cell class prior: the class mixture fitted to the cell's kNN neighbours.

    For cell ``i`` the class proportions ``pi_i`` of its neighbourhood are estimated by EM
    from the neighbours' own likelihoods (each neighbour ``j`` with weight ``w_ij``), with
    ``base_prior`` as a Dirichlet prior worth ``strength`` cells::

        r_ij = pi_i * L_j / sum(pi_i * L_j)
        pi_i <- (strength * base_i + sum_j w_ij r_ij) / (strength + sum_j w_ij)

    Unlike adding the neighbours' log-likelihoods to the cell's own, a neighbourhood
    whose cells consistently lack a class's markers raises the class that explains that
    lack (e.g. DN): zeros count as what they are under each class, never as evidence of
    the neighbours' majority class.

    Parameters
    ----------
    log_lik
        ``(n_cells, n_classes)`` own log-likelihoods.
    base_prior
        ``(n_cells, n_classes)`` (e.g. the cell's library prior) or ``(n_classes,)``.
    graph
        kNN weights without self loops.
    strength
        Pseudo-cells of ``base_prior`` in each neighbourhood.
    n_iter
        EM iterations (stops earlier when no prior moves by 1e-4).
    chunk
        Cells per block (bounds the memory of the edge arrays).
    binary
        Count each neighbour as one cell (``w_ij = 1``) rather than by its connectivity
        (UMAP connectivities sum to a few units per cell whatever the number of
        neighbours, which would let ``strength`` outweigh them).

    Returns
    -------
    numpy.ndarray
        ``(n_cells, n_classes)`` priors, rows summing to 1.
    """
    n, k = log_lik.shape
    base = np.broadcast_to(np.asarray(base_prior, dtype=float), (n, k))
    lik = np.exp(log_lik - log_lik.max(axis=1, keepdims=True))
    g = sparse.csr_matrix(graph, dtype=np.float64)
    pi = np.array(base, dtype=float)
    for _ in range(n_iter):
        new = np.empty_like(pi)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            block = g[a:b].tocoo()
            rows, cols = block.row, block.col
            w = np.ones(len(rows)) if binary else block.data
            r = pi[a + rows] * lik[cols]
            r *= (w / np.maximum(r.sum(axis=1), 1e-300))[:, None]
            acc = np.column_stack([np.bincount(rows, weights=r[:, c], minlength=b - a)
                                   for c in range(k)])
            deg = np.bincount(rows, weights=w, minlength=b - a)
            new[a:b] = (strength * base[a:b] + acc) / (strength + deg)[:, None]
        delta = float(np.abs(new - pi).max()) if n else 0.0
        pi = new
        if delta < 1e-4:
            break
    return pi / pi.sum(axis=1, keepdims=True)


def pool_by_clone(
    log_evidence: np.ndarray,
    *,
    clone_id: pd.Series | np.ndarray,
    prior: np.ndarray,
    clip: float = CLONE_CLIP,
    min_members: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior of a class shared by all members of a clone.

    Each member contributes its log-evidence relative to its best class,
    clipped at ``-clip``; the clone posterior is the prior times the product.

    Parameters
    ----------
    log_evidence
        ``(n_cells, n_classes)`` per-cell log-likelihoods.
    clone_id
        Clone of each cell (missing: not pooled).
    prior
        ``(n_classes,)`` class prior of every clone, or ``(n_cells, n_classes)`` per-cell
        priors (a clone's prior is then the mean of its members').
    clip, min_members
        Clipping of each member's relative evidence; smallest clone pooled.

    Returns
    -------
    (posterior, pooled)
        ``(n_cells, n_classes)`` clone posterior for every cell of a clone with
        at least ``min_members`` cells here (NaN elsewhere), and a boolean mask
        of those cells.
    """
    codes = clone_codes(clone_id)
    n, k = log_evidence.shape
    post = np.full((n, k), np.nan)
    has = codes >= 0
    if not has.any():
        return post, np.zeros(n, dtype=bool)
    rel = log_evidence - log_evidence.max(axis=1, keepdims=True)
    rel = np.maximum(rel, -clip)
    n_clones = codes.max() + 1
    sums = np.zeros((n_clones, k))
    np.add.at(sums, codes[has], rel[has])
    size = np.bincount(codes[has], minlength=n_clones)
    prior = np.asarray(prior, dtype=float)
    if prior.ndim == 2:
        mean_prior = np.zeros((n_clones, k))
        np.add.at(mean_prior, codes[has], prior[has])
        log_prior = np.log(np.maximum(mean_prior / np.maximum(size, 1)[:, None], 1e-12))
    else:
        log_prior = np.log(prior)[None, :]
    clone_post = normalise_log(sums + log_prior)
    pooled = has & (size[np.where(has, codes, 0)] >= min_members)
    post[pooled] = clone_post[codes[pooled]]
    return post, pooled


def cell_clones(obs_names: pd.Index, airr: ad.AnnData | None) -> tuple[pd.Series, pd.Series]:
    """Clone id and clone size of each cell from the AIRR data.

    Parameters
    ----------
    obs_names
        The cells (``gex.obs_names``).
    airr
        scirpy AIRR AnnData with ``obs['clone_id']`` (and ``clone_size``), or None.

    Returns
    -------
    (clone_id, clone_size)
        Series on ``obs_names``: the clone id (NaN for cells without one) and the
        clone size (NaN where unknown).
    """
    clone = pd.Series(np.nan, index=obs_names, dtype=object)
    clone_size = pd.Series(np.nan, index=obs_names, dtype=float)
    if airr is not None and "clone_id" in airr.obs:
        a = airr.obs.reindex(obs_names)
        ids = a["clone_id"].astype(object)
        ids = ids.where(ids.notna() & (ids.astype(str) != "nan") & (ids.astype(str) != ""))
        clone = ids
        if "clone_size" in a:
            clone_size = pd.to_numeric(a["clone_size"], errors="coerce")
        n_tcr = int(clone.notna().sum())
        logger.info("%d of %d cells have a clone id (%d clones)", n_tcr, len(obs_names),
                    clone.nunique())
    else:
        logger.warning("no clone ids (no AIRR data): clone-aware calls are skipped")
    return clone, clone_size
