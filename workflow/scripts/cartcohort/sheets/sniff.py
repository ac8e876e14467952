"""Cheap checks of a located GEX input: headers, shapes and barcodes, not the counts.

Each check returns ``(facts, issues)``, where issues are ``(where, what, fix)``
tuples about the checked file; the caller turns them into
:class:`~cartcohort.errors.Problem` objects naming the file.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .locate import GexSource, MtxFiles, locate_mtx
from .textfiles import open_text, read_lines

Issue = tuple[str, str, str]

_H5_DATASETS = (
    "barcodes",
    "data",
    "indices",
    "indptr",
    "shape",
    "features/id",
    "features/name",
    "features/feature_type",
)
_CORRUPT_H5 = "the file is corrupt; copy it again from Cell Ranger"


@dataclass
class GexFacts:
    """What :func:`inspect_gex` learnt about a GEX file.

    ``feature_names``/``feature_ids`` (with ``want_features``) are those of the
    matrix the reader uses, and ``features_where`` the part of the file that
    lists them (for messages).
    """

    n_cells: int | None = None
    barcodes: list[str] | None = None
    feature_names: list[str] | None = None
    feature_ids: list[str] | None = None
    features_where: str = ""


def _decode(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]


_DECODED: dict[bytes, list[str]] = {}
_DECODED_MAX = 8


def _decode_shared(values: np.ndarray) -> list[str]:
    """:func:`_decode` of a feature list, decoded once per distinct content.

    The libraries of a cohort are mapped to one or a few references, so a sheet of
    1,000 libraries holds the same 30k-feature lists 1,000 times; decoding each was
    most of the parse-time check. The list returned is shared: callers must not
    change it.
    """
    key = hashlib.blake2b(values.tobytes(), digest_size=20).digest() + str(values.dtype).encode()
    hit = _DECODED.get(key)
    if hit is None:
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.pop(next(iter(_DECODED)))
        hit = _DECODED[key] = _decode(values)
    return hit


def _h5_strings(obj: Any) -> list[str]:
    """Strings of an h5ad obs column/index (plain dataset or categorical group)."""
    if isinstance(obj, h5py.Group):
        cats = _decode(obj["categories"][()])
        codes = obj["codes"][()]
        return [cats[c] if c >= 0 else "" for c in codes]
    return _decode(obj[()])


# --------------------------------------------------------------------------- Cell Ranger h5


def _not_v3_issue(f: h5py.File) -> Issue:
    """The issue of an HDF5 file without a ``matrix`` group (v2 matrix or another file)."""
    v2 = [k for k in f.keys() if isinstance(f[k], h5py.Group) and "genes" in f[k]]
    if v2:
        what = (
            f"is a Cell Ranger v2 matrix (genome group '{v2[0]}'), not the "
            "v3+ layout with a 'matrix' group"
        )
        fix = "point 'gex' at the filtered_gene_bc_matrices/<genome>/ folder of " "that run instead"
    else:
        what = (
            "has no 'matrix' group, so it is not a Cell Ranger v3+ "
            f"feature-barcode matrix (top-level keys: {sorted(f.keys())[:5]})"
        )
        fix = (
            "give the filtered_feature_bc_matrix.h5 written by Cell Ranger; "
            "AnnData files must be named *.h5ad"
        )
    return ("", what, fix)


def _h5_missing(m: h5py.Group) -> list[str]:
    """Datasets of a v3+ ``matrix`` group that are absent."""
    present = set(m.keys())
    if "features" in present and isinstance(m["features"], h5py.Group):
        present |= {f"features/{k}" for k in m["features"].keys()}
    return [k for k in _H5_DATASETS if k not in present]


def _h5_shape_issues(m: h5py.Group, n_feat: int, n_cells: int, issues: list[Issue]) -> None:
    """Append the issues of datasets whose lengths disagree with ``matrix/shape``."""
    if m["barcodes"].shape[0] != n_cells:
        issues.append(
            (
                "dataset 'matrix/barcodes'",
                f"has {m['barcodes'].shape[0]} barcodes but matrix/shape says " f"{n_cells} cells",
                _CORRUPT_H5,
            )
        )
    if m["indptr"].shape[0] != n_cells + 1:
        issues.append(
            (
                "dataset 'matrix/indptr'",
                f"has length {m['indptr'].shape[0]}, expected {n_cells + 1} " "(cells + 1)",
                _CORRUPT_H5,
            )
        )
    if m["features/id"].shape[0] != n_feat:
        issues.append(
            (
                "dataset 'matrix/features/id'",
                f"has {m['features/id'].shape[0]} features but matrix/shape says " f"{n_feat}",
                _CORRUPT_H5,
            )
        )
    if m["data"].shape[0] != m["indices"].shape[0]:
        issues.append(
            (
                "dataset 'matrix/data'",
                f"has {m['data'].shape[0]} values but matrix/indices has "
                f"{m['indices'].shape[0]}",
                _CORRUPT_H5,
            )
        )


def _h5_matrix_issues(
    m: h5py.Group, facts: GexFacts, issues: list[Issue], *, want_barcodes: bool, want_features: bool
) -> None:
    """Check an opened v3+ ``matrix`` group: fill ``facts``, append to ``issues``."""
    shape = [int(x) for x in m["shape"][()]]
    n_feat, n_cells = shape[0], shape[1]
    facts.n_cells = n_cells
    _h5_shape_issues(m, n_feat, n_cells, issues)
    ftype = m["features/feature_type"][()]
    gene_expression = (ftype == b"Gene Expression") | (ftype == "Gene Expression")
    if n_feat and not np.any(gene_expression):
        ftypes = set(_decode(np.unique(ftype)))
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
    if want_features and not issues:
        facts.feature_names = _decode_shared(m["features/name"][()])
        facts.feature_ids = _decode_shared(m["features/id"][()])
        facts.features_where = "dataset 'matrix/features/name'"


def _check_h5(
    path: Path, *, want_barcodes: bool, want_features: bool = False
) -> tuple[GexFacts, list[Issue]]:
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
                return facts, [_not_v3_issue(f)]
            m = f["matrix"]
            missing = _h5_missing(m)
            if missing:
                return facts, [
                    (
                        "group 'matrix'",
                        f"lacks dataset(s) {', '.join(repr(k) for k in missing)}",
                        "re-export the matrix with Cell Ranger v3 or later",
                    )
                ]
            _h5_matrix_issues(
                m, facts, issues, want_barcodes=want_barcodes, want_features=want_features
            )
    except (OSError, KeyError, ValueError, TypeError) as err:
        issues.append(
            (
                "",
                f"is corrupt: reading it failed with {err.__class__.__name__}: {err}",
                "copy the file again from the Cell Ranger outs/ folder",
            )
        )
    return facts, issues


# --------------------------------------------------------------------------- MatrixMarket folder


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


def _mtx_size_issues(files: MtxFiles, rows: int, cols: int, n_ft: int, n_bc: int) -> list[Issue]:
    """Issues of a size line that disagrees with the feature and barcode files."""
    fix = (
        "the files come from different runs or are truncated; copy the folder again "
        "from the Cell Ranger outs/ folder"
    )
    where = f"{files.matrix.name}: size line"
    if (rows, cols) == (n_bc, n_ft) and rows != cols:
        return [
            (
                where,
                f"says {rows} rows x {cols} columns, which is barcodes x features: "
                "the matrix is transposed (Cell Ranger writes features x barcodes)",
                "write the matrix as features (rows) x barcodes (columns)",
            )
        ]
    issues: list[Issue] = []
    if rows != n_ft:
        issues.append(
            (where, f"says {rows} features (rows) but {files.features.name} has {n_ft} lines", fix)
        )
    if cols != n_bc:
        what = f"says {cols} barcodes (columns) but {files.barcodes.name} has {n_bc} lines"
        issues.append((where, what, fix))
    return issues


def _mtx_features(features: list[str], facts: GexFacts, where: str) -> None:
    """Fill the feature ids and names of ``facts`` from the lines of features.tsv."""
    rows = [line.rstrip("\r").split("\t") for line in features]
    facts.feature_ids = [r[0] for r in rows]
    facts.feature_names = [r[1] if len(r) > 1 else r[0] for r in rows]
    facts.features_where = where


def _check_mtx(
    folder: Path, *, want_barcodes: bool, want_features: bool = False
) -> tuple[GexFacts, list[Issue], MtxFiles]:
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
    issues += _mtx_size_issues(files, rows, cols, n_ft, n_bc)
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
    if want_features and not issues:
        _mtx_features(features, facts, files.features.name)
    return facts, issues, files


# --------------------------------------------------------------------------- h5ad


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


def _h5ad_counts(f: h5py.File) -> tuple[str | None, list[Issue]]:
    """Which of ``X``, ``layers['counts']``, ``raw.X`` holds raw integer counts (the
    first that does, as the reader picks it); the issue when none does."""
    candidates = [("X", f["X"])]
    if "layers" in f and "counts" in f["layers"]:
        candidates.append(("layers['counts']", f["layers"]["counts"]))
    if "raw" in f and "X" in f["raw"]:
        candidates.append(("raw.X", f["raw"]["X"]))
    first_bad: tuple[str, float | None] | None = None
    for name, obj in candidates:
        ok, bad = _integer_sample(_h5ad_matrix_sample(obj))
        if ok:
            return name, []
        if first_bad is None:
            first_bad = (name, bad)
    assert first_bad is not None
    return None, [
        (
            first_bad[0],
            f"holds non-integer or negative values (e.g. {first_bad[1]:.4g}): "
            "looks normalised/log-transformed, and no layers['counts'] or .raw "
            "with raw integer UMI counts was found",
            "save raw UMI counts in X, layers['counts'] or .raw, or give the "
            "Cell Ranger matrix instead",
        )
    ]


def _h5ad_features(f: h5py.File, counts: str, facts: GexFacts) -> None:
    """Fill the feature names (var index) and ids (``var['gene_ids']``, else the
    names) of ``facts`` from the var of the matrix ``counts`` the reader uses."""
    where = "raw/var" if counts == "raw.X" else "var"
    var = f[where]
    names = _h5_strings(var[var.attrs.get("_index", "_index")])
    facts.feature_names = names
    facts.feature_ids = _h5_strings(var["gene_ids"]) if "gene_ids" in var else names
    facts.features_where = where


def _check_h5ad(
    path: Path, *, want_barcodes: bool, want_features: bool = False
) -> tuple[GexFacts, list[Issue]]:
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
            counts, issues = _h5ad_counts(f)
            if want_features and counts is not None:
                _h5ad_features(f, counts, facts)
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
    source: GexSource, *, want_barcodes: bool = False, want_features: bool = False
) -> tuple[GexFacts, list[Issue], Path]:
    """Cheaply check a located GEX input.

    Parameters
    ----------
    source
        The located input (:func:`~.locate.locate_gex`).
    want_barcodes
        Also read the cell barcodes (``facts.barcodes``) when the file has no issue.
    want_features
        Also read the feature names and ids (``facts.feature_names``,
        ``facts.feature_ids``) when the file has no issue.

    Returns
    -------
    facts, issues, file
        ``issues`` are ``(where, what, fix)`` about ``file`` (the file to name
        in messages: the h5/h5ad, or the mtx folder).
    """
    want = {"want_barcodes": want_barcodes, "want_features": want_features}
    if source.kind == "h5":
        facts, issues = _check_h5(source.path, **want)
        return facts, issues, source.path
    if source.kind == "h5ad":
        facts, issues = _check_h5ad(source.path, **want)
        return facts, issues, source.path
    facts, issues, _ = _check_mtx(source.path, **want)
    return facts, issues, source.path
