"""Readers for single-cell inputs: GEX (Cell Ranger h5, mtx folder, cellranger
multi, h5ad) and TCR (10x contig CSV/JSON, AIRR rearrangement TSV).

Everything returned follows ``docs/DESIGN.md``: cell ids ``<sample>_<barcode>``,
``X`` a ``float32`` CSR matrix of raw integer UMI counts, ``var`` with
``gene_ids``, ``feature_types`` and ``is_car``, and TCR data as scirpy AIRR
AnnData (``obsm['airr']``). Inputs are checked with the same cheap checks as
the sample sheet (:mod:`cartcohort.sheets`) before they are read, so a bad file
gives the same clear message whether it is met at parse time or here.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from . import airr as airr_reader
from .errors import CartCohortError, InputError, Problem
from .sheets import (
    BCR_LOCI,
    GexSource,
    LocateError,
    inspect_gex,
    inspect_vdj,
    is_gzip,
    locate_gex,
    locate_mtx,
    locate_vdj,
    match_barcodes,
    read_lines,
)

logger = logging.getLogger(__name__)

GENE_EXPRESSION = "Gene Expression"
ANTIBODY_CAPTURE = "Antibody Capture"
#: Obs columns taken from the sample-sheet row (DESIGN.md), in order.
OBS_META = ("sample", "patient", "timepoint", "timepoint_day", "compartment", "batch", "sort")
SUMMARY_COLUMNS = (
    "sample",
    "n_gex_cells",
    "n_tcr_barcodes",
    "n_gex_with_tcr",
    "n_tcr_without_gex",
    "n_bcr_contigs_dropped",
)


# --------------------------------------------------------------------------- GEX


def _raise_issues(file: Path, issues: Sequence[tuple[str, str, str]]) -> None:
    if issues:
        raise InputError([Problem(str(file), where, what, fix) for where, what, fix in issues])


#: What the third-party readers (pandas, json, scipy, h5py, gzip, scirpy) raise on
#: malformed content that the cheap checks of :mod:`cartcohort.sheets` let through.
_PARSE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # incl. pandas ParserError, json.JSONDecodeError, UnicodeDecodeError
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    OSError,  # incl. gzip.BadGzipFile, h5py read errors
    zlib.error,
)


@contextlib.contextmanager
def _parsing(
    path: Path, what: str, fix: str, extra: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Turn a reader's exception on malformed content into an :class:`InputError`
    naming ``path`` (the original exception is chained for the log)."""
    try:
        yield
    except (*_PARSE_ERRORS, *extra) as err:
        text = str(err).strip()
        msg = text.splitlines()[0][:200] if text else ""
        what_failed = f"cannot be read as {what} ({err.__class__.__name__}: {msg})"
        raise InputError([Problem(str(path), "", what_failed, fix)]) from err


def _check_no_nul(path: Path, *, chunk: int = 1 << 24) -> None:
    """Raise :class:`InputError` when a (possibly gzipped) text file holds a NUL byte.

    scipy's MatrixMarket reader (fast_matrix_market, scipy 1.17) crashes the
    interpreter with a segmentation fault on NUL bytes instead of raising.
    """
    opener = gzip.open if is_gzip(path) else open
    offset = 0
    with opener(path, "rb") as fh:
        while block := fh.read(chunk):
            at = block.find(b"\x00")
            if at >= 0:
                raise InputError(
                    [
                        Problem(
                            str(path),
                            f"byte {offset + at} (uncompressed)",
                            "holds a NUL byte: the file is corrupt (partial copy or disk error)",
                            "copy the folder again from the Cell Ranger outs/ folder",
                        )
                    ]
                )
            offset += len(block)


def _locate(path: str | os.PathLike) -> GexSource:
    try:
        return locate_gex(path)
    except LocateError as err:
        raise InputError([Problem(str(path), "", err.what, err.fix)]) from None


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
    _check_no_nul(files.matrix)
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


def _check_integer(X: Any, *, what: str) -> str | None:
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
        why = _check_integer(X, what=name)
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


def _make_unique(names: Sequence[str]) -> pd.Index:
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
        index=_make_unique(names),
    )
    Xs = sp.csr_matrix(X[:, np.flatnonzero(mask)], dtype=np.float32)
    Xs.sort_indices()
    return ad.AnnData(X=Xs, obs=obs.copy(), var=out_var)


def read_gex(
    path: str | os.PathLike,
    *,
    sample: str,
    car_features: Sequence[str] = (),
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

    Returns
    -------
    gex, prot
        ``gex``: Gene Expression (+ CAR) features; ``prot``: Antibody Capture
        features (``None`` when there are none). Both share obs (all cells),
        with ``obs['barcode']``; ``X`` is CSR float32.

    Raises
    ------
    InputError
        For unreadable, corrupt or normalised inputs (naming the file).
    """
    source = _locate(path)
    _, issues, gfile = inspect_gex(source)
    _raise_issues(gfile, issues)
    what = {
        "h5": "a Cell Ranger HDF5 matrix",
        "mtx": "a MatrixMarket matrix folder",
        "h5ad": "an AnnData .h5ad file",
    }[source.kind]
    fix = "the file is corrupt or truncated; copy it again from the Cell Ranger outs/ folder"
    with _parsing(source.path, what, fix):
        if source.kind == "h5":
            X, barcodes, var = _read_h5(source.path)
        elif source.kind == "mtx":
            X, barcodes, var = _read_mtx(source.path)
        else:
            X, barcodes, var = _read_h5ad(source.path, sample=sample)
    if len(barcodes) != X.shape[0]:
        raise InputError(
            [
                Problem(
                    str(source.path),
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
                    str(source.path),
                    "barcodes",
                    f"{len(dup)} barcode(s) occur more than once (e.g. '{dup[0]}')",
                    "give the matrix of one library; merged matrices need unique barcodes",
                )
            ]
        )
    why = _check_integer(X, what="the matrix")
    if why is not None:
        raise InputError([Problem(str(source.path), "", why, "give raw UMI counts")])

    car = {str(c) for c in car_features}
    var["is_car"] = var["name"].isin(car) | var["gene_ids"].isin(car)
    found_car = sorted(set(var.loc[var["is_car"], "name"]))
    if car and not found_car:
        logger.warning(
            "%s: none of the CAR features %s is in the matrix (sample %s)",
            source.path,
            sorted(car),
            sample,
        )
    ft = var["feature_types"].to_numpy()
    gex_mask = (ft == GENE_EXPRESSION) | var["is_car"].to_numpy()
    prot_mask = (ft == ANTIBODY_CAPTURE) & ~var["is_car"].to_numpy()
    other = ~(gex_mask | prot_mask)
    if other.any():
        kinds = pd.Series(ft[other]).value_counts().sort_index()
        logger.info(
            "%s: leaving out %d feature(s) of other types: %s",
            source.path,
            int(other.sum()),
            ", ".join(f"{k} ({v})" for k, v in kinds.items()),
        )
    obs = pd.DataFrame(
        {"barcode": pd.Series(barcodes, dtype=object).to_numpy()},
        index=pd.Index([f"{sample}_{b}" for b in barcodes], dtype=object),
    )
    gex = _subset(X, var, gex_mask, obs)
    prot = _subset(X, var, prot_mask, obs) if prot_mask.any() else None
    logger.info(
        "%s: %d cells x %d GEX features%s%s",
        source.path,
        gex.n_obs,
        gex.n_vars,
        f" ({len(found_car)} CAR: {', '.join(found_car)})" if found_car else "",
        f", {prot.n_vars} antibody features" if prot is not None else "",
    )
    return gex, prot


# --------------------------------------------------------------------------- TCR


def _read_airr(path: Path) -> ad.AnnData:
    """AIRR rearrangement TSV as scirpy AIRR AnnData (see :func:`cartcohort.airr.read_airr_tsv`:
    NA-like gene calls blanked, missing ``locus`` inferred from the gene calls)."""
    return airr_reader.read_airr_tsv(path)


def _drop_bcr(adata: ad.AnnData) -> tuple[ad.AnnData, int]:
    import awkward as ak

    arr = adata.obsm["airr"]
    flat = ak.flatten(arr["locus"], axis=1)
    layout = flat.layout.content if flat.layout.is_option else flat.layout
    if layout.parameter("__array__") == "string":
        hit = np.zeros(len(flat), dtype=bool)
        for locus in BCR_LOCI:
            hit |= ak.to_numpy(ak.fill_none(flat == locus, False))
    else:
        # no text locus at all (every locus missing) or mixed types: compare values
        hit = np.array([v in BCR_LOCI for v in ak.to_list(flat)], dtype=bool)
    is_bcr = ak.unflatten(hit, ak.num(arr, axis=1))
    n_bcr = int(hit.sum())
    if n_bcr == 0:
        return adata, 0
    kept = arr[~is_bcr]
    has_chain = ak.num(kept, axis=1).to_numpy() > 0
    out = adata[has_chain].copy()
    out.obsm["airr"] = kept[has_chain]
    return out, n_bcr


def read_tcr(
    path: str | os.PathLike,
    *,
    sample: str,
    barcodes: pd.Index | Sequence[str] | None = None,
) -> ad.AnnData:
    """Read the TCR contigs of one library as scirpy AIRR AnnData.

    Parameters
    ----------
    path
        10x ``filtered_contig_annotations.csv[.gz]`` (or ``all_contig_…``; only
        ``is_cell`` and ``high_confidence`` contigs are kept),
        ``all_contig_annotations.json[.gz]``, or AIRR rearrangement ``.tsv[.gz]``
        (``locus`` inferred from the gene calls when absent).
    sample
        Sample id; cells are named ``<sample>_<barcode>``.
    barcodes
        GEX cell barcodes (without the sample prefix). When given, only TCR
        cells with a GEX cell are kept and they take the GEX spelling of the
        barcode (a ``-1`` suffix missing on one side is tolerated).

    Returns
    -------
    AnnData
        scirpy AIRR AnnData (``obsm['airr']``), BCR chains (IGH/IGK/IGL)
        removed, obs ``barcode``; ``uns['cartcohort_load']`` holds
        ``n_tcr_barcodes`` (cells with a TCR chain), ``n_bcr_contigs_dropped``
        and, when ``barcodes`` is given, ``n_tcr_without_gex``.
    """
    try:
        kind, p = locate_vdj(path)
    except LocateError as err:
        raise InputError([Problem(str(path), "", err.what, err.fix)]) from None
    _, issues = inspect_vdj(kind, p)
    _raise_issues(p, issues)
    what = {
        "airr": "an AIRR rearrangement TSV",
        "10x_json": "10x all_contig_annotations JSON",
        "10x_csv": "a 10x contig table",
    }[kind]
    fix = (
        "the file is corrupt, truncated or edited by hand; copy it again from the Cell "
        "Ranger vdj_t outs/ folder (or fix the value named above)"
    )
    with _parsing(p, what, fix):
        if kind == "airr":
            adata = _read_airr(p)
        elif kind == "10x_json":
            adata = airr_reader.read_10x_json(p, filtered=True)
        else:
            adata = airr_reader.read_10x_csv(p, filtered=True)
    if adata.n_obs == 0:
        raise InputError(
            [
                Problem(
                    str(p),
                    "",
                    "has no contig of a cell with high confidence (is_cell and "
                    "high_confidence true), so no TCR cell",
                    "give the contig file of a successful Cell Ranger vdj run (check its "
                    "web_summary), or leave 'vdj' empty for this library",
                )
            ]
        )
    adata.obs_names = adata.obs_names.astype(str)
    adata, n_bcr = _drop_bcr(adata)
    if n_bcr:
        logger.info("%s: dropped %d BCR contig(s) (IGH/IGK/IGL)", p, n_bcr)
    stats: dict[str, int] = {"n_tcr_barcodes": int(adata.n_obs), "n_bcr_contigs_dropped": n_bcr}
    if barcodes is not None:
        gex_bc = [str(b) for b in barcodes]
        mapping = match_barcodes(adata.obs_names, gex_bc)
        order = {b: i for i, b in enumerate(gex_bc)}
        keep = [b for b in adata.obs_names if b in mapping]
        targets = [mapping[b] for b in keep]
        if len(set(targets)) != len(targets):
            raise CartCohortError(
                f"{p}: several TCR barcodes map to the same GEX barcode (with and without "
                "a '-1' suffix). Fix: use one barcode spelling in the contig file."
            )
        stats["n_tcr_without_gex"] = int(adata.n_obs - len(keep))
        adata = adata[keep].copy()
        adata.obs_names = pd.Index(targets, dtype=object)
        idx = np.argsort([order[t] for t in targets], kind="mergesort")
        adata = adata[idx].copy()
    else:
        idx = np.argsort(adata.obs_names.to_numpy(dtype=str), kind="mergesort")
        adata = adata[idx].copy()
    adata.obs["barcode"] = adata.obs_names.to_numpy(dtype=object)
    adata.obs_names = pd.Index([f"{sample}_{b}" for b in adata.obs_names], dtype=object)
    adata.uns["cartcohort_load"] = stats
    logger.info("%s: %d cells with TCR chains kept", p, adata.n_obs)
    return adata


# --------------------------------------------------------------------------- one library


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
                    "Fix: pass the whole row (sample_meta) as meta."
                )
            values[key] = str(meta[key])
    return pd.DataFrame({k: [v] * len(index) for k, v in values.items()}, index=index)


def _add_meta(adata: ad.AnnData, meta_obs: pd.DataFrame) -> None:
    m = meta_obs.reindex(adata.obs_names)
    for col in reversed(meta_obs.columns):
        if col in adata.obs:
            del adata.obs[col]
        adata.obs.insert(0, col, m[col].to_numpy())


def load_sample(
    *,
    sample: str,
    gex_path: str | os.PathLike,
    vdj_path: str | os.PathLike | None,
    meta: Mapping[str, Any],
    car_features: Sequence[str] = (),
) -> tuple[Any, pd.DataFrame]:
    """Load one library into a MuData (``gex`` [+ ``airr``] [+ ``prot``]).

    Parameters
    ----------
    sample
        Sample id.
    gex_path, vdj_path
        Inputs as accepted by :func:`read_gex` / :func:`read_tcr`; ``vdj_path``
        empty or ``None`` for a library without TCR.
    meta
        The sample-sheet row (``patient``, ``timepoint``, ``timepoint_day``,
        ``compartment``, ``batch``, ``sort``); copied into ``obs`` of every
        modality (strings; ``timepoint_day`` float, NaN when missing).
    car_features
        CAR feature names (see :func:`read_gex`).

    Returns
    -------
    mdata, summary
        The MuData (``airr`` holds only TCR cells that have a GEX cell) and a
        one-row table with :data:`SUMMARY_COLUMNS`.
    """
    import mudata as md

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
        _add_meta(airr, meta_obs)
        mods["airr"] = airr
    if prot is not None:
        _add_meta(prot, meta_obs)
        mods["prot"] = prot
    with md.set_options(pull_on_update=False):
        mdata = md.MuData(mods)
    return mdata, pd.DataFrame([summary], columns=list(SUMMARY_COLUMNS))


# --------------------------------------------------------------------------- merging samples


def _has_ids(adata: ad.AnnData) -> bool:
    if "gene_ids" not in adata.var:
        return False
    ids = adata.var["gene_ids"].astype(str)
    if (ids == "").any() or ids.isna().any() or ids.duplicated().any():
        return False
    return bool((ids.to_numpy() != adata.var_names.to_numpy()).mean() > 0.5)


def harmonise_genes(
    adatas: Sequence[ad.AnnData],
    *,
    join: Literal["intersect", "union"] = "intersect",
) -> tuple[list[ad.AnnData], pd.DataFrame]:
    """Give several samples the same genes, in the same order.

    Genes are matched by Ensembl id (``var['gene_ids']``) when every sample
    has real ids, else by symbol. ``intersect`` keeps genes present in every
    sample; ``union`` keeps all, with zero counts where a gene is absent. CAR
    features (``var['is_car']``) are always kept (zero-filled where absent) so
    CAR detection does not depend on the join. Symbols of the result are made
    unique (``make_unique`` style).

    Parameters
    ----------
    adatas
        AnnData objects with raw counts (``var`` as written by :func:`read_gex`).
    join
        ``intersect`` or ``union``.

    Returns
    -------
    adatas, report
        New AnnData objects (same obs, harmonised var, CSR ``X``; layers are
        not carried) and one row per gene not present in every sample:
        ``gene_id, symbol, n_samples, n_samples_present, action`` (``dropped``
        or ``zero_filled``).
    """
    if join not in ("intersect", "union"):
        raise CartCohortError(f"harmonise_genes: join must be 'intersect' or 'union', not {join!r}")
    if not adatas:
        return [], pd.DataFrame(
            columns=["gene_id", "symbol", "n_samples", "n_samples_present", "action"]
        )
    by_id = all(_has_ids(a) for a in adatas)
    keys_per: list[list[str]] = []
    info: dict[str, dict[str, Any]] = {}
    count: dict[str, int] = {}
    for a in adatas:
        if by_id:
            keys = a.var["gene_ids"].astype(str).tolist()
        else:
            keys = [str(v) for v in a.var_names]
        keys_per.append(keys)
        is_car = a.var["is_car"].astype(bool).tolist() if "is_car" in a.var else [False] * a.n_vars
        ftypes = (
            a.var["feature_types"].astype(str).tolist()
            if "feature_types" in a.var
            else [GENE_EXPRESSION] * a.n_vars
        )
        ids = a.var["gene_ids"].astype(str).tolist() if "gene_ids" in a.var else list(a.var_names)
        for k, sym, gid, car, ftype in zip(keys, a.var_names, ids, is_car, ftypes):
            count[k] = count.get(k, 0) + 1
            if k not in info:
                info[k] = {
                    "symbol": str(sym),
                    "gene_id": gid,
                    "is_car": car,
                    "feature_types": ftype,
                }
            elif car:
                info[k]["is_car"] = True
    n = len(adatas)
    ordered = list(info)  # first-seen order: genes of sample 1, then new ones
    if join == "intersect":
        kept = [k for k in ordered if count[k] == n or info[k]["is_car"]]
    else:
        kept = ordered
    kept_set = set(kept)
    report = pd.DataFrame(
        [
            {
                "gene_id": info[k]["gene_id"],
                "symbol": info[k]["symbol"],
                "n_samples": n,
                "n_samples_present": count[k],
                "action": "zero_filled" if k in kept_set else "dropped",
            }
            for k in ordered
            if count[k] < n
        ],
        columns=["gene_id", "symbol", "n_samples", "n_samples_present", "action"],
    )
    symbols = [info[k]["symbol"] for k in kept] if by_id else list(kept)
    var = pd.DataFrame(
        {
            "gene_ids": [info[k]["gene_id"] for k in kept],
            "feature_types": [info[k]["feature_types"] for k in kept],
            "is_car": np.array([bool(info[k]["is_car"]) for k in kept], dtype=bool),
        },
        index=_make_unique(symbols),
    )
    col_of = {k: j for j, k in enumerate(kept)}
    out = []
    for a, keys in zip(adatas, keys_per):
        src = [i for i, k in enumerate(keys) if k in kept_set]
        dst = [col_of[keys[i]] for i in src]
        P = sp.csr_matrix(
            (np.ones(len(src), dtype=np.float32), (src, dst)), shape=(a.n_vars, len(kept))
        )
        X = sp.csr_matrix(sp.csr_matrix(a.X, dtype=np.float32) @ P, dtype=np.float32)
        X.sort_indices()
        out.append(
            ad.AnnData(X=X, obs=a.obs.copy(), var=var.copy(), obsm=dict(a.obsm), uns=dict(a.uns))
        )
    n_drop = int((report["action"] == "dropped").sum())
    n_fill = int((report["action"] == "zero_filled").sum())
    logger.info(
        "harmonised %d samples by %s (%s): %d genes kept, %d dropped, %d zero-filled",
        n,
        "gene id" if by_id else "symbol",
        join,
        len(kept),
        n_drop,
        n_fill,
    )
    return out, report
