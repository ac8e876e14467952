"""Private helpers of :mod:`cartcohort.tl.annotate`: count log-densities, log-space
normalisation, dense column access and clone codes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import gammaln, logsumexp


def pois_logpmf(c: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Poisson log-probability of counts ``c`` with means ``mu``."""
    mu = np.maximum(mu, 1e-300)
    return c * np.log(mu) - mu - gammaln(c + 1.0)


def nb_logpmf(c: np.ndarray, mu: np.ndarray, size: float) -> np.ndarray:
    """Negative-binomial log-probability of counts ``c`` with means ``mu`` and ``size``."""
    mu = np.maximum(mu, 1e-300)
    return (gammaln(c + size) - gammaln(size) - gammaln(c + 1.0)
            + size * np.log(size / (size + mu)) + c * np.log(mu / (size + mu)))


def as_2d(counts: np.ndarray) -> np.ndarray:
    """Counts as a float ``(n_cells, n_genes)`` array."""
    counts = np.asarray(counts, dtype=float)
    return counts[:, None] if counts.ndim == 1 else counts


def normalise_log(logp: np.ndarray) -> np.ndarray:
    """Row-normalised probabilities from row log-weights."""
    return np.exp(logp - logsumexp(logp, axis=1, keepdims=True))


def dense_columns(matrix: Any, idx: np.ndarray) -> np.ndarray:
    """Columns ``idx`` of a dense or sparse matrix as a float64 array."""
    sub = matrix[:, idx]
    if sparse.issparse(sub):
        sub = sub.toarray()
    return np.asarray(sub, dtype=np.float64)


def gene_counts(counts: Any, var_names: pd.Index, genes: Sequence[str]) -> np.ndarray:
    """Per-cell sum of the counts of ``genes`` (those present in ``var_names``)."""
    idx = var_names.get_indexer(list(genes))
    idx = idx[idx >= 0]
    if len(idx) == 0:
        return np.zeros(counts.shape[0])
    return dense_columns(counts, idx).sum(axis=1)


def clone_codes(clone_id: pd.Series | np.ndarray) -> np.ndarray:
    """Integer code of each cell's clone (sorted clone ids), -1 for missing."""
    s = pd.Series(np.asarray(clone_id, dtype=object))
    codes, _ = pd.factorize(s, sort=True)
    return codes  # -1 for missing
