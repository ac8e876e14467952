"""TCR contigs on the published entry point: clonotypes of the libraries that have them.

A sample-sheet row may give a ``vdj`` file (10x ``filtered_contig_annotations.csv``,
``all_contig_annotations.json`` or an AIRR rearrangement TSV) for a library of the
authors' cell table. Its contigs are read as on the full path
(:func:`cartcohort.io.read_tcr`: TCR chains of high-confidence cells, BCR dropped) and
matched to the table's cells of that library by the full path's barcode rule
(:func:`cartcohort.sheets.match_barcodes`: the table's id without its ``<sample>_``
prefix, a ``-1`` suffix missing on one side tolerated). Clonotypes are then defined
within each patient exactly as rule ``clonotypes`` does
(:func:`cartcohort.tl.clonotypes.define_clonotypes`), and each cell gets its
``clone_id`` and ``clone_size``; rule ``repertoire`` runs on the cells table as on the
full path. Libraries without contigs keep ``clone_id`` empty; their clonal and
repertoire features are left NA (never 0), which ``warnings.tsv`` says.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .errors import InputError, Problem

logger = logging.getLogger(__name__)

#: Keys of the clonotype definition (config ``clonotypes``) the step uses.
CLONOTYPE_KEYS: tuple[str, ...] = (
    "receptor_arms", "dual_ir", "sequence", "metric", "cutoff", "clusters",
)
#: Barcodes listed in an error message.
MAX_SHOWN = 5


@dataclass
class PublishedClones:
    """What :func:`published_clonotypes` returns.

    Attributes
    ----------
    cells
        The cells table with ``clone_id`` and ``clone_size`` (NA without a clone).
    tcr_samples
        The libraries with contigs (their clonal features are computed).
    warnings
        Rows of ``warnings.tsv`` (step ``import``).
    """

    cells: pd.DataFrame
    tcr_samples: list[str]
    warnings: list[dict[str, Any]]


def _bare_ids(cells: pd.DataFrame, sample: str) -> list[str]:
    """The table's ids of a library without the ``<sample>_`` prefix (the barcodes)."""
    prefix = f"{sample}_"
    ids = cells.loc[cells["sample"] == sample, "cell"].astype(str)
    return [c.removeprefix(prefix) for c in ids]


def library_airr(path: str | os.PathLike, *, sample: str, cells: pd.DataFrame) -> Any:
    """The contigs of one library matched to its cells of the authors' table.

    Parameters
    ----------
    path
        The library's ``vdj`` file.
    sample
        The library.
    cells
        The imported cells table (``cell`` ids ``<sample>_<barcode>``, ``sample``,
        ``patient``, ``timepoint``, ``timepoint_day``).

    Returns
    -------
    AnnData
        scirpy AIRR AnnData of the matched cells (obs names the table's cell ids, obs
        ``patient, sample, timepoint, timepoint_day``).

    Raises
    ------
    InputError
        No contig barcode matches a cell of the library: the first contig barcodes and
        table ids, and the fix.
    """
    from .io import read_tcr

    bare = _bare_ids(cells, sample)
    airr = read_tcr(path, sample=sample, barcodes=bare)
    n_out = int(airr.uns["cartcohort_load"].get("n_tcr_without_gex", 0))
    if airr.n_obs == 0:
        contigs = list(read_tcr(path, sample=sample).obs["barcode"].astype(str))
        raise InputError([Problem(
            str(path), f"library '{sample}' (sample sheet column vdj)",
            f"none of its {len(contigs)} TCR cell barcodes (first: {contigs[:MAX_SHOWN]}) "
            f"is a cell id of the published table's library (first: {bare[:MAX_SHOWN]})",
            "give this library's own contig file, or make the table's cell ids its "
            "barcodes ('<barcode>' or '<sample>_<barcode>'; published.cell_column names "
            "the column)")])
    if n_out:
        logger.warning("%s: %d TCR cell(s) are not cells of the published table; left out",
                       sample, n_out)
    meta = cells.set_index("cell").loc[airr.obs_names]
    for col in ("patient", "sample", "timepoint"):
        airr.obs[col] = meta[col].astype(str).to_numpy()
    airr.obs["timepoint_day"] = pd.to_numeric(meta["timepoint_day"], errors="coerce").to_numpy(
        dtype=float)
    airr.obs = airr.obs.drop(columns=["barcode"])
    airr.uns = {k: v for k, v in airr.uns.items() if k == "scirpy_version"}
    return airr


def published_clonotypes(
    cells: pd.DataFrame,
    *,
    vdj: Mapping[str, str | os.PathLike],
    clonotypes: Mapping[str, Any],
    n_jobs: int = 1,
) -> PublishedClones:
    """Clonotypes of the libraries with contigs, onto the imported cells.

    Parameters
    ----------
    cells
        The imported cells table (:func:`cartcohort.published.import_cells`).
    vdj
        Library -> its ``vdj`` file (libraries of the sheet that give one).
    clonotypes
        The clonotype definition (:data:`CLONOTYPE_KEYS` of config ``clonotypes``), as
        :func:`cartcohort.tl.clonotypes.cohort_clonotypes`.
    n_jobs
        Workers for scirpy.

    Returns
    -------
    PublishedClones
        The cells with ``clone_id``/``clone_size``, the libraries with contigs and the
        warning rows.
    """
    from .tl.annotate.pooling import cell_clones
    from .tl.clonotypes import define_clonotypes

    samples = [s for s in pd.unique(cells["sample"]) if s in vdj]
    out = cells.copy()
    if samples:
        parts = [library_airr(vdj[s], sample=s, cells=cells) for s in samples]
        result = define_clonotypes(parts, samples=samples, n_jobs=n_jobs,
                                   **{k: clonotypes[k] for k in CLONOTYPE_KEYS})
        clone, size = cell_clones(pd.Index(out["cell"]), result.airr)
        out["clone_id"] = clone.to_numpy()
        out["clone_size"] = size.to_numpy()
    return PublishedClones(out, samples, _warnings(cells, samples))


def _warnings(cells: pd.DataFrame, tcr_samples: Sequence[str]) -> list[dict[str, Any]]:
    without = [s for s in pd.unique(cells["sample"]) if s not in set(tcr_samples)]
    if not without:
        return []
    n = int(cells["sample"].isin(without).sum())
    return [{
        "sample": "", "step": "import", "check": "no_tcr", "count": n,
        "detail": f"{len(without)} librar{'ies' if len(without) != 1 else 'y'} "
        f"({', '.join(without[:MAX_SHOWN])}{' ...' if len(without) > MAX_SHOWN else ''}) "
        "have no TCR contigs (sample sheet column vdj empty) and the published table "
        "gives no clonotypes (published.clone_column empty): their clonal and repertoire "
        "features (tcr_fraction, clonal diversity, top and expanded clone fractions, "
        "rep_*) are skipped (NA)",
        "action": "give the library's contig file in the sheet's vdj column, or name the "
        "table's clonotype column in published.clone_column",
    }]
