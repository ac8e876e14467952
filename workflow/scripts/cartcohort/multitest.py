"""Multiple-testing adjustment shared by the association (``cartcohort.stats``) and the
clone kinetics (``cartcohort.tl.kinetics``): light (NumPy and SciPy), so every step's
environment can import it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bh_qvalues(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), by
    :func:`scipy.stats.false_discovery_control` (``method="bh"``).

    Missing p-values stay missing and do not count towards the number of tests.

    Parameters
    ----------
    pvalues
        P-values; NaN where a test was not run.

    Returns
    -------
    numpy.ndarray
        Q-values in the input's order (float; NaN where the p-value was missing).
    """
    from scipy.stats import false_discovery_control

    p = np.asarray(pvalues, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = false_discovery_control(p[ok], method="bh")
    return q
