"""Harmony (Korsunsky et al. 2019): the PCs corrected by harmonypy, called directly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...errors import CartCohortError
from .registry import Method, register

PARAMS = frozenset({
    "theta", "lamb", "sigma", "nclust", "tau", "block_size", "max_iter_harmony",
    "max_iter_kmeans", "epsilon_cluster", "epsilon_harmony", "alpha",
})
"""Keys allowed in ``integrate.harmony`` (keyword arguments of ``harmonypy.run_harmony``)."""


def run(
    x_pca: np.ndarray,
    batches: pd.Series,
    *,
    seed: int,
    n_threads: int,
    counts: Any = None,
    params: dict[str, Any],
) -> np.ndarray:
    """Harmony embedding: cells x PCs, float32 (``params``: ``integrate.harmony``)."""
    import harmonypy

    meta = pd.DataFrame({batches.name: batches.to_numpy()}, index=batches.index)
    result = harmonypy.run_harmony(
        x_pca.astype(np.float64), meta, [batches.name], random_state=seed,
        verbose=False, ncores=max(1, int(n_threads)), **params,
    )
    z = np.asarray(result.Z_corr)
    # harmonypy >= 2 returns cells x PCs; 0.0.x returned PCs x cells
    if z.shape == x_pca.shape:
        out = z
    elif z.shape == x_pca.shape[::-1]:
        out = z.T
    else:
        raise CartCohortError(
            f"harmonypy returned an embedding of shape {z.shape} for {x_pca.shape} "
            "input; this harmonypy version is not supported (use 2.x)"
        )
    return np.ascontiguousarray(out, dtype=np.float32)


register(Method("harmony", "harmonypy", needs_counts=False, corrects_graph=False, run=run,
                params=PARAMS,
                install="pip install harmonypy  (or: conda install -c conda-forge harmonypy)"))
