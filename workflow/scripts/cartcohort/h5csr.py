"""Sparse matrices written and read on disk a block of rows at a time, in anndata's
encoding (``encoding-type: csr_matrix``), so that no step holds a cohort's matrix: the
merge appends library after library (:mod:`cartcohort.pp.stream`) and the final
``cohort.h5mu`` copies the matrices of ``merged.h5ad`` block by block
(:func:`copy_csr`)."""

from __future__ import annotations

from collections.abc import Iterator

import h5py
import numpy as np
import scipy.sparse as sp


def create_csr(f: h5py.File | h5py.Group, key: str, n_cols: int, *,
               compression: str | None = None) -> h5py.Group:
    """An empty, appendable CSR matrix in anndata's encoding (64-bit ``indptr``).

    Parameters
    ----------
    f
        File or group to create it in.
    key
        Its path below ``f``.
    n_cols
        Columns.
    compression
        HDF5 filter of the datasets (e.g. ``gzip``), None for none.
    """
    g = f.create_group(key)
    g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0",
                    "shape": (0, n_cols)})
    opts = {"compression": compression} if compression else {}
    g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.float32,
                     chunks=(1 << 18,), **opts)
    g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int32,
                     chunks=(1 << 18,), **opts)
    g.create_dataset("indptr", data=np.zeros(1, dtype=np.int64), maxshape=(None,),
                     chunks=(1 << 16,), **opts)
    return g


def append_csr(g: h5py.Group, x: sp.csr_matrix) -> None:
    """Append the rows of ``x`` to a CSR group made by :func:`create_csr`."""
    n_rows, n_cols = g.attrs["shape"]
    if x.shape[1] != int(n_cols):
        raise ValueError(f"{x.shape[1]} columns appended to a matrix of {int(n_cols)}")
    nnz0, p0 = g["data"].shape[0], g["indptr"].shape[0]
    for name, values in (("data", x.data), ("indices", x.indices)):
        g[name].resize((nnz0 + x.nnz,))
        g[name][nnz0:] = values
    g["indptr"].resize((p0 + x.shape[0],))
    g["indptr"][p0:] = x.indptr[1:].astype(np.int64) + nnz0
    g.attrs["shape"] = (int(n_rows) + x.shape[0], int(n_cols))


def iter_csr(g: h5py.Group, *, block_rows: int) -> Iterator[sp.csr_matrix]:
    """The rows of an on-disk CSR matrix, ``block_rows`` at a time."""
    n_rows, n_cols = (int(v) for v in g.attrs["shape"])
    indptr = g["indptr"][:]
    for a in range(0, n_rows, block_rows):
        b = min(a + block_rows, n_rows)
        lo, hi = int(indptr[a]), int(indptr[b])
        yield sp.csr_matrix((g["data"][lo:hi], g["indices"][lo:hi], indptr[a:b + 1] - lo),
                            shape=(b - a, n_cols))


def copy_csr(src: h5py.Group, dst: h5py.File | h5py.Group, key: str, *, block_rows: int,
             compression: str | None = "gzip") -> None:
    """Copy the CSR matrix ``src`` to ``dst[key]`` block by block (re-chunked and
    compressed as ``compression``)."""
    g = create_csr(dst, key, int(src.attrs["shape"][1]), compression=compression)
    for x in iter_csr(src, block_rows=block_rows):
        append_csr(g, x)
