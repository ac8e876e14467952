"""Per-sample quality control: metrics, adaptive thresholds, doublets, TCR chain QC.

Every cell is kept; QC only *annotates* ``gex.obs`` with ``qc_*`` columns and
``qc_pass``. Downstream steps subset on ``qc_pass`` and skip samples whose row in
``tables/qc_samples.tsv`` has ``sample_excluded`` true.

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
* Doublets from expression: scanpy's Scrublet on the cells that pass the metric
  filters (low-quality cells distort the simulated doublets), seeded. The
  ``auto`` threshold is Scrublet's own (minimum between the two modes of the
  simulated-doublet score histogram, ``skimage.filters.threshold_minimum``,
  ported here). If it cannot be found, no expression doublets are called and the
  summary says so.
* Doublets from the TCR: scirpy ``index_chains`` (productive chains with a
  CDR3) + ``chain_qc``; cells with more than two VJ or more than two VDJ chains
  (``chain_pairing == 'multichain'``) are ``qc_tcr_multichain``; cells with two or
  more distinct productive VDJ (TRB/TRD) chains (``two full chains``, ``extra VDJ``
  and multichain) are ``qc_tcr_dual_vdj``. Allelic exclusion makes true dual-beta
  T cells rare (~1-3 %), while two T cells of different clones captured together
  look exactly like that; dual *alpha* cells are common (~10-30 %) and are not
  flagged. ``doublets.tcr_multichain`` / ``doublets.tcr_dual_vdj`` decide whether
  each flag removes a cell. In infusion products (almost only T cells) expression
  doublets are mostly homotypic and Scrublet is weak; the TCR evidence is what
  catches T-T doublets of different clones (not doublets of one clone, nor cells
  without TCR).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ._scirpy import load_scirpy
from .errors import CartCohortError, InputError, Problem

logger = logging.getLogger(__name__)

#: The four per-cell metrics (without the ``qc_`` prefix).
METRICS: tuple[str, ...] = ("total_counts", "n_genes", "pct_mito", "pct_top20")

#: Every reason a cell can fail, in the order used in ``qc_reason``.
REASONS: tuple[str, ...] = (
    "low_counts",
    "high_counts",
    "low_genes",
    "high_genes",
    "high_mito",
    "high_top20",
    "doublet",
    "tcr_multichain",
    "tcr_dual_vdj",
)

#: scirpy ``chain_pairing`` categories (``no IR``: no TCR for the cell).
CHAIN_PAIRINGS: tuple[str, ...] = (
    "no IR",
    "orphan VJ",
    "orphan VDJ",
    "single pair",
    "extra VJ",
    "extra VDJ",
    "two full chains",
    "ambiguous",
    "multichain",
)

#: Ratio MAD / mean absolute deviation for normal data (0.6745 / 0.7979).
_MAD_PER_MEAN_AD = 0.8453

#: ``mad_scale`` choices: factor applied to the raw MAD.
MAD_SCALES: dict[str, float] = {"normal": 1.4826, "raw": 1.0}

_TOP_N = 20

_DOUBLET_DEFAULTS: dict[str, Any] = {
    "method": "scrublet",
    "threshold": "auto",
    "tcr_multichain": True,
    "tcr_dual_vdj": True,
    "expected_rate": 0.05,
    "sim_doublet_ratio": 2.0,
    "min_cells": 100,
}

_FIXED_KEYS = (
    "min_counts", "max_counts", "min_genes", "max_genes", "max_pct_mito", "max_pct_top20",
)
_FIXED_REQUIRED = ("min_counts", "min_genes", "max_pct_mito", "max_pct_top20")

_QC_KEYS = (
    "mode",
    "n_mads",
    "n_mads_mito",
    "mad_scale",
    "max_pct_mito",
    "min_cells_per_sample",
    "mito_prefix",
    "fixed",
    "doublets",
    "seed",
)


# --------------------------------------------------------------------------- parameters


def validate_qc_params(params: Mapping[str, Any], *, source: str = "config qc") -> dict[str, Any]:
    """Check the QC settings of one sample and return them as keyword arguments.

    Parameters
    ----------
    params
        ``config['qc']`` after per-sample overrides and compartment doublet
        settings were merged (``qc_params`` in ``common.smk``), plus ``seed``.
    source
        Where the settings come from, for error messages.

    Returns
    -------
    dict
        The same settings, ready for ``run_sample_qc(mdata, sample=..., **params)``.

    Raises
    ------
    InputError
        Unknown keys or values out of range (all problems at once).
    """
    problems: list[Problem] = []
    out = dict(params)
    out.pop("per_sample", None)  # already merged by qc_params

    def bad(key: str, what: str, fix: str) -> None:
        problems.append(Problem(source, f"key {key!r}", what, fix))

    for key in out:
        if key not in _QC_KEYS:
            bad(key, "unknown QC setting", f"use one of {', '.join(_QC_KEYS)}")
    seed = out.get("seed")
    if not (isinstance(seed, int | np.integer) and not isinstance(seed, bool)):
        bad("seed", f"{seed!r} is not an integer seed",
            "give the master seed (qc_params in common.smk adds config['seed'])")
    if out.get("mode", "mad") not in ("mad", "fixed"):
        bad("mode", f"{out.get('mode')!r} is not a QC mode", "use 'mad' or 'fixed'")
    for key in ("n_mads", "n_mads_mito"):
        if key in out and not (_is_number(out[key]) and out[key] > 0):
            bad(key, f"{out[key]!r} is not a positive number", "give a number of MADs > 0, e.g. 5")
    if out.get("mad_scale", "normal") not in MAD_SCALES:
        bad("mad_scale", f"{out.get('mad_scale')!r} is not a MAD scale",
            f"use one of {', '.join(MAD_SCALES)}")
    mx = out.get("max_pct_mito", 20)
    if not (_is_number(mx) and 0 <= mx <= 100):
        bad("max_pct_mito", f"{mx!r} is not a percentage", "give a number in [0, 100]")
    mc = out.get("min_cells_per_sample", 50)
    if not (_is_number(mc) and mc >= 0):
        bad("min_cells_per_sample", f"{mc!r} is not a count", "give an integer >= 0")
    prefix = out.get("mito_prefix", "MT-")
    if not (isinstance(prefix, str) or (isinstance(prefix, Sequence)
                                        and all(isinstance(p, str) for p in prefix))):
        bad("mito_prefix", f"{prefix!r} is not a string or list",
            "give a prefix such as 'MT-', a list of prefixes or 'auto'")
    if out.get("mode", "mad") == "fixed":
        problems.extend(_fixed_problems(out.get("fixed"), source=f"{source}.fixed"))
    try:
        out["doublets"] = resolve_doublet_settings(out.get("doublets") or {}, compartment=None,
                                                   source=f"{source}.doublets")
    except InputError as err:
        problems.extend(err.problems)
    if problems:
        raise InputError(problems)
    return out


def resolve_doublet_settings(
    doublets: Mapping[str, Any],
    *,
    compartment: str | None,
    source: str = "config qc.doublets",
) -> dict[str, Any]:
    """Fill defaults of the doublet settings and apply the compartment's overrides.

    Parameters
    ----------
    doublets
        ``config['qc']['doublets']`` (``per_compartment`` may still be in it; it is
        resolved with ``compartment`` and removed).
    compartment
        The sample's compartment (``None``: ignore ``per_compartment``).
    source
        Where the settings come from, for error messages.

    Returns
    -------
    dict
        ``method``, ``threshold`` (``'auto'`` or float), ``tcr_multichain``,
        ``tcr_dual_vdj``, ``expected_rate``, ``sim_doublet_ratio``, ``min_cells``.
    """
    settings = dict(_DOUBLET_DEFAULTS)
    given = dict(doublets)
    per_comp = given.pop("per_compartment", None) or {}
    settings.update(given)
    if compartment is not None and compartment in per_comp:
        settings.update(per_comp[compartment])
    problems: list[Problem] = []

    def bad(key: str, what: str, fix: str) -> None:
        problems.append(Problem(source, f"key {key!r}", what, fix))

    for key in settings:
        if key not in _DOUBLET_DEFAULTS:
            bad(key, "unknown doublet setting", f"use one of {', '.join(_DOUBLET_DEFAULTS)}")
    if settings["method"] not in ("scrublet", "none"):
        bad("method", f"{settings['method']!r} is not a doublet method", "use 'scrublet' or 'none'")
    thr = settings["threshold"]
    if thr != "auto" and not (_is_number(thr) and 0 <= thr <= 1):
        bad("threshold", f"{thr!r} is neither 'auto' nor a score",
            "use 'auto' or a number in [0, 1]")
    for key in ("tcr_multichain", "tcr_dual_vdj"):
        if not isinstance(settings[key], bool | np.bool_):
            bad(key, f"{settings[key]!r} is not true/false", "use true or false")
    rate = settings["expected_rate"]
    if not (_is_number(rate) and 0 < rate < 1):
        bad("expected_rate", f"{rate!r} is not a rate", "use a number in (0, 1), e.g. 0.05")
    ratio = settings["sim_doublet_ratio"]
    if not (_is_number(ratio) and ratio > 0):
        bad("sim_doublet_ratio", f"{ratio!r} is not > 0", "use a positive number, e.g. 2")
    if not (_is_number(settings["min_cells"]) and settings["min_cells"] >= 31):
        bad("min_cells", f"{settings['min_cells']!r} is too small",
            "use an integer >= 31 (Scrublet uses 30 principal components)")
    if problems:
        raise InputError(problems)
    if thr != "auto":
        settings["threshold"] = float(thr)
    return settings


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool) \
        and math.isfinite(float(x))


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
        if value is not None and not (_is_number(value) and value >= 0):
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


def _as_csr(x: Any) -> sparse.csr_matrix:
    if sparse.issparse(x):
        return sparse.csr_matrix(x)
    return sparse.csr_matrix(np.asarray(x))


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
    x = _as_csr(gex.X).astype(np.float64)
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


def compute_thresholds(
    metrics: pd.DataFrame,
    *,
    mode: str = "mad",
    n_mads: float = 5.0,
    n_mads_mito: float = 3.0,
    mad_scale: str = "normal",
    max_pct_mito: float = 20.0,
    fixed: Mapping[str, float | None] | None = None,
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
    rows: dict[str, dict[str, Any]] = {}
    if mode == "mad":
        if mad_scale not in MAD_SCALES:
            raise InputError([Problem("config qc", "key 'mad_scale'",
                                      f"{mad_scale!r} is not a MAD scale",
                                      f"use one of {', '.join(MAD_SCALES)}")])
        k = MAD_SCALES[mad_scale]
        rows["total_counts"] = mad_bounds(metrics["qc_total_counts"], n_mads=n_mads, log=True,
                                          scale=k)
        rows["n_genes"] = mad_bounds(metrics["qc_n_genes"], n_mads=n_mads, log=True, scale=k)
        rows["pct_top20"] = mad_bounds(metrics["qc_pct_top20"], n_mads=n_mads, lower=False,
                                       scale=k)
        mito = mad_bounds(metrics["qc_pct_mito"], n_mads=n_mads_mito, lower=False, scale=k)
        if mito["upper"] > max_pct_mito:
            mito["upper"] = float(max_pct_mito)
            mito["note"] = "; ".join(x for x in (mito["note"], "hard max_pct_mito applies") if x)
        rows["pct_mito"] = mito
        for m, k in zip(METRICS, (n_mads, n_mads, n_mads_mito, n_mads)):
            rows[m]["n_mads"] = float(k)
    elif mode == "fixed":
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
        for m, (lo, hi) in spec.items():
            col = metrics[f"qc_{m}"].to_numpy(dtype=np.float64)
            col = col[~np.isnan(col)]
            rows[m] = {"lower": lo, "upper": hi,
                       "median": float(np.median(col)) if col.size else np.nan,
                       "mad": np.nan, "n_mads": np.nan, "note": "fixed"}
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


# --------------------------------------------------------------------------- doublets


def threshold_minimum(values: np.ndarray, *, nbins: int = 256, max_num_iter: int = 10000) -> float:
    """Scrublet's automatic threshold: the minimum between the two histogram modes.

    A port of ``skimage.filters.threshold_minimum`` (Glasbey 1993), which
    Scrublet uses on the simulated-doublet scores; ported so the step does not
    need scikit-image.

    Raises
    ------
    CartCohortError
        When the histogram does not become bimodal by smoothing.
    """
    from scipy import ndimage as ndi

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0 or v.min() == v.max():
        raise CartCohortError("no spread in the simulated doublet scores")
    counts, edges = np.histogram(v, bins=nbins, range=(v.min(), v.max()))
    centers = (edges[:-1] + edges[1:]) / 2

    def local_maxima(h: np.ndarray) -> list[int]:
        idx: list[int] = []
        direction = 1
        for i in range(h.shape[0] - 1):
            if direction > 0:
                if h[i + 1] < h[i]:
                    direction = -1
                    idx.append(i)
            elif h[i + 1] > h[i]:
                direction = 1
        return idx

    smooth = counts.astype(np.float32)
    maxima: list[int] = []
    counter = 0
    for counter in range(max_num_iter):
        smooth = ndi.uniform_filter1d(smooth, 3)
        maxima = local_maxima(smooth)
        if len(maxima) < 3:
            break
    if len(maxima) != 2:
        raise CartCohortError("the simulated doublet scores do not have two modes")
    if counter == max_num_iter - 1:
        raise CartCohortError("histogram smoothing did not converge")
    i = int(np.argmin(smooth[maxima[0]: maxima[1] + 1]))
    return float(centers[maxima[0] + i])


def score_doublets(
    gex: ad.AnnData,
    *,
    method: str = "scrublet",
    threshold: float | str = "auto",
    seed: int = 0,
    expected_rate: float = 0.05,
    sim_doublet_ratio: float = 2.0,
    min_cells: int = 100,
    sample: str = "",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Expression-based doublet scores and calls (Scrublet via scanpy).

    Parameters
    ----------
    gex
        Raw counts of the cells to score (typically the ones passing the metric
        filters of one sample).
    method
        ``'scrublet'`` or ``'none'``.
    threshold
        ``'auto'`` (Scrublet's histogram minimum) or a score in [0, 1].
    seed
        Random state for Scrublet.
    expected_rate, sim_doublet_ratio
        Scrublet's ``expected_doublet_rate`` and ``sim_doublet_ratio``.
    min_cells
        Fewer cells than this: no scoring (too few for Scrublet's 30-PC kNN).
    sample
        Sample id for log messages.

    Returns
    -------
    scores : pandas.DataFrame
        ``qc_doublet_score`` (NaN: not scored) and ``qc_is_doublet``, indexed
        like ``gex.obs``.
    info : dict
        ``doublet_method`` (what actually ran), ``doublet_threshold`` (NaN when
        none), ``doublet_note``.
    """
    scores = pd.DataFrame({"qc_doublet_score": np.full(gex.n_obs, np.nan),
                           "qc_is_doublet": np.zeros(gex.n_obs, dtype=bool)},
                          index=gex.obs_names.copy())
    info: dict[str, Any] = {"doublet_method": method, "doublet_threshold": np.nan,
                            "doublet_note": ""}
    if method == "none":
        info["doublet_note"] = "expression doublet calling disabled (qc.doublets.method: none)"
        return scores, info
    if method != "scrublet":
        raise InputError([Problem("config qc.doublets", "key 'method'",
                                  f"{method!r} is not a doublet method",
                                  "use 'scrublet' or 'none'")])
    if gex.n_obs < min_cells:
        info["doublet_method"] = "none"
        info["doublet_note"] = (f"Scrublet not run: {gex.n_obs} cells pass the metric filters "
                                f"(< qc.doublets.min_cells={min_cells})")
        logger.warning("sample %s: %s", sample, info["doublet_note"])
        return scores, info
    import scanpy as sc

    sub = ad.AnnData(X=_as_csr(gex.X).astype(np.float32),
                     obs=pd.DataFrame(index=gex.obs_names.copy()),
                     var=pd.DataFrame(index=gex.var_names.copy()))
    # scanpy's auto threshold needs scikit-image; pass a placeholder (its calls are
    # replaced below) and find the threshold with the port of threshold_minimum.
    placeholder = 0.0 if threshold == "auto" else float(threshold)
    # Exact kNN: scanpy switches to pynndescent above 4,096 points (cells + simulated
    # doublets), whose numba JIT costs ~30 s in every fresh process - far more than the
    # exact search on one library - and adds approximation noise to the scores.
    sc.pp.scrublet(sub, threshold=placeholder, random_state=int(seed),
                   expected_doublet_rate=float(expected_rate),
                   sim_doublet_ratio=float(sim_doublet_ratio), use_approx_neighbors=False,
                   verbose=False)
    score = sub.obs["doublet_score"].to_numpy(dtype=np.float64)
    scores["qc_doublet_score"] = score
    if threshold == "auto":
        try:
            thr = threshold_minimum(sub.uns["scrublet"]["doublet_scores_sim"])
        except CartCohortError as err:
            info["doublet_note"] = (f"Scrublet auto threshold failed ({err}); no expression "
                                    "doublets called. Fix: set qc.doublets.threshold to a number "
                                    "(per sample or per compartment) after looking at the scores")
            logger.warning("sample %s: %s", sample, info["doublet_note"])
            return scores, info
    else:
        thr = float(threshold)
    info["doublet_threshold"] = thr
    scores["qc_is_doublet"] = np.nan_to_num(score, nan=-np.inf) > thr
    n_nan = int(np.isnan(score).sum())
    if n_nan:
        info["doublet_note"] = f"{n_nan} cells with < 3 genes not scored by Scrublet"
    return scores, info


# --------------------------------------------------------------------------- TCR


def annotate_chain_qc(airr: ad.AnnData) -> ad.AnnData:
    """scirpy ``index_chains`` + ``chain_qc`` on a copy of an AIRR AnnData.

    Returns
    -------
    anndata.AnnData
        The copy, with ``obs`` ``receptor_type``, ``receptor_subtype``,
        ``chain_pairing`` and ``obsm['chain_indices']``.
    """
    ir = load_scirpy()

    if "airr" not in airr.obsm:
        raise CartCohortError("the 'airr' modality has no obsm['airr'] (scirpy AIRR data); "
                              "re-run the load step")
    out = airr.copy()
    if out.n_obs == 0:
        out.obs["chain_pairing"] = pd.Series([], dtype=object)
        return out
    ir.pp.index_chains(out)
    ir.tl.chain_qc(out)
    return out


def _n_productive_vdj(airr: ad.AnnData) -> pd.Series:
    """Number of indexed (productive, with CDR3) VDJ chains per cell."""
    idx = airr.obsm["chain_indices"]
    counts = [sum(i is not None for i in x) if x is not None else 0 for x in idx["VDJ"].to_list()]
    return pd.Series(counts, index=airr.obs_names)


def tcr_flags(
    airr: ad.AnnData | None,
    *,
    cells: pd.Index,
) -> pd.DataFrame:
    """Chain pairing of every cell and the TCR doublet flag.

    Parameters
    ----------
    airr
        Output of :func:`annotate_chain_qc`, or ``None`` when the library has no TCR.
    cells
        The GEX cell ids; cells absent from ``airr`` get ``'no IR'``.

    Returns
    -------
    pandas.DataFrame
        ``qc_chain_pairing`` (categorical over :data:`CHAIN_PAIRINGS`),
        ``qc_tcr_multichain`` (more than two VJ or more than two VDJ chains) and
        ``qc_tcr_dual_vdj`` (two or more distinct productive VDJ chains), indexed
        by ``cells``.
    """
    pairing = pd.Series("no IR", index=cells, dtype=object)
    flag = pd.Series(False, index=cells, dtype=bool)
    dual = pd.Series(False, index=cells, dtype=bool)
    if airr is not None and airr.n_obs:
        common = airr.obs_names.intersection(cells, sort=False)
        if len(common) < airr.n_obs:
            logger.warning("%d cells have TCR data but no GEX barcode; ignored",
                           airr.n_obs - len(common))
        cp = airr.obs.loc[common, "chain_pairing"].astype(str)
        pairing.loc[common] = cp.to_numpy()
        flag.loc[common] = (cp == "multichain").to_numpy()
        dual.loc[common] = (_n_productive_vdj(airr).loc[common] >= 2).to_numpy()
    unknown = set(pairing.unique()) - set(CHAIN_PAIRINGS)
    if unknown:
        raise CartCohortError(f"scirpy returned unknown chain_pairing values {sorted(unknown)}")
    return pd.DataFrame({
        "qc_chain_pairing": pd.Categorical(pairing.to_numpy(), categories=list(CHAIN_PAIRINGS)),
        "qc_tcr_multichain": flag.to_numpy(dtype=bool),
        "qc_tcr_dual_vdj": dual.to_numpy(dtype=bool),
    }, index=cells)


# --------------------------------------------------------------------------- combine


def qc_pass_and_reason(
    flags: pd.DataFrame,
    *,
    tcr_multichain_fails: bool = True,
    tcr_dual_vdj_fails: bool = True,
) -> pd.DataFrame:
    """Final decision per cell.

    Parameters
    ----------
    flags
        Columns ``qc_<reason>`` for the metric reasons, ``qc_is_doublet``,
        ``qc_tcr_multichain`` and ``qc_tcr_dual_vdj``.
    tcr_multichain_fails, tcr_dual_vdj_fails
        Whether ``qc_tcr_multichain`` / ``qc_tcr_dual_vdj`` remove a cell.

    Returns
    -------
    pandas.DataFrame
        ``qc_pass`` (bool) and ``qc_reason`` (``'pass'`` or the failed reasons
        joined by ``;`` in :data:`REASONS` order).
    """
    failing = failing_matrix(flags, tcr_multichain_fails=tcr_multichain_fails,
                             tcr_dual_vdj_fails=tcr_dual_vdj_fails)
    arr = failing.to_numpy()
    names = np.array(REASONS, dtype=object)
    reasons = [";".join(names[row]) if row.any() else "pass" for row in arr]
    return pd.DataFrame({"qc_pass": ~arr.any(axis=1), "qc_reason": reasons}, index=flags.index)


def failing_matrix(
    flags: pd.DataFrame,
    *,
    tcr_multichain_fails: bool = True,
    tcr_dual_vdj_fails: bool = True,
) -> pd.DataFrame:
    """Cells x :data:`REASONS` booleans: which reasons remove each cell."""
    cols = {}
    for r in REASONS:
        if r == "doublet":
            col = flags["qc_is_doublet"]
        elif r == "tcr_multichain":
            col = flags["qc_tcr_multichain"] & bool(tcr_multichain_fails)
        elif r == "tcr_dual_vdj":
            col = flags["qc_tcr_dual_vdj"] & bool(tcr_dual_vdj_fails)
        else:
            col = flags[f"qc_{r}"]
        cols[r] = np.asarray(col, dtype=bool)
    return pd.DataFrame(cols, index=flags.index)


def _pairing_col(p: str) -> str:
    return "n_chain_" + p.lower().replace(" ", "_")


def sample_summary(
    obs: pd.DataFrame,
    *,
    sample: str,
    compartment: str,
    thresholds: pd.DataFrame,
    doublet_info: Mapping[str, Any],
    tcr_multichain_fails: bool,
    tcr_dual_vdj_fails: bool,
    has_tcr: bool,
    min_cells_per_sample: int,
    mode: str,
    n_mito_genes: int,
    notes: Sequence[str] = (),
) -> pd.DataFrame:
    """One-row summary of the QC of one sample.

    Columns: ``sample, compartment, n_cells_in, n_cells_out, n_removed_total``,
    ``n_removed_<reason>`` (a cell failing two reasons counts in both),
    ``n_flagged_tcr_multichain``, ``n_flagged_tcr_dual_vdj`` (flagged whether or
    not the flag removes cells), ``median_<metric>`` (all cells) and
    ``median_<metric>_pass`` (passing cells), ``lower_<metric>``/``upper_<metric>``
    (NA: side not bounded), ``mad_<metric>``, ``qc_mode``, ``n_mito_genes``,
    ``doublet_method``, ``doublet_threshold``, ``doublet_note``,
    ``tcr_multichain_fails``, ``tcr_dual_vdj_fails``, ``has_tcr``, ``n_chain_<pairing>``,
    ``sample_excluded``, ``exclusion_reason``, ``notes``.
    """
    fail = failing_matrix(obs, tcr_multichain_fails=tcr_multichain_fails,
                          tcr_dual_vdj_fails=tcr_dual_vdj_fails)
    n_in = int(len(obs))
    n_out = int(obs["qc_pass"].sum())
    row: dict[str, Any] = {
        "sample": sample,
        "compartment": compartment,
        "n_cells_in": n_in,
        "n_cells_out": n_out,
        "n_removed_total": n_in - n_out,
    }
    for r in REASONS:
        row[f"n_removed_{r}"] = int(fail[r].sum())
    row["n_flagged_tcr_multichain"] = int(obs["qc_tcr_multichain"].sum())
    row["n_flagged_tcr_dual_vdj"] = int(obs["qc_tcr_dual_vdj"].sum())
    passing = obs["qc_pass"].to_numpy(dtype=bool)
    for m in METRICS:
        col = obs[f"qc_{m}"].to_numpy(dtype=np.float64)
        row[f"median_{m}"] = _nanmedian(col)
        row[f"median_{m}_pass"] = _nanmedian(col[passing])
    for m in METRICS:
        lo, hi = thresholds.at[m, "lower"], thresholds.at[m, "upper"]
        row[f"lower_{m}"] = lo if np.isfinite(lo) else np.nan
        row[f"upper_{m}"] = hi if np.isfinite(hi) else np.nan
        row[f"mad_{m}"] = thresholds.at[m, "mad"]
    row["qc_mode"] = mode
    row["n_mito_genes"] = int(n_mito_genes)
    row["doublet_method"] = doublet_info["doublet_method"]
    row["doublet_threshold"] = doublet_info["doublet_threshold"]
    row["doublet_note"] = doublet_info.get("doublet_note", "")
    row["tcr_multichain_fails"] = bool(tcr_multichain_fails)
    row["tcr_dual_vdj_fails"] = bool(tcr_dual_vdj_fails)
    row["has_tcr"] = bool(has_tcr)
    counts = obs["qc_chain_pairing"].astype(str).value_counts()
    for p in CHAIN_PAIRINGS:
        row[_pairing_col(p)] = int(counts.get(p, 0))
    excluded = n_out < min_cells_per_sample
    row["sample_excluded"] = bool(excluded)
    if n_in == 0:
        row["exclusion_reason"] = "no cells in the input"
    elif excluded:
        row["exclusion_reason"] = (f"{n_out} of {n_in} cells pass QC "
                                   f"(< qc.min_cells_per_sample={min_cells_per_sample})")
    else:
        row["exclusion_reason"] = ""
    all_notes = [f"{m}: {thresholds.at[m, 'note']}" for m in METRICS
                 if thresholds.at[m, "note"] and thresholds.at[m, "note"] != "fixed"]
    all_notes.extend(notes)
    row["notes"] = "; ".join(all_notes)
    return pd.DataFrame([row])


def _nanmedian(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(np.median(x)) if x.size else np.nan


# --------------------------------------------------------------------------- one sample


def run_sample_qc(
    mdata: Any,
    *,
    sample: str,
    seed: int,
    mode: str = "mad",
    n_mads: float = 5.0,
    n_mads_mito: float = 3.0,
    mad_scale: str = "normal",
    max_pct_mito: float = 20.0,
    min_cells_per_sample: int = 50,
    mito_prefix: str | Sequence[str] = "MT-",
    fixed: Mapping[str, float | None] | None = None,
    doublets: Mapping[str, Any] | None = None,
) -> tuple[Any, pd.DataFrame]:
    """QC of one library: annotate every cell, decide ``qc_pass``, summarise.

    Parameters
    ----------
    mdata
        ``mudata.MuData`` from ``results/load/{sample}.h5mu`` (``gex`` raw counts,
        optional ``airr``).
    sample
        Sample id (for the summary and messages).
    seed
        Random state of Scrublet.
    mode, n_mads, n_mads_mito, mad_scale, max_pct_mito, fixed
        See :func:`compute_thresholds`.
    min_cells_per_sample
        Fewer passing cells: the sample is flagged ``sample_excluded`` (warning).
    mito_prefix
        See :func:`mito_genes`.
    doublets
        ``method``, ``threshold``, ``tcr_multichain`` / ``tcr_dual_vdj`` (does
        that TCR flag remove a cell), ``expected_rate``, ``sim_doublet_ratio``,
        ``min_cells`` (see :func:`resolve_doublet_settings`).

    Returns
    -------
    mdata : mudata.MuData
        A copy with ``gex.obs`` ``qc_*`` columns (all cells kept), the
        ``airr`` modality (if any) annotated by scirpy ``chain_qc``, and
        ``gex.uns['qc']`` (thresholds and settings).
    summary : pandas.DataFrame
        One row, see :func:`sample_summary`.
    """
    import mudata as md

    if "gex" not in mdata.mod:
        raise CartCohortError(f"sample {sample}: the MuData has no 'gex' modality; "
                              "re-run the load step")
    # mudata >= 0.3 warns unless obs/var are not pulled from the modalities on update.
    with md.set_options(pull_on_update=False):
        return _run_sample_qc(
            mdata.copy(), sample=sample, seed=seed, mode=mode, n_mads=n_mads,
            n_mads_mito=n_mads_mito, mad_scale=mad_scale, max_pct_mito=max_pct_mito,
            min_cells_per_sample=min_cells_per_sample, mito_prefix=mito_prefix, fixed=fixed,
            doublets=doublets,
        )


def _run_sample_qc(
    mdata: Any,
    *,
    sample: str,
    seed: int,
    mode: str,
    n_mads: float,
    n_mads_mito: float,
    mad_scale: str,
    max_pct_mito: float,
    min_cells_per_sample: int,
    mito_prefix: str | Sequence[str],
    fixed: Mapping[str, float | None] | None,
    doublets: Mapping[str, Any] | None,
) -> tuple[Any, pd.DataFrame]:
    gex = mdata.mod["gex"]
    compartment = _single_value(gex.obs, "compartment", sample)
    dbl = resolve_doublet_settings(doublets or {}, compartment=compartment)
    _check_raw_counts(gex, sample)
    notes: list[str] = []

    metrics = qc_metrics(gex, mito_prefix=mito_prefix)
    n_mito = int(mito_genes(gex.var_names, mito_prefix=mito_prefix).sum())
    if n_mito == 0 and gex.n_vars:
        msg = (f"no mitochondrial genes match prefix {mito_prefix!r}: % mito is 0 for every cell. "
               "Fix: set qc.mito_prefix if the genes are named differently")
        logger.warning("sample %s: %s", sample, msg)
        notes.append(msg)
    thresholds = compute_thresholds(metrics, mode=mode, n_mads=n_mads, n_mads_mito=n_mads_mito,
                                    mad_scale=mad_scale, max_pct_mito=max_pct_mito, fixed=fixed)
    for m in METRICS:
        if thresholds.at[m, "note"].startswith("MAD=0"):
            logger.warning("sample %s, %s: %s", sample, m, thresholds.at[m, "note"])
    flags = flag_cells(metrics, thresholds)
    metric_pass = ~flags.any(axis=1).to_numpy()

    scored, dinfo = score_doublets(
        gex[metric_pass], method=dbl["method"], threshold=dbl["threshold"], seed=seed,
        expected_rate=dbl["expected_rate"], sim_doublet_ratio=dbl["sim_doublet_ratio"],
        min_cells=int(dbl["min_cells"]), sample=sample,
    )
    dscore = pd.Series(np.nan, index=gex.obs_names)
    dcall = pd.Series(False, index=gex.obs_names, dtype=bool)
    dscore.loc[scored.index] = scored["qc_doublet_score"].to_numpy()
    dcall.loc[scored.index] = scored["qc_is_doublet"].to_numpy()

    airr = mdata.mod.get("airr")
    has_tcr = airr is not None
    if has_tcr:
        airr = annotate_chain_qc(airr)
        mdata.mod["airr"] = airr
    else:
        msg = "no TCR data (no 'airr' modality): chain pairing is 'no IR', no TCR doublet evidence"
        logger.warning("sample %s: %s", sample, msg)
        notes.append(msg)
    tcr = tcr_flags(airr, cells=gex.obs_names)

    obs = gex.obs.copy()
    for col in list(obs.columns):
        if col.startswith("qc_"):
            del obs[col]
    obs = obs.join(metrics).join(flags)
    obs["qc_doublet_score"] = dscore
    obs["qc_is_doublet"] = dcall
    obs = obs.join(tcr)
    decision = qc_pass_and_reason(obs, tcr_multichain_fails=bool(dbl["tcr_multichain"]),
                                  tcr_dual_vdj_fails=bool(dbl["tcr_dual_vdj"]))
    obs = obs.join(decision)
    gex.obs = obs

    summary = sample_summary(
        obs, sample=sample, compartment=compartment, thresholds=thresholds, doublet_info=dinfo,
        tcr_multichain_fails=bool(dbl["tcr_multichain"]),
        tcr_dual_vdj_fails=bool(dbl["tcr_dual_vdj"]), has_tcr=has_tcr,
        min_cells_per_sample=int(min_cells_per_sample), mode=mode, n_mito_genes=n_mito, notes=notes,
    )
    srow = summary.iloc[0]
    if srow["sample_excluded"]:
        logger.warning("sample %s is EXCLUDED from cohort analyses: %s", sample,
                       srow["exclusion_reason"])
    logger.info("sample %s: %d of %d cells pass QC (removed: %s)", sample, srow["n_cells_out"],
                srow["n_cells_in"], ", ".join(f"{r}={srow[f'n_removed_{r}']}" for r in REASONS))
    gex.uns["qc"] = {
        "mode": mode,
        "mad_scale": mad_scale,
        "thresholds": {m: {"lower": float(thresholds.at[m, "lower"]),
                           "upper": float(thresholds.at[m, "upper"])} for m in METRICS},
        "doublets": {k: (str(v) if isinstance(v, str) else float(v) if _is_number(v) else bool(v))
                     for k, v in dbl.items()},
        "doublet_method": str(dinfo["doublet_method"]),
        "doublet_threshold": float(dinfo["doublet_threshold"]),
        "sample_excluded": bool(srow["sample_excluded"]),
    }
    mdata.update()
    return mdata, summary


def _single_value(obs: pd.DataFrame, col: str, sample: str) -> str:
    if col not in obs or len(obs) == 0:
        return "NA"
    vals = obs[col].astype(str).unique()
    if len(vals) != 1:
        raise CartCohortError(f"sample {sample}: gex.obs[{col!r}] has several values "
                              f"{sorted(vals)}; one library must have one value")
    return str(vals[0])


def _check_raw_counts(gex: ad.AnnData, sample: str) -> None:
    x = gex.X
    data = x.data if sparse.issparse(x) else np.asarray(x).ravel()
    if data.size and (np.any(data < 0) or np.any(data != np.round(data))):
        raise CartCohortError(
            f"sample {sample}: gex.X does not hold raw integer UMI counts (negative or "
            "non-integer values). Fix: point the sample sheet at the raw count matrix")


# --------------------------------------------------------------------------- cohort


def combine_summaries(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Stack per-sample summaries into ``tables/qc_samples.tsv`` (sorted by sample).

    Excluded samples are logged as warnings.
    """
    if not tables:
        raise CartCohortError("no per-sample QC summaries to combine")
    out = pd.concat(list(tables), ignore_index=True, sort=False)
    dup = out["sample"][out["sample"].duplicated()].tolist()
    if dup:
        raise CartCohortError(f"QC summaries repeat samples {dup}")
    out = out.sort_values("sample", kind="mergesort").reset_index(drop=True)
    excl = out[_as_bool(out["sample_excluded"])]
    for _, r in excl.iterrows():
        logger.warning("sample %s excluded at QC: %s", r["sample"], r["exclusion_reason"])
    return out


def _as_bool(s: pd.Series) -> pd.Series:
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "yes"])


def included_samples(qc_samples: pd.DataFrame) -> list[str]:
    """Samples of ``tables/qc_samples.tsv`` that were NOT excluded at QC (sheet order kept)."""
    return qc_samples.loc[~_as_bool(qc_samples["sample_excluded"]), "sample"].astype(str).tolist()


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
        One row per quantity: ``n_low_quality``, ``recall_low_quality`` (share
        removed), ``n_doublets``, ``recall_doublets``, ``recall_doublets_scrublet``,
        ``recall_doublets_tcr`` (removed by a TCR reason),
        ``recall_doublets_tcr_multichain``, ``recall_doublets_tcr_dual_vdj`` (flagged),
        ``recall_doublets_metrics``, ``n_good``,
        ``good_kept`` (share of good cells that pass), ``precision_removed`` —
        columns ``quantity``, ``value``.
    """
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
