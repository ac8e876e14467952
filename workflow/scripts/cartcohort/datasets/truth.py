"""How well QC recovers the planted truth of a simulated cohort (demo and tests only)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import CartCohortError


def _as_bool(s: pd.Series) -> pd.Series:
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "yes"])


def evaluate_against_truth(obs: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Recall of QC against simulated truth.

    Parameters
    ----------
    obs
        ``gex.obs`` after QC (index = cell id), of one or more samples.
    truth
        ``truth_cells.tsv`` (``cell``, ``is_doublet``, ``is_low_quality``).

    Returns
    -------
    pandas.DataFrame
        Columns ``quantity``, ``value``; one row per quantity: ``n_cells``,
        ``n_low_quality``, ``recall_low_quality`` (share removed), ``n_doublets``,
        ``recall_doublets``, ``recall_doublets_scrublet``, ``recall_doublets_tcr``
        (removed by a TCR reason), ``recall_doublets_tcr_multichain``,
        ``recall_doublets_tcr_dual_vdj`` (flagged), ``recall_doublets_metrics``,
        ``n_good``, ``good_kept`` (share of good cells that pass),
        ``precision_removed``.

    Raises
    ------
    CartCohortError
        Cells of ``obs`` missing from ``truth``.
    """
    from ..pp import REASONS  # anndata and scipy load only when QC is evaluated

    t = truth.set_index("cell")
    common = obs.index.intersection(t.index, sort=False)
    if len(common) < len(obs):
        raise CartCohortError(f"{len(obs) - len(common)} QC cells are not in the truth table")
    t = t.loc[common]
    o = obs.loc[common]
    dbl = _as_bool(t["is_doublet"]).to_numpy()
    lq = _as_bool(t["is_low_quality"]).to_numpy()
    good = ~dbl & ~lq
    removed = ~o["qc_pass"].to_numpy(dtype=bool)
    metric_cols = [f"qc_{r}" for r in REASONS[:6]]
    tcr_fail = o["qc_reason"].astype(str).str.contains("tcr_", regex=False).to_numpy()
    by_metrics = o[metric_cols].to_numpy(dtype=bool).any(axis=1)

    def share(mask: np.ndarray, hit: np.ndarray) -> float:
        return float(hit[mask].mean()) if mask.any() else np.nan

    rows = [
        ("n_cells", float(len(o))),
        ("n_low_quality", float(lq.sum())),
        ("recall_low_quality", share(lq, removed)),
        ("n_doublets", float(dbl.sum())),
        ("recall_doublets", share(dbl, removed)),
        ("recall_doublets_scrublet", share(dbl, o["qc_is_doublet"].to_numpy(dtype=bool))),
        ("recall_doublets_tcr", share(dbl, tcr_fail)),
        ("recall_doublets_tcr_multichain", share(dbl, o["qc_tcr_multichain"].to_numpy(dtype=bool))),
        ("recall_doublets_tcr_dual_vdj", share(dbl, o["qc_tcr_dual_vdj"].to_numpy(dtype=bool))),
        ("recall_doublets_metrics", share(dbl, by_metrics)),
        ("n_good", float(good.sum())),
        ("good_kept", share(good, ~removed)),
        ("precision_removed", share(removed, ~good)),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value"])
