"""Read, resolve and validate the sample sheet and the clinical table.

This module runs at Snakemake parse time (``rules/common.smk``), for sheets of
up to ~1,000 libraries, so it imports only light modules and reads only what it
needs from each input file: HDF5 shapes and barcodes, MatrixMarket headers,
line counts, and the barcode column of contig tables.

Every problem found is collected and raised at once as an
:class:`~cartcohort.errors.InputError` of :class:`~cartcohort.errors.Problem`
objects, each naming the file, the line/column and the fix. Line numbers are
those of the file as shown by a text editor (the header is line 1).

The path helpers (:func:`locate_gex`, :func:`locate_vdj`, :func:`open_text`,
:func:`match_barcodes`) are shared with :mod:`cartcohort.io`.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import logging
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import h5py
import jsonschema
import numpy as np
import pandas as pd
import yaml

from .errors import InputError, Problem

logger = logging.getLogger(__name__)

#: Allowed sample ids (also used in file names and Snakemake wildcards).
SAMPLE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SAMPLE_ID_RE = re.compile(SAMPLE_ID_PATTERN)
#: Response codes of the clinical table.
RESPONSE_CODES = ("CR", "PR", "SD", "PD", "NE")
#: Columns of the sample sheet that become cell metadata (DESIGN.md).
META_COLUMNS = ("patient", "timepoint", "timepoint_day", "compartment", "batch", "sort")
#: Folder holding ``samples.schema.yaml`` and ``clinical.schema.yaml``.
SCHEMA_DIR = Path(__file__).resolve().parents[3] / "config" / "schemas"

GexKind = Literal["h5", "mtx", "h5ad"]
VdjKind = Literal["10x_csv", "10x_json", "airr"]

#: Columns scirpy reads from a 10x contig CSV.
CONTIG_CSV_COLUMNS = (
    "barcode",
    "is_cell",
    "contig_id",
    "high_confidence",
    "chain",
    "v_gene",
    "d_gene",
    "j_gene",
    "c_gene",
    "productive",
    "cdr3",
    "cdr3_nt",
    "reads",
    "umis",
)
BCR_LOCI = ("IGH", "IGK", "IGL")
#: Contigs read per TCR file at parse time (barcode overlap, BCR-only check).
VDJ_CHECK_ROWS = 5000
_GZIP_MAGIC = b"\x1f\x8b"
_SUFFIX_RE = re.compile(r"-\d+$")

_CHAR_NAMES = {
    " ": "space",
    "\t": "tab",
    "/": "slash '/'",
    "\\": "backslash '\\'",
    ";": "semicolon ';'",
    "|": "pipe '|'",
    "&": "ampersand '&'",
    "$": "dollar '$'",
    "`": "backtick '`'",
    "*": "asterisk '*'",
    "?": "question mark '?'",
    "(": "parenthesis '('",
    ")": "parenthesis ')'",
    "<": "'<'",
    ">": "'>'",
    '"': "double quote",
    "'": "single quote",
    "!": "'!'",
    "{": "brace '{'",
    "}": "brace '}'",
    "[": "bracket '['",
    "]": "bracket ']'",
    "~": "tilde '~'",
    "#": "hash '#'",
    "%": "percent '%'",
    ",": "comma ','",
    ":": "colon ':'",
    "=": "'='",
    "+": "plus '+'",
    "@": "'@'",
    "^": "caret '^'",
}


# --------------------------------------------------------------------------- text files


def is_gzip(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with the gzip magic bytes (whatever its name)."""
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def open_text(path: str | os.PathLike) -> IO[str]:
    """Open a text file that may or may not be gzip-compressed.

    The decision is made on the file's first bytes, not its name, so a plain
    text ``matrix.mtx.gz`` (as found in the wild) opens fine.
    """
    if is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_lines(path: str | os.PathLike) -> list[str]:
    """All non-empty lines of a (possibly gzip-compressed) text file, without newlines."""
    with open_text(path) as fh:
        return [line for line in fh.read().splitlines() if line.strip()]


def barcode_core(barcode: str) -> str:
    """``barcode`` without a trailing GEM-well suffix (``-1``, ``-12``)."""
    return _SUFFIX_RE.sub("", barcode)


def match_barcodes(query: Iterable[str], reference: Iterable[str]) -> dict[str, str]:
    """Map barcodes of one assay to the barcodes of another (e.g. TCR to GEX).

    Barcodes are compared exactly when both carry a ``-N`` suffix (so ``-1``
    and ``-2`` of an aggregated run stay apart); when one of them has no
    suffix, they are compared without it. A suffix-less barcode that matches
    several suffixed ones is left unmatched.

    Parameters
    ----------
    query
        Barcodes to map (e.g. the contig table's).
    reference
        Barcodes to map onto (e.g. the GEX matrix's).

    Returns
    -------
    dict
        ``query barcode -> reference barcode`` for every query barcode that matched.
    """
    ref = list(dict.fromkeys(reference))
    ref_set = set(ref)
    core_to_ref: dict[str, str | None] = {}
    for r in ref:
        c = barcode_core(r)
        core_to_ref[c] = None if (c in core_to_ref and core_to_ref[c] != r) else r
    out: dict[str, str] = {}
    for q in dict.fromkeys(query):
        if q in ref_set:
            out[q] = q
            continue
        q_has = barcode_core(q) != q
        if q_has:
            # suffixed query: match only a suffix-less reference barcode
            c = barcode_core(q)
            if c in ref_set:
                out[q] = c
        else:
            r = core_to_ref.get(q)
            if r is not None and r != q:
                out[q] = r
    return out


# --------------------------------------------------------------------------- locating inputs


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


# --------------------------------------------------------------------------- file content checks
# Each check returns (facts, issues) where issues are (where, what, fix) tuples
# about the checked file; the caller turns them into Problems.

Issue = tuple[str, str, str]


@dataclass
class GexFacts:
    """What :func:`inspect_gex` learnt about a GEX file."""

    n_cells: int | None = None
    barcodes: list[str] | None = None


def _decode(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]


def _h5_strings(obj: Any) -> list[str]:
    """Strings of an h5ad obs column/index (plain dataset or categorical group)."""
    if isinstance(obj, h5py.Group):
        cats = _decode(obj["categories"][()])
        codes = obj["codes"][()]
        return [cats[c] if c >= 0 else "" for c in codes]
    return _decode(obj[()])


def _check_h5(path: Path, *, want_barcodes: bool) -> tuple[GexFacts, list[Issue]]:
    facts = GexFacts()
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        return facts, [
            (
                "",
                f"cannot be opened as HDF5 ({err.__class__.__name__}: "
                f"{str(err).splitlines()[0][:120]}); the file is truncated, still being "
                "copied, or not an HDF5 file",
                "copy the file again from the Cell Ranger outs/ folder (compare its size "
                "or md5sum with the original)",
            )
        ]
    issues: list[Issue] = []
    try:
        with f:
            if "matrix" not in f:
                v2 = [k for k in f.keys() if isinstance(f[k], h5py.Group) and "genes" in f[k]]
                if v2:
                    what = (
                        f"is a Cell Ranger v2 matrix (genome group '{v2[0]}'), not the "
                        "v3+ layout with a 'matrix' group"
                    )
                    fix = (
                        "point 'gex' at the filtered_gene_bc_matrices/<genome>/ folder of "
                        "that run instead"
                    )
                else:
                    what = (
                        "has no 'matrix' group, so it is not a Cell Ranger v3+ "
                        f"feature-barcode matrix (top-level keys: {sorted(f.keys())[:5]})"
                    )
                    fix = (
                        "give the filtered_feature_bc_matrix.h5 written by Cell Ranger; "
                        "AnnData files must be named *.h5ad"
                    )
                return facts, [("", what, fix)]
            m = f["matrix"]
            need = [
                "barcodes",
                "data",
                "indices",
                "indptr",
                "shape",
                "features/id",
                "features/name",
                "features/feature_type",
            ]
            present = set(m.keys())
            if "features" in present and isinstance(m["features"], h5py.Group):
                present |= {f"features/{k}" for k in m["features"].keys()}
            missing = [k for k in need if k not in present]
            if missing:
                return facts, [
                    (
                        "group 'matrix'",
                        f"lacks dataset(s) {', '.join(repr(k) for k in missing)}",
                        "re-export the matrix with Cell Ranger v3 or later",
                    )
                ]
            shape = [int(x) for x in m["shape"][()]]
            n_feat, n_cells = shape[0], shape[1]
            facts.n_cells = n_cells
            if m["barcodes"].shape[0] != n_cells:
                issues.append(
                    (
                        "dataset 'matrix/barcodes'",
                        f"has {m['barcodes'].shape[0]} barcodes but matrix/shape says "
                        f"{n_cells} cells",
                        "the file is corrupt; copy it again from Cell Ranger",
                    )
                )
            if m["indptr"].shape[0] != n_cells + 1:
                issues.append(
                    (
                        "dataset 'matrix/indptr'",
                        f"has length {m['indptr'].shape[0]}, expected {n_cells + 1} " "(cells + 1)",
                        "the file is corrupt; copy it again from Cell Ranger",
                    )
                )
            if m["features/id"].shape[0] != n_feat:
                issues.append(
                    (
                        "dataset 'matrix/features/id'",
                        f"has {m['features/id'].shape[0]} features but matrix/shape says "
                        f"{n_feat}",
                        "the file is corrupt; copy it again from Cell Ranger",
                    )
                )
            if m["data"].shape[0] != m["indices"].shape[0]:
                issues.append(
                    (
                        "dataset 'matrix/data'",
                        f"has {m['data'].shape[0]} values but matrix/indices has "
                        f"{m['indices'].shape[0]}",
                        "the file is corrupt; copy it again from Cell Ranger",
                    )
                )
            ftypes = set(_decode(m["features/feature_type"][()]))
            if n_feat and "Gene Expression" not in ftypes:
                issues.append(
                    (
                        "dataset 'matrix/features/feature_type'",
                        f"has no 'Gene Expression' features (types: {sorted(ftypes)})",
                        "give the matrix of the gene-expression library",
                    )
                )
            if n_cells == 0:
                issues.append(
                    (
                        "dataset 'matrix/shape'",
                        "the library has zero cells",
                        "check the Cell Ranger run (cell calling failed?) or leave the "
                        "library out of the sheet",
                    )
                )
            elif want_barcodes and not issues:
                facts.barcodes = _decode(m["barcodes"][()])
    except (OSError, KeyError, ValueError, TypeError) as err:
        issues.append(
            (
                "",
                f"is corrupt: reading it failed with {err.__class__.__name__}: {err}",
                "copy the file again from the Cell Ranger outs/ folder",
            )
        )
    return facts, issues


def _mtx_header(path: Path) -> tuple[int, int, int, str]:
    """(rows, cols, nnz, field) from a MatrixMarket header; raises ValueError."""
    with open_text(path) as fh:
        first = fh.readline()
        if not first.startswith("%%MatrixMarket"):
            raise ValueError("does not start with '%%MatrixMarket' (not a MatrixMarket file)")
        parts = first.split()
        if len(parts) < 5 or parts[2].lower() != "coordinate":
            raise ValueError(f"header line '{first.strip()}' is not a coordinate matrix")
        fieldtype = parts[3].lower()
        for line in fh:
            if line.startswith("%") or not line.strip():
                continue
            nums = line.split()
            if len(nums) != 3:
                raise ValueError(f"size line '{line.strip()}' should hold rows, columns, entries")
            r, c, n = (int(x) for x in nums)
            return r, c, n, fieldtype
    raise ValueError("has no size line (rows, columns, entries) after the header")


def _check_mtx(folder: Path, *, want_barcodes: bool) -> tuple[GexFacts, list[Issue], MtxFiles]:
    facts = GexFacts()
    files = locate_mtx(folder)
    issues: list[Issue] = []
    fix_copy = "copy the folder again from the Cell Ranger outs/ folder"
    try:
        rows, cols, nnz, fieldtype = _mtx_header(files.matrix)
    except (ValueError, OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        return facts, [(f"{files.matrix.name}: header", f"is unreadable: {err}", fix_copy)], files
    facts.n_cells = cols
    if fieldtype not in ("integer", "real"):
        issues.append(
            (
                f"{files.matrix.name}: line 1 (header)",
                f"has field type '{fieldtype}', expected 'integer' counts",
                fix_copy,
            )
        )
    try:
        barcodes = read_lines(files.barcodes)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        return facts, [(files.barcodes.name, f"is unreadable: {err}", fix_copy)], files
    try:
        features = read_lines(files.features)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        return facts, [(files.features.name, f"is unreadable: {err}", fix_copy)], files
    n_bc, n_ft = len(barcodes), len(features)
    if (rows, cols) == (n_bc, n_ft) and rows != cols:
        issues.append(
            (
                f"{files.matrix.name}: size line",
                f"says {rows} rows x {cols} columns, which is barcodes x features: "
                "the matrix is transposed (Cell Ranger writes features x barcodes)",
                "write the matrix as features (rows) x barcodes (columns)",
            )
        )
    else:
        if rows != n_ft:
            issues.append(
                (
                    f"{files.matrix.name}: size line",
                    f"says {rows} features (rows) but {files.features.name} has {n_ft} lines",
                    "the files come from different runs or are truncated; " + fix_copy,
                )
            )
        if cols != n_bc:
            issues.append(
                (
                    f"{files.matrix.name}: size line",
                    f"says {cols} barcodes (columns) but {files.barcodes.name} has {n_bc} lines",
                    "the files come from different runs or are truncated; " + fix_copy,
                )
            )
    if features:
        ncol = len(features[0].split("\t"))
        if ncol < 2:
            issues.append(
                (
                    f"{files.features.name}: line 1",
                    f"has {ncol} tab-separated column(s), expected 3 (id, name, type) "
                    "or 2 (id, name) for genes.tsv",
                    fix_copy,
                )
            )
    if cols == 0 or n_bc == 0:
        issues.append(
            (
                files.barcodes.name if n_bc == 0 else f"{files.matrix.name}: size line",
                "the library has zero cells",
                "check the Cell Ranger run (cell calling failed?) or leave the library "
                "out of the sheet",
            )
        )
    if want_barcodes and not issues:
        facts.barcodes = barcodes
    return facts, issues, files


def _integer_sample(values: np.ndarray) -> tuple[bool, float | None]:
    """Whether ``values`` are non-negative integers; the first offending value."""
    if values.size == 0:
        return True, None
    v = np.asarray(values, dtype=np.float64)
    bad = (v != np.round(v)) | (v < 0) | ~np.isfinite(v)
    if bad.any():
        return False, float(v[np.argmax(bad)])
    return True, None


def _h5ad_matrix_sample(obj: Any, n: int = 20000) -> np.ndarray:
    if isinstance(obj, h5py.Group):
        return obj["data"][: min(n, obj["data"].shape[0])]
    rows = min(obj.shape[0], max(1, n // max(1, obj.shape[1] if obj.ndim > 1 else 1)))
    return obj[:rows].ravel()


def _matrix_shape(obj: Any) -> tuple[int, int]:
    if isinstance(obj, h5py.Group):
        return tuple(int(x) for x in obj.attrs["shape"])  # type: ignore[return-value]
    return tuple(int(x) for x in obj.shape)  # type: ignore[return-value]


def _check_h5ad(path: Path, *, want_barcodes: bool) -> tuple[GexFacts, list[Issue]]:
    facts = GexFacts()
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        return facts, [
            (
                "",
                f"cannot be opened as HDF5/h5ad ({str(err).splitlines()[0][:120]}); "
                "the file is truncated or not an .h5ad",
                "write it again with adata.write_h5ad()",
            )
        ]
    issues: list[Issue] = []
    try:
        with f:
            if "X" not in f or "obs" not in f:
                return facts, [
                    (
                        "",
                        "lacks 'X' or 'obs' (not an AnnData file)",
                        "write it with adata.write_h5ad()",
                    )
                ]
            n_obs, _ = _matrix_shape(f["X"])
            facts.n_cells = n_obs
            if n_obs == 0:
                issues.append(("X", "the library has zero cells", "leave it out of the sheet"))
                return facts, issues
            candidates = [("X", f["X"])]
            if "layers" in f and "counts" in f["layers"]:
                candidates.append(("layers['counts']", f["layers"]["counts"]))
            if "raw" in f and "X" in f["raw"]:
                candidates.append(("raw.X", f["raw"]["X"]))
            found = None
            first_bad: tuple[str, float | None] | None = None
            for name, obj in candidates:
                ok, bad = _integer_sample(_h5ad_matrix_sample(obj))
                if ok:
                    found = name
                    break
                if first_bad is None:
                    first_bad = (name, bad)
            if found is None and first_bad is not None:
                issues.append(
                    (
                        first_bad[0],
                        f"holds non-integer or negative values (e.g. {first_bad[1]:.4g}): "
                        "looks normalised/log-transformed, and no layers['counts'] or .raw "
                        "with raw integer UMI counts was found",
                        "save raw UMI counts in X, layers['counts'] or .raw, or give the "
                        "Cell Ranger matrix instead",
                    )
                )
            if want_barcodes and not issues:
                obs = f["obs"]
                if "barcode" in obs:
                    facts.barcodes = _h5_strings(obs["barcode"])
                else:
                    facts.barcodes = _h5_strings(obs[obs.attrs.get("_index", "_index")])
    except (OSError, KeyError, ValueError, TypeError) as err:
        issues.append(
            (
                "",
                f"is corrupt: reading it failed with {err.__class__.__name__}: {err}",
                "write it again with adata.write_h5ad()",
            )
        )
    return facts, issues


def inspect_gex(
    source: GexSource, *, want_barcodes: bool = False
) -> tuple[GexFacts, list[Issue], Path]:
    """Cheaply check a located GEX input.

    Returns
    -------
    facts, issues, file
        ``issues`` are ``(where, what, fix)`` about ``file`` (the file to name
        in messages: the h5/h5ad, or the mtx folder).
    """
    if source.kind == "h5":
        facts, issues = _check_h5(source.path, want_barcodes=want_barcodes)
        return facts, issues, source.path
    if source.kind == "h5ad":
        facts, issues = _check_h5ad(source.path, want_barcodes=want_barcodes)
        return facts, issues, source.path
    facts, issues, _ = _check_mtx(source.path, want_barcodes=want_barcodes)
    return facts, issues, source.path


_JSON_BARCODE_RE = re.compile(r'"barcode"\s*:\s*"([^"]*)"')
_JSON_CHAIN_RE = re.compile(r'"chain"\s*:\s*"([^"]*)"')


def _read_delimited_columns(
    path: Path, sep: str, columns: Sequence[str], max_rows: int | None = None
) -> tuple[list[str], dict[str, list[str]]]:
    """Header and the requested columns (as strings, first ``max_rows`` rows) of a
    delimited text file."""
    with open_text(path) as fh:
        first = fh.readline()
        if not first.strip():
            return [], {}
        header = [h.strip() for h in next(csv.reader([first], delimiter=sep))]
        use = [c for c in columns if c in header]
        if not use or len(header) <= 1:
            return header, {c: [] for c in use}
        if os.path.getsize(path) < 1_000_000:
            # small file: the csv module beats pandas' per-call overhead
            idx = {c: header.index(c) for c in use}
            out: dict[str, list[str]] = {c: [] for c in use}
            for n, row in enumerate(csv.reader(fh, delimiter=sep)):
                if max_rows is not None and n >= max_rows:
                    break
                if not row:
                    continue
                for c, i in idx.items():
                    out[c].append(row[i] if i < len(row) else "")
            return header, out
    with open_text(path) as fh:
        df = pd.read_csv(
            fh,
            sep=sep,
            usecols=use,
            dtype=str,
            keep_default_na=False,
            engine="c",
            skip_blank_lines=True,
            nrows=max_rows,
        )
    return header, {c: df[c].tolist() for c in use}


def inspect_vdj(
    kind: VdjKind, path: Path, *, max_rows: int | None = None
) -> tuple[set[str], list[Issue]]:
    """Cheaply check a TCR contig file; return its cell barcodes and issues.

    Parameters
    ----------
    kind, path
        As returned by :func:`locate_vdj`.
    max_rows
        Look only at the first ``max_rows`` contigs (JSON: the first
        ``max_rows * 800`` characters), which is enough to tell whether the
        file pairs with its GEX library; ``None`` reads everything.
    """
    fix_copy = "copy the file again from the Cell Ranger vdj_t outs/ folder"
    try:
        if kind == "10x_json":
            limit = -1 if max_rows is None else max_rows * 800
            with open_text(path) as fh:
                text = fh.read(limit)
                whole = limit < 0 or not fh.read(1)
            stripped = text.strip()
            if not stripped.startswith("[") or (whole and not stripped.endswith("]")):
                return set(), [
                    (
                        "",
                        "is not a JSON list of contigs (truncated or not "
                        "all_contig_annotations.json)",
                        fix_copy,
                    )
                ]
            barcodes = _JSON_BARCODE_RE.findall(text)
            chains = _JSON_CHAIN_RE.findall(text)
            issues: list[Issue] = []
            if not barcodes:
                issues.append(("", "contains no contigs", "check the Cell Ranger vdj run"))
            elif chains and all(c in BCR_LOCI for c in chains):
                issues.append(_only_bcr_issue("chain"))
            return set(barcodes), issues
        if kind == "10x_csv":
            header, cols = _read_delimited_columns(path, ",", ("barcode", "chain"), max_rows)
            if len(header) <= 1:
                return set(), [
                    (
                        "line 1 (header)",
                        "is not a comma-separated 10x contig table " f"(header: {header[:3]})",
                        fix_copy,
                    )
                ]
            dup = _duplicate_column(header)
            if dup:
                return set(), [dup]
            missing = [c for c in CONTIG_CSV_COLUMNS if c not in header]
            if missing:
                return set(), [
                    (
                        "line 1 (header)",
                        f"lacks column(s) {', '.join(repr(c) for c in missing)} of a 10x "
                        "contig table",
                        "give the filtered_contig_annotations.csv written by "
                        "Cell Ranger vdj (or convert your table to that layout)",
                    )
                ]
            barcodes, chains = cols["barcode"], cols["chain"]
            bc_col, chain_col = "barcode", "chain"
        else:
            header, cols = _read_delimited_columns(
                path, "\t", ("cell_id", "locus", "v_call", "j_call"), max_rows
            )
            if len(header) <= 1:
                return set(), [
                    (
                        "line 1 (header)",
                        "is not a tab-separated AIRR rearrangement file " f"(header: {header[:3]})",
                        "give an AIRR rearrangement TSV",
                    )
                ]
            dup = _duplicate_column(header)
            if dup:
                return set(), [dup]
            missing = []
            if "cell_id" not in header:
                missing.append("'cell_id'")
            if "locus" not in header and "v_call" not in header:
                missing.append("'locus' (or 'v_call' to infer it)")
            if "junction_aa" not in header and "junction" not in header:
                missing.append("'junction_aa' or 'junction'")
            if missing:
                return set(), [
                    (
                        "line 1 (header)",
                        f"lacks column(s) {', '.join(missing)} of the AIRR " "rearrangement schema",
                        "give single-cell AIRR data (one row per contig, " "with cell_id)",
                    )
                ]
            barcodes = cols["cell_id"]
            if "locus" in cols and any(cols["locus"]):
                chains, chain_col = cols["locus"], "locus"
            else:
                chains, chain_col = [v[:3].upper() for v in cols.get("v_call", [])], "v_call"
            bc_col = "cell_id"
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error, ValueError) as err:
        # ValueError covers pandas' ParserError (ragged rows, bad quoting)
        msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        return set(), [("", f"is unreadable ({err.__class__.__name__}: {msg})", fix_copy)]
    issues = []
    if not barcodes:
        issues.append(("", "contains no contigs (header only)", "check the Cell Ranger vdj run"))
        return set(), issues
    empty = [i for i, b in enumerate(barcodes) if not b.strip()]
    if empty:
        issues.append(
            (
                f"line {empty[0] + 2}, column '{bc_col}'",
                f"{len(empty)} contig(s) have an empty {bc_col}",
                "single-cell data needs a cell barcode on every contig",
            )
        )
    if chains and all(c in BCR_LOCI for c in chains if c):
        issues.append(_only_bcr_issue(chain_col))
    return {b for b in barcodes if b.strip()}, issues


def _duplicate_column(header: Sequence[str]) -> Issue | None:
    """Issue for the first column name that occurs twice in a contig-table header
    (readers would silently take one of them, possibly the wrong data)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if not name:
            continue
        if name in seen:
            return (
                "line 1 (header)",
                f"column '{name}' appears twice (columns {seen[name]} and {i})",
                "keep one of them; Cell Ranger and AIRR files have unique column names",
            )
        seen[name] = i
    return None


def _only_bcr_issue(col: str) -> Issue:
    return (
        f"column '{col}'",
        "contains only BCR contigs (IGH/IGK/IGL), no TCR",
        "give the T-cell (vdj_t) contig file of this library; B-cell receptor data is not used",
    )


# --------------------------------------------------------------------------- TSV parsing


@dataclass
class _Table:
    path: Path
    header_line: int = 1
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def _strip_value(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] == '"':
        v = v[1:-1].strip()
    return v


def _read_tsv(path: Path, label: str, problems: list[Problem]) -> _Table | None:
    """Parse a TSV keeping the file's line numbers; report layout problems."""
    fname = str(path)
    if not path.exists():
        problems.append(
            Problem(
                fname,
                "",
                f"the {label} does not exist",
                f"create it or correct the path in config.yaml (key '{label_key(label)}')",
            )
        )
        return None
    if path.is_dir():
        problems.append(
            Problem(
                fname, "", f"the {label} is a folder, not a file", "give the path of the TSV file"
            )
        )
        return None
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        problems.append(
            Problem(
                fname,
                "",
                f"is not UTF-8 text ({err.reason} at byte {err.start})",
                "save the sheet as UTF-8 tab-separated text",
            )
        )
        return None
    except (OSError, EOFError, zlib.error) as err:
        problems.append(Problem(fname, "", f"cannot be read ({err})", "check the file"))
        return None
    table = _Table(path)
    header: list[str] | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [_strip_value(v) for v in line.split("\t")]
        if header is None:
            table.header_line = lineno
            header = fields
            while header and header[-1] == "":
                header.pop()
            if len(header) == 1 and ("," in line or ";" in line):
                sep = "comma" if "," in line else "semicolon"
                problems.append(
                    Problem(
                        fname,
                        f"line {lineno} (header)",
                        f"has a single column: the file looks {sep}-separated",
                        "save it as tab-separated values (TSV)",
                    )
                )
                return None
            seen: dict[str, int] = {}
            for i, name in enumerate(header, start=1):
                if name == "":
                    problems.append(
                        Problem(
                            fname,
                            f"line {lineno} (header)",
                            f"column {i} has no name",
                            "name every column",
                        )
                    )
                elif name in seen:
                    problems.append(
                        Problem(
                            fname,
                            f"line {lineno} (header)",
                            f"column '{name}' appears twice (columns {seen[name]} " f"and {i})",
                            "keep one of them",
                        )
                    )
                else:
                    seen[name] = i
            table.columns = header
            continue
        if len(fields) > len(header):
            extra = fields[len(header) :]
            if any(extra):
                problems.append(
                    Problem(
                        fname,
                        f"line {lineno}",
                        f"has {len(fields)} tab-separated fields but the header has "
                        f"{len(header)}",
                        "remove the extra fields, or check for a tab inside a value",
                    )
                )
                continue
            fields = fields[: len(header)]
        elif len(fields) < len(header):
            fields = fields + [""] * (len(header) - len(fields))
        table.rows.append(dict(zip(header, fields)))
        table.lines.append(lineno)
    if header is None:
        problems.append(
            Problem(
                fname,
                "",
                "is empty (no header line)",
                "write a header line with the column names, then one row per "
                f"{'library' if label == 'sample sheet' else 'patient'}",
            )
        )
        return None
    if not table.rows:
        problems.append(
            Problem(
                fname,
                "",
                "has a header but no data rows",
                f"add one row per {'library' if label == 'sample sheet' else 'patient'}",
            )
        )
    return table


def label_key(label: str) -> str:
    return "samples" if label == "sample sheet" else "clinical"


# --------------------------------------------------------------------------- schema validation


def load_schema(name: str, schema_dir: str | os.PathLike | None = None) -> dict:
    """Load ``<name>.schema.yaml`` from the schema folder."""
    folder = Path(schema_dir) if schema_dir is not None else SCHEMA_DIR
    with open(folder / f"{name}.schema.yaml") as fh:
        return yaml.safe_load(fh)


def _coerce(value: str, prop: Mapping[str, Any]) -> Any:
    types = prop.get("type", "string")
    types = [types] if isinstance(types, str) else list(types)
    if "string" in types:
        return value
    if "integer" in types or "number" in types:
        try:
            num = float(value)
        except ValueError:
            return value
        if "integer" in types and num.is_integer():
            return int(num)
        return num
    if "boolean" in types:
        low = value.lower()
        if low in ("true", "yes", "1"):
            return True
        if low in ("false", "no", "0"):
            return False
    return value


def _type_words(t: Any) -> str:
    words = {
        "number": "a number",
        "integer": "a whole number",
        "string": "text",
        "boolean": "true/false",
    }
    ts = [t] if isinstance(t, str) else list(t)
    return " or ".join(words.get(x, x) for x in ts)


def _validate_table(
    table: _Table,
    schema: Mapping[str, Any],
    problems: list[Problem],
    *,
    skip: Iterable[tuple[str, str]] = (),
) -> None:
    """Validate each row against ``schema`` (an object schema for one row)."""
    fname = str(table.path)
    props: Mapping[str, Any] = schema.get("properties", {})
    required = list(schema.get("required", []))
    skip = set(skip)
    missing_cols = [c for c in required if c not in table.columns]
    for col in missing_cols:
        close = difflib.get_close_matches(col, table.columns, n=1, cutoff=0.6)
        close = close or [c for c in table.columns if c.lower() == col.lower()]
        fix = (
            f"rename column '{close[0]}' to '{col}'"
            if close
            else f"add a column '{col}' ({props.get(col, {}).get('description', '')})"
        )
        problems.append(
            Problem(
                fname,
                f"line {table.header_line} (header)",
                f"required column '{col}' is missing",
                fix,
            )
        )
    validator = jsonschema.Draft202012Validator(schema)
    for row, lineno in zip(table.rows, table.lines):
        inst = {k: _coerce(v, props.get(k, {})) for k, v in row.items() if v != ""}
        errs = []
        for err in validator.iter_errors(inst):
            if err.validator == "required":
                for col in err.validator_value:
                    if col not in inst and col not in missing_cols:
                        errs.append(
                            (
                                col,
                                "value is empty but the column is required",
                                f"fill in '{col}' on this line",
                            )
                        )
                continue
            if not err.absolute_path:
                errs.append(("", err.message, "correct the row"))
                continue
            col = str(err.absolute_path[0])
            if (col, err.validator) in skip:
                continue
            raw = row.get(col, "")
            prop = props.get(col, {})
            desc = prop.get("description", "")
            if err.validator == "type":
                what = f"'{raw}' is not {_type_words(err.validator_value)}"
                fix = (
                    f"write {_type_words(err.validator_value)} ({desc})"
                    if desc
                    else f"write {_type_words(err.validator_value)}"
                )
            elif err.validator == "enum":
                allowed = "/".join(str(x) for x in err.validator_value)
                what = f"'{raw}' is not one of {allowed}"
                upper = [x for x in err.validator_value if str(x).lower() == raw.lower()]
                fix = f"write '{upper[0]}'" if upper else f"use one of {allowed}"
                if desc:
                    fix += f" ({desc})"
            elif err.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
                what = f"'{raw}' is out of range ({err.message})"
                fix = f"correct the value ({desc})" if desc else "correct the value"
            elif err.validator == "minLength":
                what = "value is empty but the column is required"
                fix = f"fill in '{col}' on this line"
            elif err.validator == "pattern":
                what = f"'{raw}' does not match the pattern {err.validator_value}"
                fix = f"correct the value ({desc})" if desc else "correct the value"
            else:
                what, fix = err.message, f"correct the value ({desc})" if desc else "correct it"
            errs.append((col, what, fix))
        order = {c: i for i, c in enumerate(table.columns)}
        for col, what, fix in sorted(errs, key=lambda e: order.get(e[0], -1)):
            where = f"line {lineno}, column '{col}'" if col else f"line {lineno}"
            problems.append(Problem(fname, where, what, fix))


def describe_unsafe_id(value: str) -> str:
    """Say what makes ``value`` an unsafe sample id ('' if it is safe)."""
    if SAMPLE_ID_RE.match(value):
        return ""
    parts = []
    if value and not (value[0].isascii() and value[0].isalnum()):
        parts.append(f"starts with '{value[0]}'")
    bad = []
    for ch in dict.fromkeys(value):
        if ch.isascii() and (ch.isalnum() or ch in "_.-"):
            continue
        bad.append(
            _CHAR_NAMES.get(ch, f"non-ASCII character '{ch}'" if not ch.isascii() else f"'{ch}'")
        )
    if bad:
        parts.append("contains " + ", ".join(bad))
    return "; ".join(parts)


# --------------------------------------------------------------------------- main entry point


def _resolve_path(value: str, folder: Path) -> Path:
    p = Path(os.path.expandvars(os.path.expanduser(value)))
    if not p.is_absolute():
        p = folder / p
    return Path(os.path.normpath(os.path.abspath(p)))


def _config_path(value: Any, base_dir: Path) -> Path:
    p = Path(os.path.expanduser(str(value)))
    if not p.is_absolute():
        p = base_dir / p
    return Path(os.path.normpath(os.path.abspath(p)))


@dataclass
class _RowCtx:
    sheet: Path
    sample: str
    line: int
    column: str

    def tag(self) -> str:
        return f"sample '{self.sample}', {self.sheet.name} line {self.line}, column '{self.column}'"


def _file_problems(file: Path, issues: Iterable[Issue], ctx: _RowCtx) -> list[Problem]:
    return [Problem(str(file), where, f"{what} ({ctx.tag()})", fix) for where, what, fix in issues]


def prepare_inputs(
    config: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike = ".",
    check_files: bool = True,
    schema_dir: str | os.PathLike | None = None,
    cache_path: str | os.PathLike | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read, resolve and validate the sample sheet and clinical table.

    Parameters
    ----------
    config
        The workflow config; uses ``samples``, ``clinical`` (paths, relative to
        ``base_dir``), ``primary_timepoint``, ``exclude_samples``.
    base_dir
        Folder that relative ``config`` paths are relative to.
    check_files
        Also check every GEX/TCR file (existence, format, cell count, barcode
        overlap). ``False`` only checks the tables (quick dry runs).
    schema_dir
        Folder with ``samples.schema.yaml``/``clinical.schema.yaml``
        (default: the repository's ``config/schemas``).
    cache_path
        Optional JSON file remembering libraries whose files passed the checks,
        keyed on their paths, sizes and modification times; an unchanged library
        is not re-read on the next call (Snakemake parses the workflow on every
        invocation, and once per job on clusters). Relative to ``base_dir``.

    Returns
    -------
    samples, clinical
        ``samples`` indexed by ``sample``: the sheet's columns (strings),
        ``timepoint_day`` float (NaN when absent), absolute ``gex`` (a concrete
        h5/h5ad file or an mtx folder) and ``vdj`` (``""`` when absent; filled
        from a cellranger multi folder when left empty). ``clinical`` indexed
        by ``patient``: ``response`` and covariates (numbers as float).

    Raises
    ------
    InputError
        Listing every problem found. Problems of libraries listed in
        ``exclude_samples`` that concern their files are logged as warnings
        instead, so a corrupt library can be excluded.
    """
    base = Path(base_dir)
    problems: list[Problem] = []
    samples_path = _config_path(config["samples"], base)
    clinical_path = _config_path(config["clinical"], base)
    s_schema = load_schema("samples", schema_dir)
    c_schema = load_schema("clinical", schema_dir)

    sheet = _read_tsv(samples_path, "sample sheet", problems)
    clin = _read_tsv(clinical_path, "clinical table", problems)
    excluded = [str(s) for s in (config.get("exclude_samples") or [])]
    excluded_set = set(excluded)

    cache = _load_cache(_config_path(cache_path, base)) if cache_path and check_files else None
    sample_df = None
    if sheet is not None:
        _validate_table(sheet, s_schema, problems, skip={("sample", "pattern")})
        sample_df = _check_samples(
            sheet, problems, check_files=check_files, excluded=excluded_set, cache=cache
        )
    if cache is not None:
        _save_cache(_config_path(cache_path, base), cache)
    clinical_df = None
    if clin is not None:
        _validate_table(clin, c_schema, problems)
        clinical_df = _check_clinical(clin, c_schema, problems)

    if sheet is not None and sample_df is not None:
        known = set(sample_df.index)
        unknown = [s for s in excluded if s not in known]
        if unknown:
            close = {u: difflib.get_close_matches(u, sorted(known), n=1) for u in unknown}
            hint = "; ".join(f"'{u}' -> '{c[0]}'?" for u, c in close.items() if c)
            problems.append(
                Problem(
                    "config",
                    "key 'exclude_samples'",
                    f"names sample(s) not in {samples_path.name}: "
                    f"{', '.join(repr(u) for u in unknown)}",
                    "use sample ids from the sheet's 'sample' column"
                    + (f" ({hint})" if hint else ""),
                )
            )
        included = sample_df.loc[[s for s in sample_df.index if s not in excluded_set]]
        if len(sample_df) and included.empty:
            problems.append(
                Problem(
                    "config",
                    "key 'exclude_samples'",
                    "excludes every sample of the sheet",
                    "leave at least one sample in the cohort",
                )
            )
        primary = config.get("primary_timepoint")
        if primary is not None and not included.empty and "timepoint" in included:
            tps = sorted(set(included["timepoint"]) - {""})
            if str(primary) not in tps:
                problems.append(
                    Problem(
                        "config",
                        "key 'primary_timepoint'",
                        f"'{primary}' is not the timepoint of any (included) sample; "
                        f"the sheet has: {', '.join(tps)}",
                        "set primary_timepoint to the timepoint label of the infusion "
                        "products (column 'timepoint' of the sample sheet)",
                    )
                )
        if clinical_df is not None:
            _cross_check(sheet, sample_df, clinical_df, excluded_set, clinical_path, problems)

    if problems:
        raise InputError(problems)
    assert sample_df is not None and clinical_df is not None
    return sample_df, clinical_df


_CACHE_VERSION = 1


def _load_cache(path: Path) -> dict[str, Any]:
    import json

    try:
        with open(path) as fh:
            data = json.load(fh)
        if data.get("version") == _CACHE_VERSION and isinstance(data.get("rows"), dict):
            return data["rows"]
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def _save_cache(path: Path, rows: Mapping[str, Any]) -> None:
    import json
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"version": _CACHE_VERSION, "rows": rows}, fh, sort_keys=True)
        os.replace(tmp, path)
    except OSError as err:  # the cache is an optimisation: checks were done anyway
        logger.info("could not write the input-check cache %s: %s", path, err)


def _stamp(p: Path) -> list[int] | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _stamps(given: Path, resolved_gex: Path, vdj: str) -> dict[str, list[int] | None]:
    """Size/mtime of every file and folder the checks of one row depended on."""
    paths = [given]
    p = resolved_gex
    while p != given and given in p.parents:  # folders between a run folder and its h5
        paths.append(p)
        p = p.parent
    if resolved_gex.is_dir():
        try:
            m = locate_mtx(resolved_gex)
            paths += [m.matrix, m.features, m.barcodes]
        except LocateError:
            pass
    if vdj:
        paths.append(Path(vdj))
    return {str(x): _stamp(x) for x in dict.fromkeys(paths)}


def _check_samples(
    sheet: _Table,
    problems: list[Problem],
    *,
    check_files: bool,
    excluded: set[str],
    cache: dict[str, Any] | None = None,
) -> pd.DataFrame | None:
    fname = str(sheet.path)
    folder = sheet.path.parent
    first_line: dict[str, int] = {}
    first_path: dict[tuple[str, str], tuple[str, int]] = {}
    records = []
    for row, lineno in zip(sheet.rows, sheet.lines):
        sample = row.get("sample", "")
        if sample:
            why = describe_unsafe_id(sample)
            if why:
                problems.append(
                    Problem(
                        fname,
                        f"line {lineno}, column 'sample'",
                        f"sample id '{sample}' {why}",
                        "use only letters, digits, '_', '.' and '-', starting with a "
                        "letter or digit (ids become file names and shell arguments)",
                    )
                )
            if sample in first_line:
                problems.append(
                    Problem(
                        fname,
                        f"line {lineno}, column 'sample'",
                        f"sample id '{sample}' is also used on line {first_line[sample]}",
                        "give every library its own sample id",
                    )
                )
            else:
                first_line[sample] = lineno
        rec = dict(row)
        sample_problems: list[Problem] = []
        for col in ("gex", "vdj"):
            value = row.get(col, "")
            if not value:
                rec[col] = ""
                continue
            resolved = _resolve_path(value, folder)
            rec[col] = str(resolved)
            key = (col, str(resolved))
            if key in first_path:
                other, oline = first_path[key]
                problems.append(
                    Problem(
                        fname,
                        f"line {lineno}, column '{col}'",
                        f"path '{value}' is also used by sample '{other}' on line {oline}",
                        "every library needs its own files; correct the copied path",
                    )
                )
            else:
                first_path[key] = (sample, lineno)
        key = f"{rec['gex']}\t{rec['vdj']}"
        hit = cache.get(key) if cache is not None else None
        if (
            check_files
            and hit
            and all(
                _stamp(Path(f)) == (list(v) if v is not None else None)
                for f, v in hit["stamps"].items()
            )
        ):
            rec["gex"], rec["vdj"] = hit["gex"], hit["vdj"]
        elif check_files and row.get("gex", ""):
            given = Path(rec["gex"])
            sample_problems = _check_row_files(sheet, row, rec, lineno)
            if cache is not None and not sample_problems:
                cache[key] = {
                    "gex": rec["gex"],
                    "vdj": rec["vdj"],
                    "stamps": _stamps(given, Path(rec["gex"]), rec["vdj"]),
                }
        elif rec["gex"] and not check_files:
            p = Path(rec["gex"])
            if p.is_dir():
                try:
                    src = locate_gex(p)
                    rec["gex"] = str(src.path)
                    if not rec["vdj"] and src.default_vdj is not None:
                        rec["vdj"] = str(src.default_vdj)
                except LocateError:
                    pass
        if sample in excluded:
            for p in sample_problems:
                logger.warning("excluded sample %s: %s", sample, p)
        else:
            problems.extend(sample_problems)
        records.append(rec)
    if not records:
        return None
    # unique names: a duplicated header column is already reported by _read_tsv
    cols = list(dict.fromkeys(sheet.columns))
    for c in ("timepoint_day", "vdj"):
        if c not in cols:
            cols.append(c)
    df = pd.DataFrame.from_records(records, columns=cols)
    if "timepoint_day" in df:
        df["timepoint_day"] = pd.to_numeric(
            df["timepoint_day"].replace("", np.nan), errors="coerce"
        ).astype(float)
    df["vdj"] = df["vdj"].fillna("").astype(str)
    for c in df.columns:
        if c != "timepoint_day":
            df[c] = df[c].fillna("").astype(str)
    if "sample" not in df:
        return None
    df = df.set_index("sample", drop=True)
    df.index.name = "sample"
    return df


def _check_row_files(
    sheet: _Table, row: Mapping[str, str], rec: dict[str, Any], lineno: int
) -> list[Problem]:
    fname = str(sheet.path)
    sample = row.get("sample", "")
    out: list[Problem] = []
    gex = Path(rec["gex"])
    ctx = _RowCtx(sheet.path, sample, lineno, "gex")
    if not gex.exists():
        out.append(
            Problem(
                fname,
                f"line {lineno}, column 'gex'",
                f"'{row['gex']}' does not exist (resolved to {gex})",
                f"correct the path; relative paths are relative to the sheet's folder "
                f"{sheet.path.parent}",
            )
        )
        source = None
    else:
        try:
            source = locate_gex(gex)
        except LocateError as err:
            out.append(Problem(fname, f"line {lineno}, column 'gex'", err.what, err.fix))
            source = None
    if source is not None:
        rec["gex"] = str(source.path)
        if not rec["vdj"] and source.default_vdj is not None:
            rec["vdj"] = str(source.default_vdj)
            logger.info(
                "sample %s: TCR contigs from the cellranger multi folder: %s",
                sample,
                source.default_vdj,
            )
    vdj_src: tuple[VdjKind, Path] | None = None
    if rec["vdj"]:
        vdj = Path(rec["vdj"])
        if not vdj.exists():
            out.append(
                Problem(
                    fname,
                    f"line {lineno}, column 'vdj'",
                    f"'{row.get('vdj', '')}' does not exist (resolved to {vdj})",
                    f"correct the path (relative paths are relative to "
                    f"{sheet.path.parent}), or leave 'vdj' empty for a library without TCR",
                )
            )
        else:
            try:
                vdj_src = locate_vdj(vdj)
            except LocateError as err:
                out.append(Problem(fname, f"line {lineno}, column 'vdj'", err.what, err.fix))
    facts = None
    if source is not None:
        try:
            facts, issues, gfile = inspect_gex(source, want_barcodes=vdj_src is not None)
        except LocateError as err:
            issues, gfile = [("", err.what, err.fix)], source.path
        out.extend(_file_problems(gfile, issues, ctx))
    if vdj_src is not None:
        vctx = _RowCtx(sheet.path, sample, lineno, "vdj")
        tcr_barcodes, vissues = inspect_vdj(*vdj_src, max_rows=VDJ_CHECK_ROWS)
        out.extend(_file_problems(vdj_src[1], vissues, vctx))
        if facts is not None and facts.barcodes is not None and tcr_barcodes and not vissues:
            matched = match_barcodes(tcr_barcodes, facts.barcodes)
            if not matched:
                ex_t = sorted(tcr_barcodes)[0]
                ex_g = facts.barcodes[0]
                out.append(
                    Problem(
                        fname,
                        f"line {lineno}, column 'vdj'",
                        f"the TCR file {vdj_src[1]} shares no cell barcode with the GEX "
                        f"file {source.path if source else gex} (e.g. TCR '{ex_t}' vs "
                        f"GEX '{ex_g}')",
                        "pair the TCR and GEX files of the same library (same sample "
                        "row), or leave 'vdj' empty",
                    )
                )
            else:
                logger.debug(
                    "sample %s: %d of %d TCR barcodes have a GEX cell",
                    sample,
                    len(matched),
                    len(tcr_barcodes),
                )
    return out


def _check_clinical(
    table: _Table, schema: Mapping[str, Any], problems: list[Problem]
) -> pd.DataFrame | None:
    fname = str(table.path)
    if "patient" not in table.columns:
        return None
    first: dict[str, int] = {}
    for row, lineno in zip(table.rows, table.lines):
        pid = row.get("patient", "")
        if not pid:
            continue
        if pid in first:
            problems.append(
                Problem(
                    fname,
                    f"line {lineno}, column 'patient'",
                    f"patient '{pid}' is also listed on line {first[pid]}",
                    "keep one row per patient",
                )
            )
        else:
            first[pid] = lineno
    if not table.rows:
        return None
    # unique names: a duplicated header column is already reported by _read_tsv
    df = pd.DataFrame.from_records(table.rows, columns=list(dict.fromkeys(table.columns)))
    props = schema.get("properties", {})
    for c in df.columns:
        types = props.get(c, {}).get("type", "string")
        types = [types] if isinstance(types, str) else list(types)
        if c in props and ("number" in types or "integer" in types) and "string" not in types:
            df[c] = pd.to_numeric(df[c].replace("", np.nan), errors="coerce").astype(float)
        else:
            df[c] = df[c].astype(str)
    df = df.drop_duplicates("patient", keep="first").set_index("patient", drop=True)
    df.index.name = "patient"
    return df


def _cross_check(
    sheet: _Table,
    samples: pd.DataFrame,
    clinical: pd.DataFrame,
    excluded: set[str],
    clinical_path: Path,
    problems: list[Problem],
) -> None:
    if "patient" not in samples.columns:
        return
    known = set(clinical.index)
    lines: dict[str, list[int]] = {}
    for row, lineno in zip(sheet.rows, sheet.lines):
        pid = row.get("patient", "")
        if pid and row.get("sample", "") not in excluded and pid not in known:
            lines.setdefault(pid, []).append(lineno)
    for pid, lns in lines.items():
        also = f" (also lines {', '.join(map(str, lns[1:]))})" if len(lns) > 1 else ""
        problems.append(
            Problem(
                str(sheet.path),
                f"line {lns[0]}, column 'patient'",
                f"patient '{pid}' is not in the clinical table {clinical_path}{also}",
                f"add a row for '{pid}' to {clinical_path.name} (response NE if not "
                "evaluable) or correct the patient id",
            )
        )
    used = set(samples["patient"])
    unused = sorted(known - used)
    if unused:
        logger.warning(
            "%s: %d patient(s) have no sample in %s and are ignored: %s",
            clinical_path,
            len(unused),
            sheet.path.name,
            ", ".join(unused),
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Validate the sheets of a config file: ``python -m cartcohort.sheets config.yaml``.

    Prints every problem and returns 1 when there are any, 0 otherwise.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("configfile", help="workflow config (YAML)")
    parser.add_argument("--base-dir", default=".", help="folder config paths are relative to")
    parser.add_argument("--no-files", action="store_true", help="check the tables only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    with open(args.configfile) as fh:
        config = yaml.safe_load(fh)
    try:
        samples, clinical = prepare_inputs(
            config, base_dir=args.base_dir, check_files=not args.no_files
        )
    except InputError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"OK: {len(samples)} samples, {len(clinical)} patients", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
