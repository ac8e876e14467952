"""Rule ``protein``: surface-protein evidence of every library that has an ADT panel.

For each library whose ``results/load/{sample}.h5mu`` holds a ``prot`` modality:
panel mapping, ADT QC and dsb/CLR normalisation (:func:`cartcohort.pp.prot.protein_library`,
the raw matrix found beside the GEX input by :func:`cartcohort.io.adt.raw_matrix_beside`),
then the protein calls beside the RNA calls of rule ``annotate``
(:func:`~.protein.protein_calls`). Libraries without a panel are listed with
``method`` ``none``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import pandas as pd

from ...io.adt import raw_matrix_beside, read_empty_droplets
from ...pp.prot import ProteinLibrary, load_alias_table, protein_library
from ...sheets import warning_row
from ...tables import WARNING_COLUMNS
from .protein import FIT_COLUMNS, load_gates, protein_calls

logger = logging.getLogger(__name__)

#: RNA columns of ``calls.h5ad`` the protein calls are combined with.
RNA_COLUMNS = ("cd4_cd8_cell", "cd4_cd8_confidence", "car_posterior", "car_positive_cell")
#: First columns of ``protein_cells.tsv.gz``.
CELL_COLUMNS = ("cell", "sample", "adt_total_counts", "adt_n_detected", "adt_isotype_counts",
                "adt_isotype_fraction", "adt_usable", "prot_t_cell")
#: Columns of ``protein_libraries.tsv``.
LIBRARY_COLUMNS = ("sample", "method", "n_cells", "n_usable", "n_antibodies", "n_mapped",
                   "n_isotype", "unmapped", "notes")


@dataclass
class ProteinStepResult:
    """Tables of rule ``protein``: ``cells`` (per cell QC and calls), ``libraries``,
    ``fits`` (per library and marker mixtures), ``agreement`` (protein vs RNA),
    ``warnings`` (rows of ``warnings.tsv``: unmapped antibodies, CLR instead of dsb,
    protein lineage skipped)."""

    cells: pd.DataFrame
    libraries: pd.DataFrame
    fits: pd.DataFrame
    agreement: pd.DataFrame
    warnings: pd.DataFrame


def _warnings(sample: str, lib: ProteinLibrary, notes: Sequence[str]) -> list[dict]:
    """Warning rows of one library (the notes a user should act on)."""
    rows = []
    panel = lib.panel
    unmapped = panel.loc[(panel["marker"] == "") & ~panel["isotype"], "antibody"].tolist()
    if unmapped:
        rows.append(warning_row(
            sample=sample, step="protein", check="adt_unmapped", count=len(unmapped),
            detail=f"antibodies not in the alias table (kept, not used for calls): "
                   f"{', '.join(unmapped)}",
            action="add them to protein.extra_aliases if they name a marker"))
    if lib.method == "clr":
        rows.append(warning_row(
            sample=sample, step="protein", check="adt_clr", count=len(lib.qc),
            detail=lib.notes[0], action="put the Cell Ranger raw_feature_bc_matrix beside "
            "the filtered one to get dsb (background-aware) values"))
    if any("lacks CD4 or CD8" in n for n in notes):
        rows.append(warning_row(
            sample=sample, step="protein", check="adt_no_lineage", count=len(lib.qc),
            detail="the ADT panel lacks CD4 or CD8: protein lineage skipped",
            action="nothing to do (the RNA lineage call stands)"))
    return rows


def has_prot(h5mu: str | os.PathLike) -> bool:
    """Whether a loaded library (``results/load/{sample}.h5mu``) has a ``prot`` modality."""
    with h5py.File(h5mu, "r") as f:
        return "mod" in f and "prot" in f["mod"]


def _one_library(sample: str, h5mu: str, gex_path: str, *, table, settings: Mapping,
                 car_adt: str, log10_range: tuple[float, float]) -> ProteinLibrary:
    import mudata

    prot = mudata.read_h5ad(h5mu, mod="prot")
    raw = raw_matrix_beside(gex_path)
    empty = None
    if raw is not None:
        empty = read_empty_droplets(raw, sample=sample, cell_barcodes=prot.obs["barcode"],
                                    antibodies=list(prot.var_names),
                                    log10_range=log10_range).X
        logger.info("%s: raw matrix %s, %d empty droplets", sample, raw, empty.shape[0])
    return protein_library(prot.X, cells=list(prot.obs_names),
                           antibodies=list(prot.var_names), empty_counts=empty, table=table,
                           library=sample, car_adt=car_adt, **settings)


def _library_row(sample: str, lib: ProteinLibrary | None, notes: Sequence[str]) -> dict:
    if lib is None:
        return {"sample": sample, "method": "none", "n_cells": 0, "n_usable": 0,
                "n_antibodies": 0, "n_mapped": 0, "n_isotype": 0, "unmapped": "",
                "notes": "no Antibody Capture features"}
    panel = lib.panel
    unmapped = panel.loc[(panel["marker"] == "") & ~panel["isotype"], "antibody"]
    return {"sample": sample, "method": lib.method, "n_cells": len(lib.qc),
            "n_usable": int(lib.qc["adt_usable"].sum()), "n_antibodies": len(panel),
            "n_mapped": int((panel["marker"] != "").sum()),
            "n_isotype": int(panel["isotype"].sum()), "unmapped": ";".join(unmapped),
            "notes": " | ".join(notes)}


def annotate_protein(h5mu: Sequence[str], *, gex: Sequence[str], calls: pd.DataFrame,
                     alias_table: str, gates: str,
                     extra_aliases: Mapping[str, Sequence[str]] | None = None,
                     car_adt: str = "", min_total_counts: int = 20, min_detected: int = 3,
                     max_isotype_fraction: float = 0.5, pseudocount: float = 10.0,
                     min_empty_droplets: int = 100,
                     empty_log10_range: Sequence[float] = (1.5, 3.0),
                     car_prior: float = 0.5) -> ProteinStepResult:
    """Protein evidence of every library (see the module docstring).

    Parameters
    ----------
    h5mu, gex
        Per library, in the same order: ``results/load/{sample}.h5mu`` (the sample is the
        file name's stem) and its GEX input (where the raw matrix is looked for).
    calls
        ``obs`` of ``results/annotate/calls.h5ad`` (RNA calls, index cell ids).
    alias_table, gates
        ``resources/protein/adt_aliases.yaml`` and ``resources/signatures/protein_gates.yaml``.
    extra_aliases
        Marker -> antibody names added to the alias table.
    car_adt
        The anti-CAR antibody's name in the panels (``''``: none).
    min_total_counts, min_detected, max_isotype_fraction
        ADT QC (:func:`cartcohort.pp.prot.adt_qc`).
    pseudocount, min_empty_droplets, empty_log10_range
        dsb settings and the empty droplets taken from the raw matrix.
    car_prior
        Prior P(CAR+) when combining the anti-CAR antibody and the transcript posterior.
    """
    table = load_alias_table(alias_table, extra_aliases=extra_aliases)
    gate_defs = load_gates(gates)
    settings = {"min_total": min_total_counts, "min_detected": min_detected,
                "max_isotype_fraction": max_isotype_fraction, "pseudocount": pseudocount,
                "min_empty_droplets": min_empty_droplets}
    lo, hi = (float(x) for x in empty_log10_range)
    rows, cells, fits, agree, warns = [], [], [], [], []
    for path, gex_path in zip(h5mu, gex, strict=True):
        sample = Path(path).name.removesuffix(".h5mu")
        if not has_prot(path):
            rows.append(_library_row(sample, None, []))
            continue
        lib = _one_library(sample, path, gex_path, table=table, settings=settings,
                           car_adt=car_adt, log10_range=(lo, hi))
        keep = lib.qc.index.isin(calls.index)
        rna = calls.reindex(lib.qc.index[keep])[[c for c in RNA_COLUMNS if c in calls]]
        res = protein_calls(lib.values[keep], library=[sample] * int(keep.sum()),
                            gates=gate_defs, car_marker="CAR" if car_adt else "", rna=rna,
                            car_prior=car_prior, usable=lib.qc["adt_usable"].to_numpy()[keep],
                            dsb=lib.method == "dsb")
        cell = pd.concat([lib.qc[keep], res.obs], axis=1)
        cell.insert(0, "sample", sample)
        cells.append(cell.rename_axis("cell").reset_index())
        fits.append(res.fits)
        agree.append(res.agreement)
        rows.append(_library_row(sample, lib, [*lib.notes, *res.notes]))
        warns += _warnings(sample, lib, res.notes)
    return ProteinStepResult(
        cells=pd.concat(cells, ignore_index=True) if cells else pd.DataFrame(
            columns=list(CELL_COLUMNS)),
        libraries=pd.DataFrame(rows, columns=list(LIBRARY_COLUMNS)),
        fits=pd.concat(fits, ignore_index=True) if fits else pd.DataFrame(
            columns=list(FIT_COLUMNS)),
        agreement=pd.concat(agree, ignore_index=True) if agree else pd.DataFrame(
            columns=["library", "call", "n_both", "agreement"]),
        warnings=pd.DataFrame(warns, columns=list(WARNING_COLUMNS)))


def check_car_adt_panels(car_adt: str, *, gex: Mapping[str, str]) -> None:
    """Refuse, before any job runs, an anti-CAR antibody absent from a library's panel
    (libraries without Antibody Capture features are not concerned)."""
    if not car_adt:
        return
    from ...io.adt import antibody_names
    from ...pp.prot import check_car_adt

    for sample, path in gex.items():
        names = antibody_names(path, sample=sample)
        if names:
            check_car_adt(car_adt, antibodies=names, setting="protein.car_adt",
                          where=f"library {sample} ({path})")
    logger.debug("car_adt %s found in every ADT panel", car_adt)
