"""Read the gene-expression matrix of one library.

Inputs: Cell Ranger v3+ ``.h5``, MatrixMarket folders (``features.tsv`` or
legacy ``genes.tsv``), ``cellranger multi`` folders and ``.h5ad`` files with
raw integer counts. The result follows ``docs/DESIGN.md``: cells named
``<sample>_<barcode>``, ``X`` a ``float32`` CSR matrix of raw UMI counts,
``var`` with ``gene_ids``, ``feature_types`` and ``is_car``.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from ..errors import InputError, Problem
from ..sheets import (
    GexSource,
    car_feature_issues,
    inspect_gex,
    is_gzip,
    locate_mtx,
    read_lines,
)
from .locate import check_no_nul, gex_input, parsing, raise_issues

logger = logging.getLogger(__name__)

GENE_EXPRESSION = "Gene Expression"
ANTIBODY_CAPTURE = "Antibody Capture"
_KIND_WORDS = {
    "h5": "a Cell Ranger HDF5 matrix",
    "mtx": "a MatrixMarket matrix folder",
    "h5ad": "an AnnData .h5ad file",
}
#: Where each kind of input lists its features (messages).
_FEATURES_WHERE = {"h5": "dataset 'matrix/features/name'", "mtx": "features", "h5ad": "var"}


@dataclass(frozen=True)
class FeatureReport:
    """What :func:`read_library` did with the features of a library.

    Attributes
    ----------
    car_found
        Names of the CAR features found (kept in the RNA matrix whatever their type).
    car_missing
        Entries of ``car_features`` the library lacks (only with ``car_expected=False``:
        otherwise the library is refused).
    kept_apart
        Feature type -> number of features kept out of the RNA matrix in the ``prot``
        modality (``Antibody Capture``).
    left_out
        Feature type -> number of features of other types (CRISPR Guide Capture,
        Custom, Multiplexing Capture...) not loaded.
    """

    car_found: tuple[str, ...] = ()
    car_missing: tuple[str, ...] = ()
    kept_apart: dict[str, int] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=dict)


class GexLibrary(NamedTuple):
    """The GEX input of one library as read by :func:`read_library`."""

    #: Gene Expression (+ CAR) features of every cell.
    gex: ad.AnnData
    #: Antibody Capture features (``None`` when there are none).
    prot: ad.AnnData | None
    #: What was done with the features.
    features: FeatureReport


def _read_h5(path: Path) -> tuple[sp.csr_matrix, list[str], pd.DataFrame]:
    with h5py.File(path, "r") as f:
        m = f["matrix"]
        n_feat, n_cells = (int(x) for x in m["shape"][()])
        X = sp.csr_matrix(
            (m["data"][()], m["indices"][()], m["indptr"][()]), shape=(n_cells, n_feat)
        )
        barcodes = [b.decode() for b in m["barcodes"][()]]
        feats = m["features"]
        var = pd.DataFrame(
            {
                "gene_ids": [x.decode() for x in feats["id"][()]],
                "name": [x.decode() for x in feats["name"][()]],
                "feature_types": [x.decode() for x in feats["feature_type"][()]],
            }
        )
    return X, barcodes, var


def _read_mtx(folder: Path) -> tuple[sp.csr_matrix, list[str], pd.DataFrame]:
    files = locate_mtx(folder)
    check_no_nul(files.matrix)
    # a binary stream: scipy wraps text streams in a helper that prints "Exception
    # ignored" tracebacks when reading fails
    with (gzip.open if is_gzip(files.matrix) else open)(files.matrix, "rb") as fh:
        mat = scipy.io.mmread(fh)
    X = sp.csr_matrix(sp.coo_matrix(mat).T)
    barcodes = [line.split("\t")[0].strip() for line in read_lines(files.barcodes)]
    rows = [line.rstrip("\r").split("\t") for line in read_lines(files.features)]
    if files.legacy or all(len(r) == 2 for r in rows):
        var = pd.DataFrame(
            {
                "gene_ids": [r[0] for r in rows],
                "name": [r[1] if len(r) > 1 else r[0] for r in rows],
                "feature_types": GENE_EXPRESSION,
            }
        )
    else:
        var = pd.DataFrame(
            {
                "gene_ids": [r[0] for r in rows],
                "name": [r[1] for r in rows],
                "feature_types": [r[2] if len(r) > 2 else GENE_EXPRESSION for r in rows],
            }
        )
    return X, barcodes, var


def check_counts(X: Any, *, what: str) -> str | None:
    """Return a description of the first non-count value, or None when all are counts."""
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    data = np.asarray(data, dtype=np.float64)
    bad = (data != np.round(data)) | (data < 0) | ~np.isfinite(data)
    if bad.any():
        return f"{what} holds non-integer or negative values (e.g. {data[np.argmax(bad)]:.4g})"
    return None


def _read_h5ad(path: Path, *, sample: str) -> tuple[sp.csr_matrix, list[str], pd.DataFrame]:
    adata = ad.read_h5ad(path)
    choices: list[tuple[str, Any, pd.DataFrame, pd.Index]] = [
        ("X", adata.X, adata.var, adata.var_names)
    ]
    if "counts" in adata.layers:
        choices.append(("layers['counts']", adata.layers["counts"], adata.var, adata.var_names))
    if adata.raw is not None:
        choices.append(("raw.X", adata.raw.X, adata.raw.var, adata.raw.var_names))
    reasons = []
    chosen = None
    for name, X, var, names in choices:
        if X is None:
            continue
        why = check_counts(X, what=name)
        if why is None:
            chosen = (name, X, var, names)
            break
        reasons.append(why)
    if chosen is None:
        raise InputError(
            [
                Problem(
                    str(path),
                    "X",
                    "has no raw integer UMI counts: "
                    + "; ".join(reasons)
                    + " (normalised or log-transformed data cannot be re-analysed)",
                    "store raw counts in X, layers['counts'] or .raw (e.g. "
                    "adata.layers['counts'] = raw_counts before normalising), or give the "
                    "Cell Ranger matrix instead",
                )
            ]
        )
    name, X, var, names = chosen
    if name != "X":
        logger.info("%s: using %s (raw integer counts)", path, name)
    X = sp.csr_matrix(X)
    gene_ids = (
        var["gene_ids"].astype(str).tolist() if "gene_ids" in var else [str(n) for n in names]
    )
    ftypes = (
        var["feature_types"].astype(str).tolist()
        if "feature_types" in var
        else [GENE_EXPRESSION] * len(names)
    )
    var_df = pd.DataFrame(
        {"gene_ids": gene_ids, "name": [str(n) for n in names], "feature_types": ftypes}
    )
    if "barcode" in adata.obs:
        barcodes = adata.obs["barcode"].astype(str).tolist()
    else:
        barcodes = [str(b) for b in adata.obs_names]
        prefix = f"{sample}_"
        if barcodes and all(b.startswith(prefix) for b in barcodes):
            barcodes = [b[len(prefix) :] for b in barcodes]
    return X, barcodes, var_df


def make_unique(names: Sequence[str]) -> pd.Index:
    """``names`` as a unique index (anndata's ``make_index_unique``: ``a``, ``a-1``)."""
    return ad.utils.make_index_unique(pd.Index([str(n) for n in names], dtype=object))


def _subset(X: sp.csr_matrix, var: pd.DataFrame, mask: np.ndarray, obs: pd.DataFrame) -> ad.AnnData:
    sub = var.loc[mask].reset_index(drop=True)
    names = [n if n else i for n, i in zip(sub["name"], sub["gene_ids"])]
    out_var = pd.DataFrame(
        {
            "gene_ids": sub["gene_ids"].astype(str).to_numpy(),
            "feature_types": sub["feature_types"].astype(str).to_numpy(),
            "is_car": sub["is_car"].astype(bool).to_numpy(),
        },
        index=make_unique(names),
    )
    Xs = sp.csr_matrix(X[:, np.flatnonzero(mask)], dtype=np.float32)
    Xs.sort_indices()
    return ad.AnnData(X=Xs, obs=obs.copy(), var=out_var)


def library_chemistry(source: GexSource) -> str:
    """The library's chemistry as Cell Ranger recorded it (the ``chemistry_description``
    attribute of a ``.h5``, e.g. ``Single Cell 5' PE v2``); ``""`` where the format
    does not record it (MatrixMarket, h5ad). Kept in ``gex.uns['library']`` so that a
    new product can be checked against a frozen reference (issue #20)."""
    if source.kind != "h5":
        return ""
    with h5py.File(source.path, "r") as f:
        value = f.attrs.get("chemistry_description", b"")
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_matrix(
    source: GexSource, *, sample: str
) -> tuple[sp.csr_matrix, list[str], pd.DataFrame]:
    """Check and read a located GEX input: counts (cells x features), barcodes, var."""
    _, issues, gfile = inspect_gex(source)
    raise_issues(gfile, issues)
    fix = "the file is corrupt or truncated; copy it again from the Cell Ranger outs/ folder"
    with parsing(source.path, _KIND_WORDS[source.kind], fix):
        if source.kind == "h5":
            X, barcodes, var = _read_h5(source.path)
        elif source.kind == "mtx":
            X, barcodes, var = _read_mtx(source.path)
        else:
            X, barcodes, var = _read_h5ad(source.path, sample=sample)
    _check_matrix(source.path, X, barcodes)
    return X, barcodes, var


def _check_matrix(path: Path, X: sp.csr_matrix, barcodes: list[str]) -> None:
    """Raise :class:`InputError` for barcodes that do not fit the matrix or repeat, or
    values that are not counts."""
    if len(barcodes) != X.shape[0]:
        raise InputError(
            [
                Problem(
                    str(path),
                    "",
                    f"{len(barcodes)} barcodes for {X.shape[0]} cells",
                    "the files are inconsistent; copy them again from Cell Ranger",
                )
            ]
        )
    dup = pd.Index(barcodes)[pd.Index(barcodes).duplicated()]
    if len(dup):
        raise InputError(
            [
                Problem(
                    str(path),
                    "barcodes",
                    f"{len(dup)} barcode(s) occur more than once (e.g. '{dup[0]}')",
                    "give the matrix of one library; merged matrices need unique barcodes",
                )
            ]
        )
    why = check_counts(X, what="the matrix")
    if why is not None:
        raise InputError([Problem(str(path), "", why, "give raw UMI counts")])


def _type_counts(types: np.ndarray) -> dict[str, int]:
    """Feature type -> number of features, by type name."""
    return {str(k): int(v) for k, v in pd.Series(types).value_counts().sort_index().items()}


def _feature_masks(
    var: pd.DataFrame,
    car: Sequence[str],
    *,
    car_expected: bool,
    source: GexSource,
    sample: str,
) -> tuple[np.ndarray, np.ndarray, FeatureReport]:
    """Flag CAR features in ``var['is_car']``; masks of the GEX (+ CAR) and antibody
    features, and what was done with the features.

    Raises
    ------
    InputError
        When an entry of ``car`` is neither a feature name nor an id and
        ``car_expected`` (the same problem as the parse-time check).
    """
    var["is_car"] = var["name"].isin(car) | var["gene_ids"].isin(car)
    present = set(var["name"]) | set(var["gene_ids"])
    car_missing = tuple(c for c in dict.fromkeys(car) if c not in present)
    if car_missing and car_expected:
        names, ids = var["name"].tolist(), var["gene_ids"].tolist()
        issues = car_feature_issues(car, names, ids, where=_FEATURES_WHERE[source.kind])
        tag = f" (sample '{sample}')"
        raise InputError([Problem(str(source.path), w, what + tag, fix) for w, what, fix in issues])
    ft = var["feature_types"].to_numpy()
    gex_mask = (ft == GENE_EXPRESSION) | var["is_car"].to_numpy()
    prot_mask = (ft == ANTIBODY_CAPTURE) & ~var["is_car"].to_numpy()
    other = ~(gex_mask | prot_mask)
    report = FeatureReport(
        car_found=tuple(sorted(set(var.loc[var["is_car"], "name"]))),
        car_missing=car_missing,
        kept_apart=_type_counts(ft[prot_mask]),
        left_out=_type_counts(ft[other]),
    )
    if report.car_missing:
        logger.warning(
            "%s: CAR feature(s) %s not in the matrix (sample %s, car_expected false)",
            source.path,
            list(report.car_missing),
            sample,
        )
    if other.any():
        logger.info(
            "%s: leaving out %d feature(s) of other types: %s",
            source.path,
            int(other.sum()),
            ", ".join(f"{k} ({v})" for k, v in report.left_out.items()),
        )
    return gex_mask, prot_mask, report


def read_library(
    path: str | os.PathLike,
    *,
    sample: str,
    car_features: Sequence[str] = (),
    car_expected: bool = True,
) -> GexLibrary:
    """Read the gene-expression input of one library and say what was done with its
    features.

    Parameters
    ----------
    path, sample, car_features
        As for :func:`read_gex`.
    car_expected
        Whether the library must hold every entry of ``car_features``
        (sample-sheet column ``car_expected``); when false, a library without them
        is read and the missing entries are reported in ``features.car_missing``.

    Returns
    -------
    GexLibrary
        ``gex``, ``prot`` (as returned by :func:`read_gex`) and ``features``, a
        :class:`FeatureReport`: the CAR features found and missing, the feature
        types kept apart (``prot``) or left out.

    Raises
    ------
    InputError
        For unreadable, corrupt or normalised inputs, and for a CAR feature the
        library lacks while ``car_expected`` (naming the file, the sample and the
        closest feature names).
    """
    source = gex_input(path)
    X, barcodes, var = _read_matrix(source, sample=sample)
    car = [str(c) for c in car_features]
    gex_mask, prot_mask, report = _feature_masks(
        var, car, car_expected=car_expected, source=source, sample=sample
    )
    obs = pd.DataFrame(
        {"barcode": pd.Series(barcodes, dtype=object).to_numpy()},
        index=pd.Index([f"{sample}_{b}" for b in barcodes], dtype=object),
    )
    gex = _subset(X, var, gex_mask, obs)
    gex.uns["library"] = {"chemistry": library_chemistry(source)}
    prot = _subset(X, var, prot_mask, obs) if prot_mask.any() else None
    found_car = report.car_found
    logger.info(
        "%s: %d cells x %d GEX features%s%s",
        source.path,
        gex.n_obs,
        gex.n_vars,
        f" ({len(found_car)} CAR: {', '.join(found_car)})" if found_car else "",
        f", {prot.n_vars} antibody features" if prot is not None else "",
    )
    return GexLibrary(gex, prot, report)


def read_gex(
    path: str | os.PathLike,
    *,
    sample: str,
    car_features: Sequence[str] = (),
    car_expected: bool = True,
) -> tuple[ad.AnnData, ad.AnnData | None]:
    """Read the gene-expression matrix of one library.

    Parameters
    ----------
    path
        Cell Ranger v3+ ``.h5``, MatrixMarket folder (``matrix.mtx[.gz]``,
        ``features.tsv[.gz]`` or legacy ``genes.tsv[.gz]``, ``barcodes.tsv[.gz]``;
        ``.gz`` names on plain text are fine), ``cellranger multi`` folder, or
        ``.h5ad`` with raw integer counts in ``X``, ``layers['counts']`` or ``.raw``.
    sample
        Sample id; cells are named ``<sample>_<barcode>``.
    car_features
        Feature names (or ids) of the CAR transgene(s); kept in the GEX
        matrix whatever their feature type and flagged in ``var['is_car']``.
    car_expected
        Whether the library must hold every entry of ``car_features`` (see
        :func:`read_library`).

    Returns
    -------
    gex, prot
        ``gex``: Gene Expression (+ CAR) features; ``prot``: Antibody Capture
        features (``None`` when there are none). Features of other types are
        left out. Both share obs (all cells), with ``obs['barcode']``; ``X`` is
        CSR float32.

    Raises
    ------
    InputError
        For unreadable, corrupt or normalised inputs (naming the file), and for
        a CAR feature the library lacks while ``car_expected``.
    """
    lib = read_library(path, sample=sample, car_features=car_features, car_expected=car_expected)
    return lib.gex, lib.prot
