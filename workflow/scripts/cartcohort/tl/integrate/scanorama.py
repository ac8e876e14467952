"""Scanorama (Hie et al. 2019) on the PCs of each batch, as
``scanpy.external.pp.scanorama_integrate`` calls it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .registry import Method, register


def _assemble(
    scanorama: Any,
    datasets: Sequence[np.ndarray],
    *,
    knn: int = 20,
    sigma: float = 15,
    approx: bool = True,
    alpha: float = 0.10,
    batch_size: int = 5000,
    **extra: Any,
) -> list[np.ndarray]:
    """``scanorama.assemble`` with scanpy's defaults (``integrate.scanorama`` overrides)."""
    return scanorama.assemble(datasets, verbose=0, knn=knn, sigma=sigma, approx=approx,
                              alpha=alpha, batch_size=batch_size, **extra)


def run(
    x_pca: np.ndarray,
    batches: pd.Series,
    *,
    seed: int,
    n_threads: int,
    counts: Any = None,
    params: dict[str, Any],
) -> np.ndarray:
    """Scanorama embedding: cells x dimensions, float32; batches in sorted order."""
    scanorama = METHOD.require()
    order = sorted(batches.unique())
    idx = [np.flatnonzero((batches == b).to_numpy()) for b in order]
    parts = _assemble(scanorama, [x_pca[i] for i in idx], **params)
    out = np.zeros((x_pca.shape[0], parts[0].shape[1]), dtype=np.float32)
    for i, part in zip(idx, parts, strict=True):
        out[i] = np.asarray(part, dtype=np.float32)
    return out


METHOD = register(Method(
    "scanorama", "scanorama", needs_counts=False, corrects_graph=False, run=run,
    params=frozenset({"knn", "sigma", "approx", "alpha", "batch_size"}),
    install="pip install scanorama  (or: conda install -c bioconda scanorama)",
))
