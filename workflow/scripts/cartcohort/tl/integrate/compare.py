"""Every method scored on the same cells against the same biological label, so that
methods can be compared with ``none``, in two passes:

1. rule ``integration_metrics`` (:func:`score_methods`), before annotation: the label is
   ``integrate.label_key``, by default the Leiden clusters of the *unintegrated* PCA,
   which favours ``none`` by construction (its own clusters, batch-driven splits
   included);
2. rule ``integration_metrics_states`` (:func:`score_final_states`), after annotation:
   the label is the final cell state of ``cells.tsv.gz``, and the table
   ``integration_metrics.tsv`` leads with this pass and keeps the first beside it.

Annotation depends on the method chosen (``integrate.use``), so the second pass is a
rule of its own after annotation; nothing upstream of it reads its table (no cycle).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd

from ... import tables
from ...errors import CartCohortError
from ...vocab import UNASSIGNED
from .graph import embed_and_cluster, leiden_key
from .metrics import integration_metrics
from .read import read_integration

logger = logging.getLogger(__name__)


def subsample_for_metrics(
    adata: ad.AnnData,
    *,
    max_cells: int,
    n_neighbors: int = 15,
    seed: int = 0,
) -> ad.AnnData:
    """A seeded random subset of the cells, with its own kNN graph, on which the
    integration metrics of a large cohort are computed (exact 3 x perplexity
    neighbours and silhouettes are quadratic in the number of cells).

    Parameters
    ----------
    adata
        ``integrate/{method}.h5ad`` (:func:`read_integration`).
    max_cells
        Subset size; ``adata`` is returned unchanged when it has no more cells.
    n_neighbors
        Neighbours of the subset's graph (``integrate.n_neighbors``).
    seed
        Seed of the subset. The subset depends only on the cell ids and the seed,
        so every method is scored on the same cells.

    Returns
    -------
    AnnData
        The subset. Embedding methods get a kNN graph rebuilt on the subset's
        ``X_integrated`` (graph connectivity then measures the subset's graph, as
        scib does on subsampled data); graph-output methods (bbknn) keep the
        induced subgraph of their corrected graph.
    """
    n = adata.n_obs
    if n <= max_cells:
        return adata
    order = np.argsort(adata.obs_names.to_numpy(dtype=str), kind="mergesort")
    rng = np.random.default_rng(seed)
    sel = np.sort(order[rng.choice(n, size=int(max_cells), replace=False)])
    sub = adata[sel].copy()
    logger.info("metrics on a random subset of %d of %d cells", sub.n_obs, n)
    if sub.uns.get("integration", {}).get("output", "embedding") != "graph":
        emb = embed_and_cluster(
            np.asarray(sub.obsm["X_integrated"]), sub.obs, n_neighbors=n_neighbors,
            resolutions=(), seed=seed,
        )
        sub.obsp["connectivities"] = emb.connectivities
        sub.obsp["distances"] = emb.distances
    return sub


def reference_labels(
    adata: ad.AnnData,
    *,
    use_rep: str = "X_pca",
    n_neighbors: int = 15,
    resolution: float = 0.5,
    seed: int = 0,
) -> pd.Series:
    """Leiden clusters of the unintegrated embedding, the default label for
    bio-conservation metrics before cell states are annotated.

    Every method's file carries the same ``X_pca`` (HVGs and PCA precede
    integration), so this label is identical for all methods. It favours ``none``
    (its own clusters, including any batch-driven split), so a method that keeps
    cLISI / label ASW close to ``none`` while improving mixing conserved biology.

    Returns
    -------
    pandas.Series
        Categorical cluster of every cell of ``adata``, named ``leiden_unintegrated``.
    """
    emb = embed_and_cluster(
        np.asarray(adata.obsm[use_rep]), adata.obs, n_neighbors=n_neighbors,
        resolutions=[resolution], seed=seed,
    )
    return emb.clusters[leiden_key(resolution)].rename("leiden_unintegrated")


@dataclass(frozen=True)
class MethodScores:
    """Output of :func:`score_methods`.

    Attributes
    ----------
    table
        ``method, metric, value, direction, label``: the rows of
        :func:`integration_metrics` for each method in input order, and the label used
        (:func:`score_methods`; :func:`score_final_states` adds ``pass`` and ``lead``).
    label
        The biological label the metrics used: ``integrate.label_key`` or
        ``leiden_unintegrated``; ``state`` for the final-state pass.
    """

    table: pd.DataFrame
    label: str


def _annotated_labels(cells_path: str | os.PathLike | None, label_key: str) -> pd.Series:
    """Column ``label_key`` of the cells table (``cells.tsv.gz``), indexed by cell; cells
    left ``unassigned`` (no state called) carry no label."""
    if cells_path is None:
        raise CartCohortError(
            f"integrate.label_key is '{label_key}' but no cells table was given. Fix: "
            "run the integration_metrics rule of the workflow (it adds cells.tsv.gz)"
        )
    cells = tables.read_table(cells_path)
    if label_key not in cells.columns:
        raise CartCohortError(
            f"{cells_path}: no column '{label_key}' (config integrate.label_key). "
            f"Fix: use one of {sorted(cells.columns)} or null"
        )
    logger.info("label: '%s' from %s", label_key, cells_path)
    labels = cells.set_index("cell")[label_key].astype("string")
    return labels.mask(labels == UNASSIGNED)


def score_methods(
    paths: Sequence[str | os.PathLike],
    *,
    cells_path: str | os.PathLike | None = None,
    batch_key: str = "batch",
    label_key: str | None = None,
    n_neighbors: int = 15,
    reference_resolution: float = 0.5,
    perplexity: float = 30,
    asw_max_cells: int = 20000,
    max_cells: int = 50000,
    seed: int = 0,
) -> MethodScores:
    """Step of rule ``integration_metrics``: :func:`integration_metrics` of every
    method on one seeded subset of cells (:func:`subsample_for_metrics`).

    Parameters
    ----------
    paths
        ``integrate/{method}.h5ad`` of every method, read one at a time.
    cells_path
        ``cells.tsv.gz`` holding the ``label_key`` column (needed with ``label_key``).
    batch_key
        ``obs`` column with the batches (``integrate.batch_key``).
    label_key
        Column of the cells table used as the biological label
        (``integrate.label_key``); ``None``: :func:`reference_labels` of the
        unintegrated PCA.
    n_neighbors
        Neighbours of the subset's and the reference's graphs (``integrate.n_neighbors``).
    reference_resolution
        Leiden resolution of the reference label (first of
        ``integrate.leiden_resolutions``).
    perplexity, asw_max_cells
        ``integrate.metrics``: see :func:`integration_metrics`.
    max_cells
        ``integrate.metrics.max_cells``: size of the subset.
    seed
        Master seed (``seed``): subsets and the reference's Leiden.

    Returns
    -------
    MethodScores
        The metrics table and the label used.
    """
    label_key = label_key or None
    seed = int(seed)
    reference = None if label_key is None else _annotated_labels(cells_path, label_key)
    key = label_key or "leiden_unintegrated"
    parts = []
    for path in paths:
        adata = subsample_for_metrics(read_integration(path), max_cells=int(max_cells),
                                      n_neighbors=int(n_neighbors), seed=seed)
        if reference is None:
            # Leiden of the unintegrated PCA: the same X_pca is in every method's file
            reference = reference_labels(adata, n_neighbors=int(n_neighbors),
                                         resolution=float(reference_resolution), seed=seed)
            logger.info("label: Leiden of the unintegrated PCA (%d clusters)",
                        reference.nunique())
        adata.obs[key] = reference.reindex(adata.obs_names).to_numpy()
        table = integration_metrics(adata, batch_key=batch_key, label_key=key,
                                    perplexity=float(perplexity),
                                    asw_max_cells=int(asw_max_cells), seed=seed)
        method = adata.uns["integration"]["method"]
        logger.info("%s:\n%s", method, table.to_string(index=False))
        parts.append(table.assign(method=method))
    table = pd.concat(parts, ignore_index=True)[["method", "metric", "value", "direction"]]
    return MethodScores(table=table.assign(label=key), label=key)


#: The passes of ``integration_metrics.tsv`` (column ``pass``), the leading one first.
PASSES: tuple[str, ...] = ("final_states", "pre_annotation")
#: The column of ``cells.tsv.gz`` scored in the final-state pass (annotate's final call).
STATE_COLUMN = "state"


def score_final_states(
    paths: Sequence[str | os.PathLike],
    *,
    cells_path: str | os.PathLike,
    first_pass: pd.DataFrame,
    batch_key: str = "batch",
    n_neighbors: int = 15,
    perplexity: float = 30,
    asw_max_cells: int = 20000,
    max_cells: int = 50000,
    seed: int = 0,
) -> MethodScores:
    """Step of rule ``integration_metrics_states``: every method scored against the final
    cell states, beside the first pass (``integration_metrics.tsv``).

    Bio-conservation against the Leiden clusters of the unintegrated data favours
    ``none``; the final states are called from expression signatures per cell, so they
    judge whether a method kept the populations the cohort is analysed by. Cells left
    ``unassigned`` are left out of the label metrics.

    Parameters
    ----------
    paths
        ``integrate/{method}.h5ad`` of every method.
    cells_path
        ``cells.tsv.gz`` (rule ``annotate``) with the ``state`` column.
    first_pass
        Table of rule ``integration_metrics`` (:func:`score_methods`, with ``label``).
    batch_key, n_neighbors, perplexity, asw_max_cells, max_cells, seed
        As :func:`score_methods` (the same subset of cells for both passes).

    Returns
    -------
    MethodScores
        ``integration_metrics.tsv``: ``method, metric, value, direction, label, pass,
        lead``, the final-state pass first (``lead`` true), then the first pass
        (``pass = pre_annotation``, its label, e.g. ``leiden_unintegrated``).
    """
    missing = [c for c in ("method", "metric", "value", "direction", "label")
               if c not in first_pass.columns]
    if missing:
        raise CartCohortError(f"first-pass metrics table lacks columns {missing}; Fix: re-run "
                              "rule integration_metrics")
    states = score_methods(paths, cells_path=cells_path, batch_key=batch_key,
                           label_key=STATE_COLUMN, n_neighbors=n_neighbors,
                           perplexity=perplexity, asw_max_cells=asw_max_cells,
                           max_cells=max_cells, seed=seed)
    table = pd.concat([states.table.assign(**{"pass": PASSES[0], "lead": True}),
                       first_pass.assign(**{"pass": PASSES[1], "lead": False})],
                      ignore_index=True)
    cols = ["method", "metric", "value", "direction", "label", "pass", "lead"]
    return MethodScores(table=table[cols], label=STATE_COLUMN)
