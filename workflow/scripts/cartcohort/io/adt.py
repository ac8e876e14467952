"""Antibody-capture (ADT) inputs beyond the filtered matrix: the library's raw matrix
(empty droplets for dsb) and the panel's antibody names (checked before any job runs).

Cell Ranger writes ``raw_feature_bc_matrix`` (every barcode) beside
``filtered_feature_bc_matrix`` (cells); :func:`raw_matrix_beside` finds it, and
:func:`read_empty_droplets` takes the non-cell barcodes whose total ADT counts lie in a
range (the dsb background droplets; Mulè et al. 2022 select them by protein library
size, e.g. log10 counts 1.5-3).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import InputError, Problem
from ..sheets import locate_mtx, read_lines
from .gex import ANTIBODY_CAPTURE, _read_matrix
from .locate import gex_input

_RAW_NAMES = {
    "filtered_feature_bc_matrix.h5": "raw_feature_bc_matrix.h5",
    "filtered_feature_bc_matrix": "raw_feature_bc_matrix",
    "sample_filtered_feature_bc_matrix.h5": "sample_raw_feature_bc_matrix.h5",
    "sample_filtered_feature_bc_matrix": "sample_raw_feature_bc_matrix",
}


def raw_matrix_beside(gex_path: str | os.PathLike) -> Path | None:
    """The Cell Ranger raw matrix beside a filtered one (``.h5`` or folder), else None.

    ``.../filtered_feature_bc_matrix.h5`` -> ``.../raw_feature_bc_matrix.h5``; the same
    for the folder and for an ``outs/`` folder given as the GEX input.
    """
    path = gex_input(gex_path).path
    candidates = []
    if path.name in _RAW_NAMES:
        candidates.append(path.with_name(_RAW_NAMES[path.name]))
    elif path.is_dir():
        candidates += [path / "raw_feature_bc_matrix.h5", path / "raw_feature_bc_matrix"]
    for cand in candidates:
        if cand.exists():
            return cand
    return None


def antibody_names(gex_path: str | os.PathLike, *, sample: str) -> list[str]:
    """Names of the Antibody Capture features of a GEX input (the features table only
    for h5 and mtx inputs, so it is cheap enough to run before any job)."""
    source = gex_input(gex_path)
    if source.kind == "h5":
        with h5py.File(source.path, "r") as f:
            feats = f["matrix"]["features"]
            names = [x.decode() for x in feats["name"][()]]
            types = [x.decode() for x in feats["feature_type"][()]]
        return [n for n, t in zip(names, types) if t == ANTIBODY_CAPTURE]
    if source.kind == "mtx":
        rows = [line.rstrip("\r").split("\t") for line in
                read_lines(locate_mtx(source.path).features)]
        return [r[1] for r in rows if len(r) > 2 and r[2] == ANTIBODY_CAPTURE]
    adt = read_adt_counts(gex_path, sample=sample)
    return [] if adt is None else list(adt.var_names)


def read_adt_counts(path: str | os.PathLike, *, sample: str) -> ad.AnnData | None:
    """The Antibody Capture features of a GEX input (any reader of :mod:`.gex`), all its
    barcodes, ``var_names`` the antibody names; None when it has none."""
    X, barcodes, var = _read_matrix(gex_input(path), sample=sample)
    mask = (var["feature_types"] == ANTIBODY_CAPTURE).to_numpy()
    if not mask.any():
        return None
    out = ad.AnnData(X=sparse.csr_matrix(X[:, np.flatnonzero(mask)]),
                     obs=pd.DataFrame(index=pd.Index(barcodes, dtype=object)),
                     var=pd.DataFrame(index=pd.Index(var.loc[mask, "name"], dtype=object)))
    return out


def read_empty_droplets(raw_path: str | os.PathLike, *, sample: str,
                        cell_barcodes: Sequence[str], antibodies: Sequence[str],
                        log10_range: tuple[float, float] = (1.5, 3.0)) -> ad.AnnData:
    """Empty droplets of a library's raw matrix: barcodes that are not cells, with total
    ADT counts ``c`` such that ``log10_range[0] <= log10(c) <= log10_range[1]``, the
    antibodies in the order of the cells' panel.

    Raises
    ------
    InputError
        The raw matrix lacks antibodies of the panel (it is from another library).
    """
    raw = read_adt_counts(raw_path, sample=sample)
    names = [str(a) for a in antibodies]
    have = set() if raw is None else set(raw.var_names)
    missing = [a for a in names if a not in have]
    if missing:
        raise InputError([Problem(str(raw_path), "features", f"lacks the antibodies "
                                  f"{', '.join(missing[:5])} of library {sample}",
                                  "give the raw_feature_bc_matrix of the same Cell Ranger run")])
    raw = raw[~raw.obs_names.isin(list(cell_barcodes)), names]
    total = np.asarray(raw.X.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        log_total = np.log10(total)
    keep = (log_total >= log10_range[0]) & (log_total <= log10_range[1])
    return raw[keep].copy()
