"""Per-cell QC metrics, their adaptive (MAD) or fixed thresholds, and the metric flags.

Choices (the field's current practice, Heumos et al. 2023 *Nat Rev Genet*
"Best practices for single-cell analysis across modalities"; Germain et al. 2020):

* Metrics per cell: total UMI counts, detected genes, % counts in mitochondrial
  genes, % counts in the cell's own 20 most expressed genes.
* CAR transgene features (``var['is_car']``) count towards totals, detected genes
  and the mito denominator (they are real UMIs), but are left out of the top-20
  metric (numerator *and* denominator): a highly expressed CAR would otherwise make
  CAR+ cells look like low-complexity cells and bias QC against them.
* Adaptive thresholds from the median absolute deviation (MAD): ``log1p`` total
  counts and ``log1p`` genes on both sides (``n_mads``), % top-20 above
  (``n_mads``), % mito above (``n_mads_mito``) and never above the hard
  ``max_pct_mito``. By default (``mad_scale: normal``) the MAD is scaled by 1.4826
  so that it estimates the SD of normal data, as R's ``mad()`` and scater's
  ``isOutlier`` (OSCA) do; ``mad_scale: raw`` uses the unscaled MAD of the scverse
  best-practices book (stricter: on the demo cohort it removes ~4 % of good cells
  for their log-normal mito tail alone). A MAD of 0 (e.g. most cells share one
  value) would make every deviating cell an outlier; the MAD is then replaced by
  0.845 x the mean absolute deviation from the median (same scale for normal data)
  and, when that is 0 too, the metric does not flag anyone. Both cases are logged
  and written to the sample summary (``notes``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import InputError, Problem
from ._utils import as_csr, is_number

#: ``qc.mode`` choices: adaptive (MAD) or fixed thresholds.
QCMode = Literal["mad", "fixed"]

#: ``qc.mad_scale`` choices (see :data:`MAD_SCALES`).
MadScale = Literal["normal", "raw"]

#: The four per-cell metrics (without the ``qc_`` prefix).
METRICS: tuple[str, ...] = ("total_counts", "n_genes", "pct_mito", "pct_top20")

#: Ratio MAD / mean absolute deviation for normal data (0.6745 / 0.7979).
_MAD_PER_MEAN_AD = 0.8453

#: ``mad_scale`` choices: factor applied to the raw MAD.
MAD_SCALES: dict[MadScale, float] = {"normal": 1.4826, "raw": 1.0}

#: ``qc.fixed`` thresholds of ``mode: fixed`` and their defaults, as in the config schema
#: (``None``: no bound).
FIXED_DEFAULTS: Mapping[str, float | None] = MappingProxyType({
    "min_counts": 500,
    "max_counts": None,
    "min_genes": 200,
    "max_genes": None,
    "max_pct_mito": 15,
    "max_pct_top20": 60,
})

_TOP_N = 20

_FIXED_KEYS = (
    "min_counts", "max_counts", "min_genes", "max_genes", "max_pct_mito", "max_pct_top20",
)
_FIXED_REQUIRED = ("min_counts", "min_genes", "max_pct_mito", "max_pct_top20")


def _fixed_problems(fixed: Any, *, source: str) -> list[Problem]:
    if not isinstance(fixed, Mapping):
        return [Problem(source, "", "qc.mode is 'fixed' but qc.fixed is missing",
                        f"give {', '.join(_FIXED_REQUIRED)} under qc.fixed")]
    problems = []
    for key in fixed:
        if key not in _FIXED_KEYS:
            problems.append(Problem(source, f"key {key!r}", "unknown fixed threshold",
                                    f"use one of {', '.join(_FIXED_KEYS)}"))
    for key in _FIXED_REQUIRED:
        if key not in fixed:
            problems.append(Problem(source, f"key {key!r}", "missing",
                                    "give a number (or null to disable)"))
    for key, value in fixed.items():
        if value is not None and not (is_number(value) and value >= 0):
            problems.append(Problem(source, f"key {key!r}", f"{value!r} is not a number >= 0",
                                    "give a number >= 0 or null to disable"))
    return problems


# --------------------------------------------------------------------------- metrics


def mito_genes(
    var_names: Sequence[str] | pd.Index,
    *,
    mito_prefix: str | Sequence[str] = "MT-",
) -> np.ndarray:
    """Boolean mask of mitochondrial genes, matched by prefix, case-insensitively.

    Parameters
    ----------
    var_names
        Gene symbols.
    mito_prefix
        One prefix, a list of prefixes, or ``'auto'`` (= ``'MT-'``, which matches
        human ``MT-`` and mouse ``mt-`` symbols since matching ignores case).

    Returns
    -------
    numpy.ndarray
        One bool per gene, true for mitochondrial genes.
    """
    if isinstance(mito_prefix, str):
        prefixes = ["MT-"] if mito_prefix.lower() == "auto" else [mito_prefix]
    else:
        prefixes = list(mito_prefix)
    names = pd.Index(var_names).astype(str).str.upper()
    mask = np.zeros(len(names), dtype=bool)
    for p in prefixes:
        mask |= np.asarray(names.str.startswith(p.upper()))
    return mask


def _top_n_sum(x: sparse.csr_matrix, n: int) -> np.ndarray:
    """Per row, the sum of its ``n`` largest entries (vectorised)."""
    x = x.copy()
    x.sum_duplicates()
    n_rows = x.shape[0]
    if x.nnz == 0:
        return np.zeros(n_rows)
    rows = np.repeat(np.arange(n_rows), np.diff(x.indptr))
    order = np.lexsort((-x.data, rows))
    rank = np.arange(x.nnz) - x.indptr[rows[order]]
    keep = rank < n
    return np.bincount(rows[order][keep], weights=x.data[order][keep].astype(np.float64),
                       minlength=n_rows)


def qc_metrics(
    gex: ad.AnnData,
    *,
    mito_prefix: str | Sequence[str] = "MT-",
    car_key: str = "is_car",
) -> pd.DataFrame:
    """Per-cell QC metrics from raw counts.

    Parameters
    ----------
    gex
        Cells x genes, raw UMI counts in ``X``.
    mito_prefix
        See :func:`mito_genes`.
    car_key
        Boolean ``var`` column marking CAR transgene features (absent: none).

    Returns
    -------
    pandas.DataFrame
        Indexed like ``gex.obs``: ``qc_total_counts``, ``qc_n_genes``,
        ``qc_pct_mito``, ``qc_pct_top20`` (percentages are NaN for cells without
        counts). CAR features count in totals, genes and the mito denominator, not
        in the top-20 metric.
    """
    x = as_csr(gex.X).astype(np.float64)
    x.eliminate_zeros()
    total = np.asarray(x.sum(axis=1)).ravel()
    n_genes = np.diff(x.indptr).astype(np.int64)
    mito = mito_genes(gex.var_names, mito_prefix=mito_prefix)
    mito_counts = np.asarray(x[:, np.flatnonzero(mito)].sum(axis=1)).ravel()
    if car_key in gex.var:
        car = np.asarray(gex.var[car_key].fillna(False).astype(bool))
    else:
        car = np.zeros(gex.n_vars, dtype=bool)
    endo = x[:, np.flatnonzero(~car)]
    endo_total = np.asarray(endo.sum(axis=1)).ravel()
    top = _top_n_sum(endo.tocsr(), _TOP_N)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct_mito = np.where(total > 0, 100.0 * mito_counts / total, np.nan)
        pct_top = np.where(endo_total > 0, 100.0 * top / endo_total, np.nan)
    return pd.DataFrame(
        {
            "qc_total_counts": total,
            "qc_n_genes": n_genes,
            "qc_pct_mito": pct_mito,
            "qc_pct_top20": pct_top,
        },
        index=gex.obs_names.copy(),
    )


# --------------------------------------------------------------------------- thresholds


def mad_bounds(
    values: np.ndarray | pd.Series,
    *,
    n_mads: float,
    log: bool = False,
    lower: bool = True,
    upper: bool = True,
    scale: float = 1.0,
) -> dict[str, Any]:
    """Outlier bounds ``median -/+ n_mads x scale x MAD``, optionally on log1p.

    Parameters
    ----------
    values
        One metric over the cells of one sample (NaN ignored).
    n_mads
        Number of MADs.
    log
        Compute on ``log1p(values)``; bounds are returned back-transformed
        (``expm1``), so they compare directly with ``values``.
    lower, upper
        Which sides to bound; an unbounded side is ``-inf`` / ``+inf``.
    scale
        Factor on the raw MAD (1.4826: normal-consistent, see :data:`MAD_SCALES`).

    Returns
    -------
    dict
        ``lower``, ``upper`` (on the scale of ``values``), ``median``, ``mad``
        (scaled; on the log scale when ``log``) and ``note`` ('' or why the MAD
        was replaced).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if log:
        v = np.log1p(v)
    out: dict[str, Any] = {"lower": -np.inf, "upper": np.inf, "median": np.nan, "mad": np.nan,
                           "note": ""}
    if v.size == 0:
        out["note"] = "no cells with a value: not used"
        return out
    med = float(np.median(v))
    dev = np.abs(v - med)
    mad = float(np.median(dev))
    if mad == 0:
        alt = float(np.mean(dev)) * _MAD_PER_MEAN_AD
        if alt == 0:
            out.update(median=_back(med, log), mad=0.0,
                       note="MAD=0 and no spread at all: metric does not flag cells")
            return out
        out["note"] = f"MAD=0: replaced by 0.845 x mean absolute deviation ({alt:.4g})"
        mad = alt
    mad *= scale
    out["median"] = _back(med, log)
    out["mad"] = mad
    if lower:
        out["lower"] = _back(med - n_mads * mad, log)
    if upper:
        out["upper"] = _back(med + n_mads * mad, log)
    return out


def _back(x: float, log: bool) -> float:
    return float(np.expm1(x)) if log else float(x)


def _mad_thresholds(
    metrics: pd.DataFrame,
    *,
    n_mads: float,
    n_mads_mito: float,
    mad_scale: MadScale,
    max_pct_mito: float,
) -> dict[str, dict[str, Any]]:
    """Rows of :func:`compute_thresholds` in ``mad`` mode."""
    if mad_scale not in MAD_SCALES:
        raise InputError([Problem("config qc", "key 'mad_scale'",
                                  f"{mad_scale!r} is not a MAD scale",
                                  f"use one of {', '.join(MAD_SCALES)}")])
    k = MAD_SCALES[mad_scale]
    rows: dict[str, dict[str, Any]] = {}
    rows["total_counts"] = mad_bounds(metrics["qc_total_counts"], n_mads=n_mads, log=True,
                                      scale=k)
    rows["n_genes"] = mad_bounds(metrics["qc_n_genes"], n_mads=n_mads, log=True, scale=k)
    rows["pct_top20"] = mad_bounds(metrics["qc_pct_top20"], n_mads=n_mads, lower=False, scale=k)
    mito = mad_bounds(metrics["qc_pct_mito"], n_mads=n_mads_mito, lower=False, scale=k)
    if mito["upper"] > max_pct_mito:
        mito["upper"] = float(max_pct_mito)
        mito["note"] = "; ".join(x for x in (mito["note"], "hard max_pct_mito applies") if x)
    rows["pct_mito"] = mito
    for m, n in zip(METRICS, (n_mads, n_mads, n_mads_mito, n_mads)):
        rows[m]["n_mads"] = float(n)
    return rows


def _fixed_thresholds(
    metrics: pd.DataFrame, fixed: Mapping[str, float | None] | None
) -> dict[str, dict[str, Any]]:
    """Rows of :func:`compute_thresholds` in ``fixed`` mode."""
    problems = _fixed_problems(fixed, source="config qc.fixed")
    if problems:
        raise InputError(problems)
    assert fixed is not None

    def val(key: str, default: float) -> float:
        v = fixed.get(key)
        return default if v is None else float(v)

    spec = {
        "total_counts": (val("min_counts", -np.inf), val("max_counts", np.inf)),
        "n_genes": (val("min_genes", -np.inf), val("max_genes", np.inf)),
        "pct_mito": (-np.inf, val("max_pct_mito", np.inf)),
        "pct_top20": (-np.inf, val("max_pct_top20", np.inf)),
    }
    rows: dict[str, dict[str, Any]] = {}
    for m, (lo, hi) in spec.items():
        col = metrics[f"qc_{m}"].to_numpy(dtype=np.float64)
        col = col[~np.isnan(col)]
        rows[m] = {"lower": lo, "upper": hi,
                   "median": float(np.median(col)) if col.size else np.nan,
                   "mad": np.nan, "n_mads": np.nan, "note": "fixed"}
    return rows


def compute_thresholds(
    metrics: pd.DataFrame,
    *,
    mode: QCMode = "mad",
    n_mads: float = 5.0,
    n_mads_mito: float = 3.0,
    mad_scale: MadScale = "normal",
    max_pct_mito: float = 20.0,
    fixed: Mapping[str, float | None] | None = FIXED_DEFAULTS,
) -> pd.DataFrame:
    """Thresholds of one sample.

    Parameters
    ----------
    metrics
        Output of :func:`qc_metrics` for the cells of ONE sample.
    mode
        ``'mad'`` (adaptive) or ``'fixed'``.
    n_mads
        MADs for log1p counts, log1p genes (both sides) and % top-20 (upper).
    n_mads_mito
        MADs for % mito (upper).
    mad_scale
        ``'normal'`` (MAD x 1.4826, default) or ``'raw'`` (unscaled MAD).
    max_pct_mito
        Hard maximum of % mito in ``mad`` mode (the lower of both bounds is used).
    fixed
        ``min_counts``, ``min_genes``, ``max_pct_mito``, ``max_pct_top20`` and
        optionally ``max_counts``, ``max_genes`` for ``fixed`` mode (``None``
        disables one bound).

    Returns
    -------
    pandas.DataFrame
        Index :data:`METRICS`; columns ``lower``, ``upper`` (``-inf``/``inf``
        when a side is not bounded; cells strictly outside are flagged),
        ``median`` (natural scale), ``mad`` (log1p scale for counts/genes),
        ``n_mads`` and ``note``.
    """
    if mode == "mad":
        rows = _mad_thresholds(metrics, n_mads=n_mads, n_mads_mito=n_mads_mito,
                               mad_scale=mad_scale, max_pct_mito=max_pct_mito)
    elif mode == "fixed":
        rows = _fixed_thresholds(metrics, fixed)
    else:
        raise InputError([Problem("config qc", "key 'mode'", f"{mode!r} is not a QC mode",
                                  "use 'mad' or 'fixed'")])
    table = pd.DataFrame.from_dict(rows, orient="index")
    table = table.loc[list(METRICS), ["lower", "upper", "median", "mad", "n_mads", "note"]]
    table.index.name = "metric"
    return table


def flag_cells(metrics: pd.DataFrame, thresholds: pd.DataFrame) -> pd.DataFrame:
    """Metric flags of each cell (strictly outside the bounds = flagged).

    Cells with zero counts are always ``qc_low_counts``.

    Returns
    -------
    pandas.DataFrame
        ``qc_low_counts``, ``qc_high_counts``, ``qc_low_genes``, ``qc_high_genes``,
        ``qc_high_mito``, ``qc_high_top20`` (bool), indexed like ``metrics``.
    """
    t = thresholds
    tc = metrics["qc_total_counts"].to_numpy(dtype=np.float64)
    ng = metrics["qc_n_genes"].to_numpy(dtype=np.float64)
    pm = metrics["qc_pct_mito"].to_numpy(dtype=np.float64)
    pt = metrics["qc_pct_top20"].to_numpy(dtype=np.float64)
    flags = {
        "qc_low_counts": (tc < t.at["total_counts", "lower"]) | (tc <= 0),
        "qc_high_counts": tc > t.at["total_counts", "upper"],
        "qc_low_genes": ng < t.at["n_genes", "lower"],
        "qc_high_genes": ng > t.at["n_genes", "upper"],
        "qc_high_mito": np.nan_to_num(pm, nan=-np.inf) > t.at["pct_mito", "upper"],
        "qc_high_top20": np.nan_to_num(pt, nan=-np.inf) > t.at["pct_top20", "upper"],
    }
    return pd.DataFrame(flags, index=metrics.index)
