"""Test oracle: the whole integration in one call, as the workflow's rules chain it
(merge_samples -> integrate -> umap -> annotate's reader), for tests only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad

from cartcohort.pp import prepare_cohort
from cartcohort.tl.integrate import (
    assemble_integrated,
    get_method,
    integrate_prepared,
    method_batches,
    umap_layout,
)
from cartcohort.errors import CartCohortError


def integrate_cohort(
    adata: ad.AnnData,
    *,
    method: str,
    batch_key: str = "batch",
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    leiden_resolutions: Sequence[float] = (0.5, 1.0),
    umap_min_dist: float = 0.3,
    umap_n_epochs: int | None = None,
    exclude_genes: Sequence[str] = (),
    scale: bool = True,
    hvg_flavor: str = "seurat_v3",
    seed: int = 0,
    n_threads: int = 1,
    method_params: Mapping[str, Any] | None = None,
) -> ad.AnnData:
    """Normalise, select HVGs, PCA, integrate, neighbours, UMAP and Leiden in one call:
    ``prepare_cohort``, ``integrate_prepared``, ``umap_layout`` and
    ``assemble_integrated`` chained; the method's checks run before the expensive steps.

    Returns
    -------
    AnnData
        See ``assemble_integrated``.
    """
    m = get_method(method)
    if not leiden_resolutions:
        raise CartCohortError("integrate.leiden_resolutions is empty; give at least one")
    if m.needs_batches:
        method_batches(adata.obs, batch_key, m.name)
        m.require()  # fail before the expensive steps
    prepared = prepare_cohort(
        adata, batch_key=batch_key, n_top_genes=n_top_genes, n_pcs=n_pcs,
        exclude_genes=exclude_genes, scale=scale, hvg_flavor=hvg_flavor, seed=seed,
    )
    integrated = integrate_prepared(
        prepared, method=method, batch_key=batch_key, n_neighbors=n_neighbors,
        leiden_resolutions=leiden_resolutions, embed=True, seed=seed, n_threads=n_threads,
        method_params=method_params,
    )
    layout = umap_layout(integrated, umap_min_dist=umap_min_dist, umap_n_epochs=umap_n_epochs,
                         seed=seed)
    return assemble_integrated(prepared, integrated, umap=layout.obsm["X_umap"])
