"""Load one library (GEX [+ TCR] [+ antibody capture]) into a MuData, with its load
summary and its warnings (what was carried through: features kept out of the RNA
matrix, a CAR the sample sheet says the library lacks); stack the per-library load
summaries into ``tables/load_samples.tsv``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import CartCohortError, InputError, Problem
from ..sheets import WARNING_COLUMNS, warning_row
from ..tables import TABLES
from .gex import FeatureReport, read_library
from .tcr import read_tcr

logger = logging.getLogger(__name__)

#: Obs columns taken from the sample-sheet row (DESIGN.md), in order.
OBS_META = ("sample", "patient", "timepoint", "timepoint_day", "compartment", "batch", "sort")
#: Columns of a library's load summary and of ``tables/load_samples.tsv``.
SUMMARY_COLUMNS = TABLES["load_samples"].columns

PathLike = str | os.PathLike


class LoadedSample(NamedTuple):
    """What :func:`load_sample` returns (unpack it as three values)."""

    #: The library: ``gex`` [+ ``airr``] [+ ``prot``].
    mdata: Any
    #: One row with :data:`SUMMARY_COLUMNS` (``results/load/{sample}.summary.tsv``).
    summary: pd.DataFrame
    #: Rows of ``warnings.tsv`` (``results/load/{sample}.warnings.tsv``; none: no row).
    warnings: pd.DataFrame


def feature_warnings(sample: str, report: FeatureReport, *, n_cells: int) -> list[dict[str, Any]]:
    """The warning rows of a library's features (step ``load``).

    Parameters
    ----------
    sample
        Sample id.
    report
        What :func:`~.gex.read_library` did with the library's features.
    n_cells
        The library's cells.

    Returns
    -------
    list of dict
        :func:`cartcohort.sheets.warning_row` rows, by check: ``car_feature_absent``
        (the CAR features the library lacks; the sample sheet says it may) and
        ``non_gex_features`` (features that are not Gene Expression, kept out of
        the RNA matrix).
    """
    rows = []
    if report.car_missing:
        missing = ", ".join(f"'{c}'" for c in report.car_missing)
        rows.append(
            warning_row(
                sample=sample,
                step="load",
                check="car_feature_absent",
                count=n_cells,
                detail=f"the library lacks the CAR feature(s) {missing} of config car_features "
                f"(the sample sheet says car_expected: false): its {n_cells} cells have no "
                "CAR counts, so none is called CAR+",
                action="nothing to do if the library has no CAR+ cells (e.g. an unsorted "
                "pre-infusion sample); otherwise map it to a reference that includes the "
                "CAR sequence and set car_expected back to true",
            )
        )
    n_apart, n_out = sum(report.kept_apart.values()), sum(report.left_out.values())
    if n_apart or n_out:
        parts = [f"{k} ({v}, kept as modality 'prot')" for k, v in report.kept_apart.items()]
        parts += [f"{k} ({v}, not loaded)" for k, v in report.left_out.items()]
        rows.append(
            warning_row(
                sample=sample,
                step="load",
                check="non_gex_features",
                count=n_apart + n_out,
                detail=f"{n_apart + n_out} features that are not Gene Expression were kept "
                f"out of the RNA matrix: {'; '.join(parts)}",
                action="nothing to do if the library was made with these feature barcodes: "
                "the RNA analysis uses the Gene Expression features (and config "
                "car_features) only"
                + (
                    f"; the antibody counts are in results/load/{sample}.h5mu, modality 'prot'"
                    if n_apart
                    else ""
                ),
            )
        )
    return rows


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
    car_expected: bool = True,
) -> LoadedSample:
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
    car_expected
        Whether the library must hold every ``car_features`` entry (sample-sheet
        column ``car_expected``); when false, a library without them is loaded
        and reported in ``warnings``.

    Returns
    -------
    LoadedSample
        ``mdata``: the MuData (``airr`` holds only TCR cells that have a GEX
        cell). ``summary``: a one-row table with :data:`SUMMARY_COLUMNS`: the
        sample, its GEX cells, TCR cells, GEX cells with a TCR, TCR cells without
        a GEX cell and the BCR contigs dropped. ``warnings``: rows with
        :data:`~cartcohort.sheets.WARNING_COLUMNS` (:func:`feature_warnings`).

    Raises
    ------
    InputError
        For unreadable inputs, TCR cells none of which has a GEX cell, and a
        CAR feature the library lacks while ``car_expected``.
    """
    import mudata as md

    vdj_path = _single_path(vdj_path)
    gex, prot, features = read_library(
        gex_path, sample=sample, car_features=car_features, car_expected=car_expected
    )
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
    warnings = feature_warnings(sample, features, n_cells=gex.n_obs)
    return LoadedSample(
        mdata,
        pd.DataFrame([summary], columns=list(SUMMARY_COLUMNS)),
        pd.DataFrame(warnings, columns=list(WARNING_COLUMNS)),
    )


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
