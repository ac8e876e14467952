"""Doublet evidence of one library: Scrublet on expression, scirpy chain QC on the TCR.

* Doublets from expression: scanpy's Scrublet on the cells that pass the metric
  filters (low-quality cells distort the simulated doublets), seeded, with an exact
  kNN search. The ``auto`` threshold is Scrublet's own (minimum between the two modes
  of the simulated-doublet score histogram, ``skimage.filters.threshold_minimum``,
  ported here). If it cannot be found, or would call more than
  :data:`AUTO_MAX_RATE_FACTOR` times the expected doublet rate (on small libraries the
  histogram can lack a doublet mode and the "minimum" falls inside the singlets: 76 % of
  a 317-cell demo library), no expression doublets are called and the summary says so.
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
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import CartCohortError, InputError, Problem
from ._utils import as_csr, is_number

logger = logging.getLogger(__name__)

#: ``qc.doublets.method`` choices.
DoubletMethod = Literal["scrublet", "none"]

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

#: Doublet settings of ``qc.doublets`` (without ``per_compartment``, which the
#: workflow merges per library) and their defaults, as in the config schema.
DOUBLET_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "method": "scrublet",
    "threshold": "auto",
    "tcr_multichain": True,
    "tcr_dual_vdj": True,
    "expected_rate": 0.05,
    "sim_doublet_ratio": 2.0,
    "min_cells": 100,
})


# --------------------------------------------------------------------------- settings


def resolve_doublet_settings(
    doublets: Mapping[str, Any],
    *,
    source: str = "config qc.doublets",
) -> dict[str, Any]:
    """Check the doublet settings of one library and fill the ones not given.

    Parameters
    ----------
    doublets
        Any of the keys of :data:`DOUBLET_DEFAULTS` (the workflow passes all of
        them, with the library's compartment override already merged).
    source
        Where the settings come from, for error messages.

    Returns
    -------
    dict
        ``method``, ``threshold`` (``'auto'`` or float), ``tcr_multichain``,
        ``tcr_dual_vdj``, ``expected_rate``, ``sim_doublet_ratio``, ``min_cells``.

    Raises
    ------
    InputError
        Unknown keys or values out of range (all problems at once).
    """
    settings = dict(DOUBLET_DEFAULTS)
    settings.update(doublets)
    problems: list[Problem] = []

    def bad(key: str, what: str, fix: str) -> None:
        problems.append(Problem(source, f"key {key!r}", what, fix))

    for key in settings:
        if key not in DOUBLET_DEFAULTS:
            bad(key, "unknown doublet setting", f"use one of {', '.join(DOUBLET_DEFAULTS)}")
    if settings["method"] not in ("scrublet", "none"):
        bad("method", f"{settings['method']!r} is not a doublet method", "use 'scrublet' or 'none'")
    thr = settings["threshold"]
    if thr != "auto" and not (is_number(thr) and 0 <= thr <= 1):
        bad("threshold", f"{thr!r} is neither 'auto' nor a score",
            "use 'auto' or a number in [0, 1]")
    for key in ("tcr_multichain", "tcr_dual_vdj"):
        if not isinstance(settings[key], bool | np.bool_):
            bad(key, f"{settings[key]!r} is not true/false", "use true or false")
    rate = settings["expected_rate"]
    if not (is_number(rate) and 0 < rate < 1):
        bad("expected_rate", f"{rate!r} is not a rate", "use a number in (0, 1), e.g. 0.05")
    ratio = settings["sim_doublet_ratio"]
    if not (is_number(ratio) and ratio > 0):
        bad("sim_doublet_ratio", f"{ratio!r} is not > 0", "use a positive number, e.g. 2")
    if not (is_number(settings["min_cells"]) and settings["min_cells"] >= 31):
        bad("min_cells", f"{settings['min_cells']!r} is too small",
            "use an integer >= 31 (Scrublet uses 30 principal components)")
    if problems:
        raise InputError(problems)
    if thr != "auto":
        settings["threshold"] = float(thr)
    return settings


# --------------------------------------------------------------------------- expression


#: An automatic Scrublet threshold that calls more than this many times
#: ``expected_rate`` of the cells doublets is refused (see the module docstring).
AUTO_MAX_RATE_FACTOR = 3.0


def threshold_minimum(values: np.ndarray, *, nbins: int = 256, max_num_iter: int = 10000) -> float:
    """Scrublet's automatic threshold: the minimum between the two histogram modes.

    A port of ``skimage.filters.threshold_minimum`` (Glasbey 1993), which
    Scrublet uses on the simulated-doublet scores; ported so the step does not
    need scikit-image.

    Returns
    -------
    float
        The centre of the histogram bin with the fewest counts between the two modes.

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


def _scrublet(
    gex: ad.AnnData,
    *,
    threshold: float | str,
    seed: int,
    expected_rate: float,
    sim_doublet_ratio: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Scrublet scores of the cells and of the simulated doublets (exact kNN)."""
    import scanpy as sc

    sub = ad.AnnData(X=as_csr(gex.X).astype(np.float32),
                     obs=pd.DataFrame(index=gex.obs_names.copy()),
                     var=pd.DataFrame(index=gex.var_names.copy()))
    # scanpy's auto threshold needs scikit-image; pass a placeholder (its calls are
    # replaced by the caller) and find the threshold with the port of threshold_minimum.
    placeholder = 0.0 if threshold == "auto" else float(threshold)
    # Exact kNN: scanpy switches to pynndescent above 4,096 points (cells + simulated
    # doublets), whose numba JIT costs ~30 s in every fresh process - far more than the
    # exact search on one library - and adds approximation noise to the scores.
    sc.pp.scrublet(sub, threshold=placeholder, random_state=int(seed),
                   expected_doublet_rate=float(expected_rate),
                   sim_doublet_ratio=float(sim_doublet_ratio), use_approx_neighbors=False,
                   verbose=False)
    score = sub.obs["doublet_score"].to_numpy(dtype=np.float64)
    return score, sub.uns["scrublet"]["doublet_scores_sim"]


def _auto_threshold(score: np.ndarray, simulated: np.ndarray, *,
                    expected_rate: float) -> tuple[float, str]:
    """Scrublet's automatic threshold, or NaN and why it is refused."""
    try:
        thr = threshold_minimum(simulated)
    except CartCohortError as err:
        return np.nan, str(err)
    share = float(np.mean(np.nan_to_num(score, nan=-np.inf) > thr))
    if share > AUTO_MAX_RATE_FACTOR * expected_rate:
        return np.nan, (f"its threshold {thr:.3g} would call {100 * share:.0f} % of the cells "
                        f"doublets, more than {AUTO_MAX_RATE_FACTOR:g} x "
                        f"qc.doublets.expected_rate={expected_rate:g}: the simulated-doublet "
                        "score histogram has no separate doublet mode")
    return thr, ""


def score_doublets(
    gex: ad.AnnData,
    *,
    method: DoubletMethod = "scrublet",
    threshold: float | Literal["auto"] = "auto",
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
    score, simulated = _scrublet(gex, threshold=threshold, seed=seed, expected_rate=expected_rate,
                                 sim_doublet_ratio=sim_doublet_ratio)
    scores["qc_doublet_score"] = score
    if threshold == "auto":
        thr, failure = _auto_threshold(score, simulated, expected_rate=expected_rate)
        if failure:
            info["doublet_note"] = (f"Scrublet auto threshold failed ({failure}); no expression "
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
    from .._utils import load_scirpy

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
    """Chain pairing of every cell and the TCR doublet flags.

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
