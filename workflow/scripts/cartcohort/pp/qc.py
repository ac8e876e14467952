"""Per-sample quality control: the pass decision of every cell and the QC summaries.

Every cell is kept; QC only *annotates* ``gex.obs`` with ``qc_*`` columns and
``qc_pass``. Downstream steps subset on ``qc_pass`` and skip samples whose row in
``tables/qc_samples.tsv`` has ``sample_excluded`` true. The metrics and their
thresholds come from :mod:`cartcohort.pp.metrics`, the doublet evidence from
:mod:`cartcohort.pp.doublets`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import CartCohortError
from ._utils import as_bool, is_number
from .doublets import (
    CHAIN_PAIRINGS,
    DOUBLET_DEFAULTS,
    annotate_chain_qc,
    resolve_doublet_settings,
    score_doublets,
    tcr_flags,
)
from .metrics import (
    FIXED_DEFAULTS,
    METRICS,
    MadScale,
    QCMode,
    compute_thresholds,
    flag_cells,
    mito_genes,
    qc_metrics,
)

logger = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------- decision


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
    """Cells x :data:`REASONS` booleans: which reasons remove each cell.

    Returns
    -------
    pandas.DataFrame
        One bool column per reason, indexed like ``flags``.
    """
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


# --------------------------------------------------------------------------- summary


def _pairing_col(p: str) -> str:
    return "n_chain_" + p.lower().replace(" ", "_")


def _exclusion_reason(n_in: int, n_out: int, excluded: bool, min_cells_per_sample: int) -> str:
    if n_in == 0:
        return "no cells in the input"
    if excluded:
        return (f"{n_out} of {n_in} cells pass QC "
                f"(< qc.min_cells_per_sample={min_cells_per_sample})")
    return ""


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
    mode: QCMode,
    n_mito_genes: int,
    notes: Sequence[str] = (),
) -> pd.DataFrame:
    """One-row summary of the QC of one sample.

    Returns
    -------
    pandas.DataFrame
        One row: ``sample, compartment, n_cells_in, n_cells_out, n_removed_total``,
        ``n_removed_<reason>`` (a cell failing two reasons counts in both),
        ``n_flagged_tcr_multichain``, ``n_flagged_tcr_dual_vdj`` (flagged whether or
        not the flag removes cells), ``median_<metric>`` (all cells) and
        ``median_<metric>_pass`` (passing cells), ``lower_<metric>``/``upper_<metric>``
        (NA: side not bounded), ``mad_<metric>``, ``qc_mode``, ``n_mito_genes``,
        ``doublet_method``, ``doublet_threshold``, ``doublet_note``,
        ``tcr_multichain_fails``, ``tcr_dual_vdj_fails``, ``has_tcr``,
        ``n_chain_<pairing>``, ``sample_excluded``, ``exclusion_reason``, ``notes``.
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
    row["exclusion_reason"] = _exclusion_reason(n_in, n_out, excluded, min_cells_per_sample)
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
    mode: QCMode = "mad",
    n_mads: float = 5,
    n_mads_mito: float = 3,
    mad_scale: MadScale = "normal",
    max_pct_mito: float = 20,
    min_cells_per_sample: int = 50,
    mito_prefix: str | Sequence[str] = "MT-",
    fixed: Mapping[str, float | None] = FIXED_DEFAULTS,
    doublets: Mapping[str, Any] = DOUBLET_DEFAULTS,
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
        ``min_cells``; keys not given take :data:`~cartcohort.pp.doublets.DOUBLET_DEFAULTS`
        (see :func:`~cartcohort.pp.doublets.resolve_doublet_settings`).

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
    mode: QCMode,
    n_mads: float,
    n_mads_mito: float,
    mad_scale: MadScale,
    max_pct_mito: float,
    min_cells_per_sample: int,
    mito_prefix: str | Sequence[str],
    fixed: Mapping[str, float | None],
    doublets: Mapping[str, Any],
) -> tuple[Any, pd.DataFrame]:
    gex = mdata.mod["gex"]
    compartment = _single_value(gex.obs, "compartment", sample)
    dbl = resolve_doublet_settings(doublets)
    _check_raw_counts(gex, sample)
    notes: list[str] = []

    metrics = qc_metrics(gex, mito_prefix=mito_prefix)
    n_mito = _count_mito_genes(gex, mito_prefix=mito_prefix, sample=sample, notes=notes)
    thresholds = compute_thresholds(metrics, mode=mode, n_mads=n_mads, n_mads_mito=n_mads_mito,
                                    mad_scale=mad_scale, max_pct_mito=max_pct_mito, fixed=fixed)
    for m in METRICS:
        if thresholds.at[m, "note"].startswith("MAD=0"):
            logger.warning("sample %s, %s: %s", sample, m, thresholds.at[m, "note"])
    flags = flag_cells(metrics, thresholds)
    doublet_calls, dinfo = _expression_doublets(gex, ~flags.any(axis=1).to_numpy(), dbl,
                                                seed=seed, sample=sample)
    has_tcr, tcr = _tcr_evidence(mdata, gex.obs_names, sample=sample, notes=notes)

    obs = gex.obs.copy()
    for col in list(obs.columns):
        if col.startswith("qc_"):
            del obs[col]
    obs = obs.join(metrics).join(flags)
    obs["qc_doublet_score"] = doublet_calls["qc_doublet_score"]
    obs["qc_is_doublet"] = doublet_calls["qc_is_doublet"]
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
    _log_outcome(summary.iloc[0], sample)
    gex.uns["qc"] = _qc_uns(mode=mode, mad_scale=mad_scale, thresholds=thresholds, dbl=dbl,
                            dinfo=dinfo, sample_excluded=summary.iloc[0]["sample_excluded"])
    mdata.update()
    return mdata, summary


def _count_mito_genes(
    gex: ad.AnnData, *, mito_prefix: str | Sequence[str], sample: str, notes: list[str]
) -> int:
    """Number of mitochondrial genes; none (with genes present) is logged and noted."""
    n_mito = int(mito_genes(gex.var_names, mito_prefix=mito_prefix).sum())
    if n_mito == 0 and gex.n_vars:
        msg = (f"no mitochondrial genes match prefix {mito_prefix!r}: % mito is 0 for every cell. "
               "Fix: set qc.mito_prefix if the genes are named differently")
        logger.warning("sample %s: %s", sample, msg)
        notes.append(msg)
    return n_mito


def _expression_doublets(
    gex: ad.AnnData, metric_pass: np.ndarray, dbl: Mapping[str, Any], *, seed: int, sample: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Scrublet on the cells passing the metric filters, spread back over every cell."""
    scored, dinfo = score_doublets(
        gex[metric_pass], method=dbl["method"], threshold=dbl["threshold"], seed=seed,
        expected_rate=dbl["expected_rate"], sim_doublet_ratio=dbl["sim_doublet_ratio"],
        min_cells=int(dbl["min_cells"]), sample=sample,
    )
    dscore = pd.Series(np.nan, index=gex.obs_names)
    dcall = pd.Series(False, index=gex.obs_names, dtype=bool)
    dscore.loc[scored.index] = scored["qc_doublet_score"].to_numpy()
    dcall.loc[scored.index] = scored["qc_is_doublet"].to_numpy()
    return pd.DataFrame({"qc_doublet_score": dscore, "qc_is_doublet": dcall}), dinfo


def _tcr_evidence(
    mdata: Any, cells: pd.Index, *, sample: str, notes: list[str]
) -> tuple[bool, pd.DataFrame]:
    """Chain QC of the ``airr`` modality (annotated in place) and the TCR flags of ``cells``."""
    airr = mdata.mod.get("airr")
    has_tcr = airr is not None
    if has_tcr:
        airr = annotate_chain_qc(airr)
        mdata.mod["airr"] = airr
    else:
        msg = "no TCR data (no 'airr' modality): chain pairing is 'no IR', no TCR doublet evidence"
        logger.warning("sample %s: %s", sample, msg)
        notes.append(msg)
    return has_tcr, tcr_flags(airr, cells=cells)


def _log_outcome(srow: pd.Series, sample: str) -> None:
    if srow["sample_excluded"]:
        logger.warning("sample %s is EXCLUDED from cohort analyses: %s", sample,
                       srow["exclusion_reason"])
    logger.info("sample %s: %d of %d cells pass QC (removed: %s)", sample, srow["n_cells_out"],
                srow["n_cells_in"], ", ".join(f"{r}={srow[f'n_removed_{r}']}" for r in REASONS))


def _qc_uns(
    *,
    mode: QCMode,
    mad_scale: MadScale,
    thresholds: pd.DataFrame,
    dbl: Mapping[str, Any],
    dinfo: Mapping[str, Any],
    sample_excluded: bool,
) -> dict[str, Any]:
    """``gex.uns['qc']``: the thresholds and settings applied to the library."""
    return {
        "mode": mode,
        "mad_scale": mad_scale,
        "thresholds": {m: {"lower": float(thresholds.at[m, "lower"]),
                           "upper": float(thresholds.at[m, "upper"])} for m in METRICS},
        "doublets": {k: (str(v) if isinstance(v, str) else float(v) if is_number(v) else bool(v))
                     for k, v in dbl.items()},
        "doublet_method": str(dinfo["doublet_method"]),
        "doublet_threshold": float(dinfo["doublet_threshold"]),
        "sample_excluded": bool(sample_excluded),
    }


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
    """Stack per-sample summaries into ``tables/qc_samples.tsv``.

    Excluded samples are logged as warnings.

    Returns
    -------
    pandas.DataFrame
        The rows of ``tables``, sorted by sample.

    Raises
    ------
    CartCohortError
        No summaries, or a sample in several of them.
    """
    if not tables:
        raise CartCohortError("no per-sample QC summaries to combine")
    out = pd.concat(list(tables), ignore_index=True, sort=False)
    dup = out["sample"][out["sample"].duplicated()].tolist()
    if dup:
        raise CartCohortError(f"QC summaries repeat samples {dup}")
    out = out.sort_values("sample", kind="mergesort").reset_index(drop=True)
    excl = out[as_bool(out["sample_excluded"])]
    for _, r in excl.iterrows():
        logger.warning("sample %s excluded at QC: %s", r["sample"], r["exclusion_reason"])
    logger.info("%d samples, %d excluded at QC", len(out), len(excl))
    return out


def included_samples(qc_samples: pd.DataFrame) -> list[str]:
    """Samples of ``tables/qc_samples.tsv`` that were NOT excluded at QC (sheet order kept).

    Returns
    -------
    list of str
        The sample ids, in the order of ``qc_samples``.
    """
    return qc_samples.loc[~as_bool(qc_samples["sample_excluded"]), "sample"].astype(str).tolist()
