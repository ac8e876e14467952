"""Readers of the integration step's files, shared by the steps downstream of it
(annotation, metrics, figures) without pulling in the integration methods' packages.

- ``results/integrate/merged.h5ad`` (rule ``merge_samples``): expression of the
  QC-passing cells (``X`` log-normalised, ``layers['counts']``), HVGs, ``X_pca``.
- ``results/integrate/{method}.h5ad`` (rule ``integrate``): no expression matrix;
  ``obsm`` ``X_pca``/``X_integrated``, ``obsp`` graph, Leiden clusters of the method
  used downstream.
- ``results/integrate/umap.h5ad`` (rule ``umap``): ``obsm['X_umap']`` of that method.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...errors import CartCohortError


def assemble_integrated(
    prepared: ad.AnnData, integrated: ad.AnnData, *, umap: np.ndarray | None = None
) -> ad.AnnData:
    """The full integrated cohort: expression of the prepared cohort with the
    embedding, graph, clusters and settings of one method.

    Parameters
    ----------
    prepared
        :func:`cartcohort.pp.prepare_cohort` output (``X``, ``layers['counts']``).
    integrated
        :func:`integrate_prepared` output of the same cells, with ``embed=True``.
    umap
        Cells x 2 UMAP layout (``obsm['X_umap']`` of :func:`umap_layout`), stored as
        ``obsm['X_umap']`` when given.

    Returns
    -------
    AnnData
        As ``integrate/{method}.h5ad`` plus ``X`` and ``layers['counts']`` (the
        object annotation works on; see docs/DESIGN.md).
    """
    if not prepared.obs_names.equals(integrated.obs_names):
        raise CartCohortError(
            "the integrated embedding and the merged cohort hold different cells. Fix: "
            "re-run merge_samples and integrate (results/integrate/) together"
        )
    if not integrated.uns.get("integration", {}).get("embedded", True):
        raise CartCohortError(
            f"integration '{integrated.uns['integration']['method']}' was run without "
            "Leiden (it is not integrate.use). Fix: re-run the workflow so the "
            "method in integrate.use is embedded"
        )
    out = ad.AnnData(X=prepared.X, obs=integrated.obs.copy(), var=prepared.var.copy())
    for key in prepared.layers:
        out.layers[key] = prepared.layers[key]
    for key in prepared.varm:
        out.varm[key] = prepared.varm[key]
    for key in integrated.obsm:
        out.obsm[key] = integrated.obsm[key]
    for key in integrated.obsp:
        out.obsp[key] = integrated.obsp[key]
    if umap is not None:
        umap = np.asarray(umap, dtype=np.float32)
        if umap.shape[0] != out.n_obs:
            raise CartCohortError(
                f"the UMAP has {umap.shape[0]} rows for {out.n_obs} cells. Fix: re-run "
                "rules integrate and umap together"
            )
        out.obsm["X_umap"] = umap
    out.uns.update({k: v for k, v in integrated.uns.items()})
    return out


def read_prepared(path: str | os.PathLike, *, counts: bool = False) -> ad.AnnData:
    """Read ``integrate/merged.h5ad`` without ``X`` (and without the counts unless
    ``counts``): what an integration method needs.

    Parameters
    ----------
    path
        Output of rule ``merge_samples``.
    counts
        Also read ``layers['counts']`` (for a method with
        :attr:`Method.needs_counts`, such as scVI).

    Returns
    -------
    AnnData
        ``obs``, ``var`` (with ``highly_variable``), ``uns``, ``obsm['X_pca']`` and,
        with ``counts``, ``layers['counts']``; ``X`` is ``None``.
    """
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as f:
        missing = [k for k in ("obs", "var", "obsm", "uns") if k not in f]
        if missing or "X_pca" not in f["obsm"]:
            raise CartCohortError(
                f"{path}: lacks {missing or ['obsm/X_pca']}; it is not a merge_samples "
                "output. Fix: re-run the merge_samples rule"
            )
        out = ad.AnnData(obs=read_elem(f["obs"]), var=read_elem(f["var"]),
                         uns=read_elem(f["uns"]))
        out.obsm["X_pca"] = read_elem(f["obsm/X_pca"])
        if counts:
            out.layers["counts"] = read_elem(f["layers/counts"])
    return out


def read_integrated(
    merged_path: str | os.PathLike,
    integrated_path: str | os.PathLike,
    *,
    umap_path: str | os.PathLike | None = None,
    matrices: bool = True,
) -> ad.AnnData:
    """The full integrated cohort of the method used downstream.

    Parameters
    ----------
    merged_path
        ``integrate/merged.h5ad`` (rule ``merge_samples``).
    integrated_path
        ``integrate/{method}.h5ad`` of the method in ``integrate.use``.
    umap_path
        ``integrate/umap.h5ad`` (rule ``umap``); its layout becomes ``obsm['X_umap']``.
    matrices
        False: without ``X`` and ``layers['counts']`` (rule ``cohort`` copies them from
        the file, :func:`cartcohort.tl.annotate.write_cohort`).

    Returns
    -------
    AnnData
        :func:`assemble_integrated` of the files.
    """
    prepared = ad.read_h5ad(merged_path) if matrices else read_prepared(merged_path)
    umap = None
    if umap_path is not None:
        layout = ad.read_h5ad(umap_path)
        if not layout.obs_names.equals(prepared.obs_names):
            raise CartCohortError(
                f"{umap_path}: its cells differ from {merged_path}. Fix: re-run rules "
                "integrate and umap"
            )
        umap = layout.obsm["X_umap"]
    return assemble_integrated(prepared, read_integration(integrated_path), umap=umap)


def _gene_columns(g, idx: np.ndarray, *, block_rows: int,
                  totals: bool = False) -> tuple[sp.csr_matrix, np.ndarray | None]:
    """Columns ``idx`` of the on-disk CSR matrix ``g`` (and, with ``totals``, every row's
    sum over all columns), read ``block_rows`` rows at a time."""
    from ...h5csr import iter_csr

    parts, sums = [], []
    for x in iter_csr(g, block_rows=block_rows):
        if totals:
            sums.append(np.asarray(x.sum(axis=1)).ravel().astype(np.float64))
        parts.append(x[:, idx])
    if not parts:
        return sp.csr_matrix((0, len(idx)), dtype=np.float32), np.zeros(0) if totals else None
    return (sp.csr_matrix(sp.vstack(parts, format="csr")),
            np.concatenate(sums) if totals else None)


def read_integrated_genes(
    merged_path: str | os.PathLike,
    integrated_path: str | os.PathLike,
    *,
    genes: Callable[[pd.DataFrame], np.ndarray] | None,
    block_rows: int = 10_000,
) -> tuple[ad.AnnData, np.ndarray]:
    """:func:`read_integrated` with only some genes: what annotation needs of a cohort
    too large to hold its matrices.

    Parameters
    ----------
    merged_path, integrated_path
        As :func:`read_integrated`.
    genes
        Given the merged ``var``, a boolean mask of the genes to read (``X`` and
        ``layers['counts']``); None reads every gene.
    block_rows
        Cells read at a time.

    Returns
    -------
    (AnnData, numpy.ndarray)
        :func:`read_integrated` of the selected genes (the same values as reading the
        whole file and subsetting), and each cell's total count over **all** genes
        (the library size, which the subset alone would not give).
    """
    import h5py
    from anndata.io import read_elem

    with h5py.File(merged_path, "r") as f:
        if "layers/counts" not in f or "X" not in f:
            raise CartCohortError(
                f"{merged_path}: lacks X or layers/counts; it is not a merge_samples "
                "output. Fix: re-run the merge_samples rule"
            )
        var = read_elem(f["var"])
        mask = np.ones(len(var), dtype=bool) if genes is None else np.asarray(genes(var))
        idx = np.flatnonzero(mask)
        x, _ = _gene_columns(f["X"], idx, block_rows=int(block_rows))
        counts, totals = _gene_columns(f["layers/counts"], idx, block_rows=int(block_rows),
                                       totals=True)
        prepared = ad.AnnData(X=x, obs=read_elem(f["obs"]), var=var.iloc[idx].copy(),
                              layers={"counts": counts})
        if "varm" in f:
            for key, value in read_elem(f["varm"]).items():
                prepared.varm[key] = np.asarray(value)[idx]
    return assemble_integrated(prepared, read_integration(integrated_path)), totals


def read_integration(path: str | os.PathLike) -> ad.AnnData:
    """Read ``integrate/{method}.h5ad`` without its matrices (``X``, ``layers``).

    Parameters
    ----------
    path
        Output of rule ``integrate``.

    Returns
    -------
    AnnData
        ``obs``, ``var``, ``obsm``, ``obsp`` and ``uns`` - all that metrics and
        figures need - so large cohorts are not loaded into memory.
    """
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as f:
        missing = [k for k in ("obs", "var", "obsm", "obsp", "uns") if k not in f]
        if missing:
            raise CartCohortError(
                f"{path}: lacks {missing}; it is not an integrate output. Fix: re-run the "
                "integrate rule"
            )
        obs, var = read_elem(f["obs"]), read_elem(f["var"])
        obsm, obsp, uns = read_elem(f["obsm"]), read_elem(f["obsp"]), read_elem(f["uns"])
    out = ad.AnnData(obs=obs, var=var, obsm=obsm, obsp=obsp, uns=uns)
    if "integration" not in out.uns:
        raise CartCohortError(f"{path}: no uns['integration']; re-run the integrate rule")
    return out
