"""No integration: the unintegrated PCA, the baseline the metrics compare methods with."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .registry import Method, register


def run(
    x_pca: np.ndarray,
    batches: pd.Series | None,
    *,
    seed: int,
    n_threads: int,
    counts: Any = None,
    params: dict[str, Any],
) -> np.ndarray:
    """A copy of ``x_pca`` (cells x PCs, float32)."""
    return x_pca.copy()


register(Method("none", None, needs_counts=False, corrects_graph=False, run=run,
                needs_batches=False))
