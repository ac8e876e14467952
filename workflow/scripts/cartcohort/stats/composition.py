"""propeller-style test of cell-state proportions between response groups.

Per patient, state counts are transformed (logit of ``(count + 0.5) / sum(count +
0.5)`` or arcsine square root of the proportion) and a linear model ``transformed
~ responder + covariates`` is fitted per state (t-test of the responder
coefficient; no empirical-Bayes variance moderation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import pandas as pd

from ..errors import CartCohortError
from ._utils import ASSOCIATION_COLUMNS, direction

#: Transforms of the state proportions (config ``associate.composition_transform``).
CompositionTransform = Literal["logit", "asin"]
COMPOSITION_TRANSFORMS: tuple[str, ...] = get_args(CompositionTransform)


def _transformed(counts: np.ndarray, props: np.ndarray, transform: str) -> np.ndarray:
    """Proportions on the transformed scale (pseudocount logit or arcsine square root)."""
    if transform == "logit":
        pseudo = (counts + 0.5) / (counts + 0.5).sum(axis=1, keepdims=True)
        return np.log(pseudo / (1 - pseudo))
    return np.arcsin(np.sqrt(props))


def _design_matrix(keep: np.ndarray, resp: np.ndarray, cov: np.ndarray | None) -> np.ndarray:
    """Intercept, responder and covariate columns of the kept patients."""
    Xcols = [np.ones(keep.sum()), resp[keep].astype(float)]
    if cov is not None:
        Xcols += [cov[keep, j] for j in range(cov.shape[1])]
    return np.column_stack(Xcols)


def _state_row(t: np.ndarray, X: np.ndarray, *, transform: str, alpha: float, adj: str) -> dict:
    """Effect columns of one state: the OLS responder coefficient of ``t`` on ``X``."""
    import statsmodels.api as sm

    res = sm.OLS(t, X).fit()
    ci = res.conf_int(alpha=alpha)
    return dict(
        effect=float(res.params[1]),
        ci_low=float(ci[1, 0]),
        ci_high=float(ci[1, 1]),
        pvalue=float(res.pvalues[1]),
        direction=direction(float(res.params[1])),
        note=f"linear model on {transform}-transformed proportions (t-test){adj}",
    )


def compositional_tests(
    table: pd.DataFrame,
    *,
    responder: pd.Series,
    states: Sequence[str],
    design: pd.DataFrame | None = None,
    transform: CompositionTransform = "logit",
    alpha: float = 0.05,
) -> pd.DataFrame:
    """propeller-style per-state test of cell-state proportions.

    Parameters
    ----------
    table
        Patient-level table with ``count_<state>`` columns.
    responder
        Boolean per row.
    states
        States (all of them form the composition).
    design
        Covariate design columns (complete cases are used).
    transform
        ``logit`` (of ``(count + 0.5) / sum(count + 0.5)``) or ``asin``
        (arcsine square root of the proportion).
    alpha
        1 - confidence level.

    Returns
    -------
    pandas.DataFrame
        Rows of family ``compositional``; ``feature`` is ``prop_<state>``,
        effect = responder minus non-responder difference on the transformed
        scale, medians are of the raw proportions.
    """
    if transform not in COMPOSITION_TRANSFORMS:
        raise CartCohortError(
            f"associate.composition_transform must be 'logit' or 'asin', not {transform!r}"
        )
    counts = table[[f"count_{s}" for s in states]].to_numpy(dtype=float)
    total = counts.sum(axis=1)
    keep = total > 0
    resp = np.asarray(responder, dtype=bool)
    cov = None if design is None or design.shape[1] == 0 else design.to_numpy(float)
    if cov is not None:
        keep &= np.isfinite(cov).all(axis=1)
    props = counts / np.where(total > 0, total, 1)[:, None]
    tr = _transformed(counts, props, transform)
    X = _design_matrix(keep, resp, cov)
    n1, n0 = int((keep & resp).sum()), int((keep & ~resp).sum())
    adj = ""
    if cov is not None and design is not None:
        adj = "; adjusted for " + ", ".join(map(str, design.columns))
    rows = []
    for j, s in enumerate(states):
        t = tr[keep, j]
        row = dict(
            feature=f"prop_{s}",
            test="compositional",
            n_responders=n1,
            n_nonresponders=n0,
            effect_type=f"{transform}_proportion_difference",
            median_responders=float(np.median(props[keep & resp, j])),
            median_nonresponders=float(np.median(props[keep & ~resp, j])),
        )
        if np.allclose(t, t[0]) or counts[keep, j].sum() == 0:
            row.update(
                effect=np.nan,
                ci_low=np.nan,
                ci_high=np.nan,
                pvalue=np.nan,
                direction="NA",
                note="not tested: state absent or constant",
            )
        else:
            row.update(_state_row(t, X, transform=transform, alpha=alpha, adj=adj))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(ASSOCIATION_COLUMNS))
