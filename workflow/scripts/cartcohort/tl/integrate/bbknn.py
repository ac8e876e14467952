"""BBKNN (Polanski et al. 2020): a batch-balanced kNN graph of the unintegrated PCA;
every cell draws its neighbours evenly from the batches. The embedding is left as is."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .registry import Method, register


def run(
    x_pca: np.ndarray,
    batches: pd.Series,
    *,
    seed: int,
    n_threads: int,
    counts: Any = None,
    params: dict[str, Any],
) -> np.ndarray:
    """A copy of ``x_pca``: bbknn corrects the graph (:func:`graph`), not the embedding."""
    METHOD.require()
    return x_pca.copy()


def graph(tmp: Any, batches: pd.Series, *, n_neighbors: int) -> dict:
    """bbknn's graph on ``tmp.obsm['X_integrated']``: ``n_neighbors`` in total, split
    evenly across the batches (``neighbors_within_batch``, at least 1)."""
    bbknn = METHOD.require()
    batch_key = str(batches.name)
    tmp.obs[batch_key] = batches.astype(str).to_numpy()
    n_batches = tmp.obs[batch_key].nunique()
    within = max(1, int(round(n_neighbors / n_batches)))
    bbknn.bbknn(tmp, batch_key=batch_key, use_rep="X_integrated",
                neighbors_within_batch=within, n_pcs=tmp.obsm["X_integrated"].shape[1])
    return {"method": "bbknn", "neighbors_within_batch": within}


METHOD = register(Method("bbknn", "bbknn", needs_counts=False, corrects_graph=True, run=run,
                         graph=graph,
                         install="pip install bbknn  (or: conda install -c bioconda bbknn)"))
