"""Load one library (GEX [+ TCR] [+ antibody capture]) into a MuData, and stack the
per-library load summaries into ``tables/load_samples.tsv``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import CartCohortError, InputError, Problem
from ..tables import TABLES
from .gex import read_gex
from .tcr import read_tcr

logger = logging.getLogger(__name__)

#: Obs columns taken from the sample-sheet row (DESIGN.md), in order.
OBS_META = ("sample", "patient", "timepoint", "timepoint_day", "compartment", "batch", "sort")
#: Columns of a library's load summary and of ``tables/load_samples.tsv``.
SUMMARY_COLUMNS = TABLES["load_samples"].columns

PathLike = str | os.PathLike


def _meta_obs(index: pd.Index, meta: Mapping[str, Any], sample: str) -> pd.DataFrame:
    values: dict[str, Any] = {}
    for key in OBS_META:
        if key == "sample":
            values[key] = sample
        elif key == "timepoint_day":
            v = meta.get(key)
            try:
                values[key] = float(v) if v is not None and v != "" else np.nan
            except (TypeError, ValueError):
                raise CartCohortError(
                    f"sample {sample}: timepoint_day {v!r} is not a number. "
                    "Fix: correct the sample sheet."
                ) from None
        else:
            if key not in meta or meta[key] is None:
                raise CartCohortError(
                    f"sample {sample}: the sample-sheet row has no '{key}'. "
                    "Fix: pass the whole sample-sheet row as meta."
                )
            values[key] = str(meta[key])
    return pd.DataFrame({k: [v] * len(index) for k, v in values.items()}, index=index)


def _add_meta(adata: ad.AnnData, meta_obs: pd.DataFrame) -> None:
    m = meta_obs.reindex(adata.obs_names)
    for col in reversed(meta_obs.columns):
        if col in adata.obs:
            del adata.obs[col]
        adata.obs.insert(0, col, m[col].to_numpy())


def _single_path(value: PathLike | Sequence[PathLike] | None) -> PathLike | None:
    """A path given as itself or as a list of at most one (Snakemake's named input of
    a library without TCR is an empty list); ``None`` for none."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return value
    paths = list(value)
    if len(paths) > 1:
        raise CartCohortError(
            f"one TCR contig file per library, got {len(paths)}: {', '.join(map(str, paths))}. "
            "Fix: give one 'vdj' path per sample-sheet row."
        )
    return paths[0] if paths else None


def _tcr_modality(
    vdj_path: PathLike,
    *,
    sample: str,
    gex: ad.AnnData,
    gex_path: PathLike,
    summary: dict[str, Any],
) -> ad.AnnData:
    """The ``airr`` modality: TCR cells that have a GEX cell; ``summary`` updated."""
    airr = read_tcr(vdj_path, sample=sample, barcodes=gex.obs["barcode"].tolist())
    stats = airr.uns["cartcohort_load"]
    summary.update(
        n_tcr_barcodes=stats["n_tcr_barcodes"],
        n_gex_with_tcr=int(airr.n_obs),
        n_tcr_without_gex=stats["n_tcr_without_gex"],
        n_bcr_contigs_dropped=stats["n_bcr_contigs_dropped"],
    )
    if airr.n_obs == 0:
        raise InputError(
            [
                Problem(
                    str(vdj_path),
                    "",
                    f"none of its {stats['n_tcr_barcodes']} TCR cells has a GEX cell in "
                    f"{gex_path} (sample '{sample}')",
                    "pair the TCR and GEX files of the same library, or leave 'vdj' empty",
                )
            ]
        )
    if stats["n_tcr_without_gex"]:
        logger.info(
            "sample %s: %d TCR barcode(s) have no GEX cell and are left out",
            sample,
            stats["n_tcr_without_gex"],
        )
    return airr


def load_sample(
    *,
    sample: str,
    gex_path: PathLike,
    vdj_path: PathLike | Sequence[PathLike] | None,
    meta: Mapping[str, Any],
    car_features: Sequence[str],
) -> tuple[Any, pd.DataFrame]:
    """Load one library into a MuData (``gex`` [+ ``airr``] [+ ``prot``]).

    Parameters
    ----------
    sample
        Sample id.
    gex_path, vdj_path
        Inputs as accepted by :func:`read_gex` / :func:`read_tcr`; ``vdj_path``
        empty, ``None`` or an empty list for a library without TCR (a list of
        one path is that path).
    meta
        The sample-sheet row (``patient``, ``timepoint``, ``timepoint_day``,
        ``compartment``, ``batch``, ``sort``); copied into ``obs`` of every
        modality (strings; ``timepoint_day`` float, NaN when missing).
    car_features
        CAR feature names (config ``car_features``; see :func:`read_gex`).

    Returns
    -------
    mdata, summary
        The MuData (``airr`` holds only TCR cells that have a GEX cell) and a
        one-row table with :data:`SUMMARY_COLUMNS`: the sample, its GEX cells,
        TCR cells, GEX cells with a TCR, TCR cells without a GEX cell and the
        BCR contigs dropped.
    """
    import mudata as md

    vdj_path = _single_path(vdj_path)
    gex, prot = read_gex(gex_path, sample=sample, car_features=car_features)
    meta_obs = _meta_obs(gex.obs_names, meta, sample)
    _add_meta(gex, meta_obs)
    mods: dict[str, ad.AnnData] = {"gex": gex}
    summary = {
        "sample": sample,
        "n_gex_cells": int(gex.n_obs),
        "n_tcr_barcodes": 0,
        "n_gex_with_tcr": 0,
        "n_tcr_without_gex": 0,
        "n_bcr_contigs_dropped": 0,
    }
    if vdj_path:
        airr = _tcr_modality(vdj_path, sample=sample, gex=gex, gex_path=gex_path, summary=summary)
        _add_meta(airr, meta_obs)
        mods["airr"] = airr
    if prot is not None:
        _add_meta(prot, meta_obs)
        mods["prot"] = prot
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods)
    return mdata, pd.DataFrame([summary], columns=list(SUMMARY_COLUMNS))


def load_summary(summaries: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Stack the one-row load summaries of the libraries (rule ``load_summary``).

    Parameters
    ----------
    summaries
        The ``summary`` tables returned by :func:`load_sample`, as read back
        with :func:`cartcohort.tables.read_table` (sample ids as text).

    Returns
    -------
    pandas.DataFrame
        One row per library, in the order given, with :data:`SUMMARY_COLUMNS`.
    """
    return pd.concat(list(summaries), ignore_index=True)[list(SUMMARY_COLUMNS)]
