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

import anndata as ad
import numpy as np

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

    Returns
    -------
    AnnData
        :func:`assemble_integrated` of the files.
    """
    prepared = ad.read_h5ad(merged_path)
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
