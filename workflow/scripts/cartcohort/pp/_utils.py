"""Private helpers shared by the modules of :mod:`cartcohort.pp`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse


def is_number(x: Any) -> bool:
    """A finite int or float (numpy scalars included), not a bool."""
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool) \
        and math.isfinite(float(x))


def as_csr(x: Any) -> sparse.csr_matrix:
    """``x`` (sparse or dense) as a CSR matrix."""
    if sparse.issparse(x):
        return sparse.csr_matrix(x)
    return sparse.csr_matrix(np.asarray(x))


def as_bool(s: pd.Series) -> pd.Series:
    """A bool column read back from a table (``True``/``true``/``1``/``yes`` are true)."""
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "yes"])
