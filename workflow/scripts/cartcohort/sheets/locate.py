"""Where the GEX and TCR inputs of a library are, and what kind of input they are.

Accepted layouts are those Cell Ranger writes (``count``, ``multi``, legacy v2
folders), bare MatrixMarket folders, ``.h5``/``.h5ad`` files and contig tables.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

GexKind = Literal["h5", "mtx", "h5ad"]
VdjKind = Literal["10x_csv", "10x_json", "airr"]


def resolve_path(value: str, folder: Path) -> Path:
    """``value`` (``~`` and ``$VARS`` expanded) as an absolute path, relative to ``folder``."""
    p = Path(os.path.expandvars(os.path.expanduser(value)))
    if not p.is_absolute():
        p = folder / p
    return Path(os.path.normpath(os.path.abspath(p)))


class LocateError(Exception):
    """A GEX/TCR path whose layout is not recognised (carries ``what`` and ``fix``)."""

    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}. Fix: {fix}")
        self.what = what
        self.fix = fix


@dataclass(frozen=True)
class GexSource:
    """A located GEX input.

    Attributes
    ----------
    kind
        ``h5`` (Cell Ranger v3+ feature-barcode HDF5), ``mtx`` (MatrixMarket
        folder) or ``h5ad``.
    path
        The concrete file (h5/h5ad) or the mtx folder.
    default_vdj
        For ``cellranger multi`` outputs, the sample's
        ``vdj_t/filtered_contig_annotations.csv`` when it exists.
    """

    kind: GexKind
    path: Path
    default_vdj: Path | None = None


@dataclass(frozen=True)
class MtxFiles:
    """The three files of a MatrixMarket folder (``legacy``: 2-column genes.tsv)."""

    matrix: Path
    features: Path
    barcodes: Path
    legacy: bool


def _first_existing(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``folder/<name>`` that exists (``None`` when none does)."""
    for name in names:
        p = folder / name
        if p.exists():
            return p
    return None


def locate_mtx(folder: str | os.PathLike) -> MtxFiles:
    """Find ``matrix.mtx[.gz]``, ``features.tsv[.gz]``/``genes.tsv[.gz]`` and
    ``barcodes.tsv[.gz]`` in ``folder``; raise :class:`LocateError` if one is missing."""
    folder = Path(folder)
    matrix = _first_existing(folder, ("matrix.mtx.gz", "matrix.mtx"))
    features = _first_existing(folder, ("features.tsv.gz", "features.tsv"))
    legacy = False
    if features is None:
        features = _first_existing(folder, ("genes.tsv.gz", "genes.tsv"))
        legacy = features is not None
    barcodes = _first_existing(folder, ("barcodes.tsv.gz", "barcodes.tsv"))
    missing = [
        name
        for name, p in (
            ("matrix.mtx[.gz]", matrix),
            ("features.tsv[.gz] (or genes.tsv[.gz])", features),
            ("barcodes.tsv[.gz]", barcodes),
        )
        if p is None
    ]
    if missing:
        raise LocateError(
            f"folder {folder} lacks {', '.join(missing)}",
            "point 'gex' at a Cell Ranger filtered_feature_bc_matrix/ folder holding "
            "matrix.mtx.gz, features.tsv.gz and barcodes.tsv.gz",
        )
    return MtxFiles(matrix, features, barcodes, legacy)  # type: ignore[arg-type]


def _multi_sample(folder: Path) -> GexSource:
    """A ``cellranger multi`` ``per_sample_outs/<id>`` folder."""
    count = folder / "count"
    h5 = count / "sample_filtered_feature_bc_matrix.h5"
    mtx = count / "sample_filtered_feature_bc_matrix"
    vdj = _first_existing(
        folder / "vdj_t",
        ("filtered_contig_annotations.csv", "filtered_contig_annotations.csv.gz"),
    )
    if h5.exists():
        return GexSource("h5", h5, vdj)
    if mtx.is_dir():
        return GexSource("mtx", mtx, vdj)
    raise LocateError(
        f"cellranger multi folder {folder} has no count/sample_filtered_feature_bc_matrix.h5",
        "check that cellranger multi finished for this sample, or point 'gex' at the "
        "feature-barcode matrix directly",
    )


def locate_gex(path: str | os.PathLike) -> GexSource:
    """Work out what kind of GEX input ``path`` is.

    Accepted: a Cell Ranger ``.h5``; an ``.h5ad``; a MatrixMarket folder
    (``filtered_feature_bc_matrix/``); a ``cellranger count`` run or ``outs/``
    folder; a ``cellranger multi`` run/``outs/`` folder with a single sample
    or its ``outs/per_sample_outs/<id>`` folder.

    Raises
    ------
    LocateError
        When the folder layout is not one of the above (e.g. a multi run with
        several samples, where the sheet must name ``per_sample_outs/<id>``).
    """
    p = Path(path)
    if p.is_file():
        name = p.name.lower()
        if name.endswith(".h5ad"):
            return GexSource("h5ad", p)
        if name.endswith((".h5", ".hdf5")):
            return GexSource("h5", p)
        if name.startswith("matrix.mtx"):
            raise LocateError(
                f"{p} is the matrix file of a MatrixMarket folder",
                f"point 'gex' at the folder {p.parent} instead of the file",
            )
        raise LocateError(
            f"{p} is neither a Cell Ranger .h5, an .h5ad nor a matrix folder",
            "give a filtered_feature_bc_matrix.h5, a filtered_feature_bc_matrix/ folder, "
            "a cellranger multi output folder or an .h5ad with raw counts",
        )
    if not p.is_dir():
        raise LocateError(f"{p} does not exist", "correct the path")
    if _first_existing(p, ("matrix.mtx.gz", "matrix.mtx")) is not None:
        return GexSource("mtx", p)
    if (p / "count" / "sample_filtered_feature_bc_matrix.h5").exists() or (
        p / "count" / "sample_filtered_feature_bc_matrix"
    ).is_dir():
        return _multi_sample(p)
    for outs in (p, p / "outs"):
        pso = outs / "per_sample_outs"
        if pso.is_dir():
            ids = sorted(d.name for d in pso.iterdir() if d.is_dir())
            if len(ids) == 1:
                return _multi_sample(pso / ids[0])
            if not ids:
                raise LocateError(
                    f"cellranger multi folder {p} has an empty per_sample_outs/",
                    "check that cellranger multi finished",
                )
            raise LocateError(
                f"cellranger multi folder {p} holds {len(ids)} samples ({', '.join(ids)})",
                f"write one row per sample with 'gex' set to {pso}/<id>, e.g. {pso / ids[0]}",
            )
        h5 = outs / "filtered_feature_bc_matrix.h5"
        if h5.exists():
            return GexSource("h5", h5)
        mtx = outs / "filtered_feature_bc_matrix"
        if mtx.is_dir():
            return GexSource("mtx", mtx)
    for legacy in (p / "filtered_gene_bc_matrices", p / "outs" / "filtered_gene_bc_matrices"):
        if legacy.is_dir():
            genomes = sorted(d.name for d in legacy.iterdir() if d.is_dir())
            if len(genomes) == 1:
                return GexSource("mtx", legacy / genomes[0])
    raise LocateError(
        f"folder {p} holds no matrix.mtx[.gz] and is not a Cell Ranger output folder",
        "point 'gex' at a filtered_feature_bc_matrix/ folder, a filtered_feature_bc_matrix.h5, "
        "or a cellranger multi outs/per_sample_outs/<id> folder",
    )


def locate_vdj(path: str | os.PathLike) -> tuple[VdjKind, Path]:
    """Work out what kind of TCR input ``path`` is.

    ``.json[.gz]``: 10x ``all_contig_annotations.json``; ``.csv[.gz]``: 10x contig
    table; ``.tsv[.gz]``: AIRR rearrangement TSV; a folder: its
    ``filtered_contig_annotations.csv[.gz]`` or ``airr_rearrangement.tsv[.gz]``.
    """
    p = Path(path)
    if p.is_dir():
        for sub in (p, p / "outs"):
            for name in (
                "filtered_contig_annotations.csv",
                "filtered_contig_annotations.csv.gz",
                "airr_rearrangement.tsv",
                "airr_rearrangement.tsv.gz",
            ):
                if (sub / name).is_file():
                    return locate_vdj(sub / name)
        raise LocateError(
            f"folder {p} holds no filtered_contig_annotations.csv or airr_rearrangement.tsv",
            "point 'vdj' at the contig file itself",
        )
    if not p.exists():
        raise LocateError(f"{p} does not exist", "correct the path")
    name = p.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".json"):
        return "10x_json", p
    if name.endswith(".csv"):
        return "10x_csv", p
    if name.endswith((".tsv", ".txt")):
        return "airr", p
    raise LocateError(
        f"cannot tell the format of {p} from its name",
        "name 10x contig tables *.csv[.gz], 10x contig JSON *.json[.gz] and AIRR "
        "rearrangement files *.tsv[.gz]",
    )
