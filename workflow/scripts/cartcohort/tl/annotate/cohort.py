"""The annotation's products: the per-cell table and the final cohort MuData."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import anndata as ad
import pandas as pd

from ...errors import CartCohortError

if TYPE_CHECKING:
    import mudata

logger = logging.getLogger(__name__)

#: Columns of ``cells.tsv.gz`` (DESIGN.md), before the ``score_<state>`` columns.
CELL_COLUMNS: tuple[str, ...] = (
    "cell", "sample", "patient", "timepoint", "timepoint_day", "compartment", "batch", "sort",
    "cd4_cd8", "cd4_cd8_cell", "cd4_cd8_naive", "state", "state_confidence", "lineage_state",
    "car_positive", "car_positive_cell", "car_positive_naive", "car_umis", "pd1_pos",
    "tim3_pos", "lag3_pos", "triple_pos", "clone_id", "clone_size", "leiden",
)


def cells_table(gex: ad.AnnData) -> pd.DataFrame:
    """The per-cell table of DESIGN.md from an annotated AnnData.

    Metadata columns absent from ``obs`` (e.g. ``sort``) are written as missing.

    Returns
    -------
    pandas.DataFrame
        :data:`CELL_COLUMNS`, then the ``score_<state>`` columns, then those of
        ``car_posterior``, ``cd4_cd8_source``, ``gd_posterior``, ``state_cell``,
        ``celltypist_label`` and ``celltypist_conf`` that ``obs`` holds; one row per cell
        in ``obs`` order.
    """
    obs = gex.obs
    df = pd.DataFrame({"cell": obs.index.astype(str)})
    for col in CELL_COLUMNS[1:]:
        if col in obs:
            v = obs[col]
            if isinstance(v.dtype, pd.CategoricalDtype):
                v = v.astype(object).where(v.notna(), None)
            df[col] = v.to_numpy()
        else:
            df[col] = pd.NA
    for col in [c for c in obs.columns if c.startswith("score_")]:
        df[col] = obs[col].to_numpy()
    for extra in ("car_posterior", "cd4_cd8_source", "gd_posterior", "state_cell",
                  "celltypist_label", "celltypist_conf"):
        if extra in obs:
            v = obs[extra]
            if isinstance(v.dtype, pd.CategoricalDtype):
                v = v.astype(object)
            df[extra] = v.to_numpy()
    return df


def attach_calls(gex: ad.AnnData, calls: ad.AnnData) -> ad.AnnData:
    """The integrated cohort with the annotation calls of rule ``annotate``.

    Parameters
    ----------
    gex
        Integrated cohort (:func:`cartcohort.tl.integrate.read_integrated`).
    calls
        ``results/annotate/calls.h5ad``: ``obs`` with every call and score (it
        replaces ``gex.obs``), ``uns`` and ``obsm`` entries added by annotation.

    Returns
    -------
    AnnData
        ``gex`` with the calls (modified in place and returned).
    """
    if not calls.obs_names.equals(gex.obs_names):
        raise CartCohortError(
            "the annotation calls and the integrated cohort hold different cells. Fix: "
            "re-run rules annotate and cohort together"
        )
    gex.obs = calls.obs.copy()
    gex.uns.update(dict(calls.uns))
    for key in calls.obsm:
        gex.obsm[key] = calls.obsm[key]
    return gex


def assemble_cohort(gex: ad.AnnData, *, calls: ad.AnnData, airr: ad.AnnData) -> mudata.MuData:
    """The final cohort (rule ``cohort``): expression with every call, and the AIRR data.

    Parameters
    ----------
    gex
        Integrated cohort with its UMAP (:func:`cartcohort.tl.integrate.read_integrated`
        with ``umap_path``).
    calls
        ``results/annotate/calls.h5ad`` (:attr:`AnnotationResult.calls`).
    airr
        scirpy AIRR AnnData of the cohort.

    Returns
    -------
    mudata.MuData
        ``gex`` (counts layer, log-normalised X, embeddings, graph, UMAP, every
        call in obs) and ``airr`` restricted to the cells of ``gex``.
    """
    import mudata as md

    gex = attach_calls(gex, calls)
    airr = airr[airr.obs_names.isin(gex.obs_names)].copy()
    logger.info("cohort: %d cells x %d genes, %d with AIRR data", gex.n_obs, gex.n_vars,
                airr.n_obs)
    md.set_options(pull_on_update=False)
    return md.MuData({"gex": gex, "airr": airr})


def write_cohort(cohort: mudata.MuData, *, out_path: str | os.PathLike,
                 merged_path: str | os.PathLike, block_rows: int = 10_000) -> None:
    """Write ``results/cohort.h5mu`` element by element: ``cohort`` without the
    expression matrices (:func:`assemble_cohort` of
    ``read_integrated(..., matrices=False)``), then ``X`` and ``layers['counts']`` of the
    ``gex`` modality copied from ``merged.h5ad`` a block of cells at a time (gzip), so
    the matrices are never held in memory. The file reads as the in-memory cohort would.

    Parameters
    ----------
    cohort
        The cohort without ``gex.X`` and without layers.
    out_path
        ``results/cohort.h5mu``; written as ``<out_path>.partial`` and renamed when
        complete (removed on error).
    merged_path
        ``results/integrate/merged.h5ad`` of the same cells (rule ``merge_samples``).
    block_rows
        Cells copied at a time.
    """
    import h5py
    from anndata.io import read_elem

    from ...h5csr import copy_csr

    gex = cohort["gex"]
    if gex.X is not None or len(gex.layers):
        raise ValueError("write_cohort expects the cohort without its matrices")
    out = Path(out_path)
    partial = out.with_name(out.name + ".partial")
    try:
        cohort.write(partial, compression="gzip")
        with h5py.File(merged_path, "r") as src, h5py.File(partial, "r+") as dst:
            names = read_elem(src["obs"]).index
            if not names.equals(gex.obs_names) or not read_elem(src["var"]).index.equals(
                    gex.var_names):
                raise CartCohortError(
                    f"{merged_path}: its cells or genes differ from the cohort's. Fix: "
                    "re-run the workflow from merge_samples")
            mod = dst["mod/gex"]
            if "X" in mod:  # mudata writes an absent X as a null dataset
                del mod["X"]
            copy_csr(src["X"], mod, "X", block_rows=block_rows)
            copy_csr(src["layers/counts"], mod["layers"], "counts", block_rows=block_rows)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
