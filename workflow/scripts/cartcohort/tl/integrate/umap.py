"""The UMAP layout of the kNN graph of the method used downstream (rule ``umap``),
computed apart from the graph so that annotation does not wait for it."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from ...errors import CartCohortError


def umap_layout(
    integration: ad.AnnData,
    *,
    umap_min_dist: float = 0.3,
    umap_n_epochs: int | None = None,
    seed: int = 0,
) -> ad.AnnData:
    """UMAP of the kNN graph of one integrated method (step of rule ``umap``).

    Parameters
    ----------
    integration
        :func:`integrate_prepared` output (or :func:`read_integration`): ``obsp``
        graph, ``uns['integration']``, ``obsm['X_integrated']``.
    umap_min_dist
        UMAP ``min_dist`` (``integrate.umap_min_dist``).
    umap_n_epochs
        Optimisation epochs (``integrate.umap_n_epochs``); ``None`` = UMAP's default
        (500 up to 10,000 cells, 200 above).
    seed
        Random state (seeded UMAP runs single-threaded and is reproducible).

    Returns
    -------
    AnnData
        ``integrate/umap.h5ad``: the cells (``obs`` index only) with
        ``obsm['X_umap']``, cells x 2, float32.
    """
    import scanpy as sc

    for key in ("connectivities", "distances"):
        if key not in integration.obsp:
            raise CartCohortError(
                f"the integrated object has no obsp['{key}']. Fix: re-run rule integrate"
            )
    tmp = ad.AnnData(obs=pd.DataFrame(index=integration.obs_names.copy()))
    tmp.obsm["X_integrated"] = np.asarray(integration.obsm["X_integrated"], dtype=np.float32)
    tmp.obsp["connectivities"] = integration.obsp["connectivities"]
    tmp.obsp["distances"] = integration.obsp["distances"]
    tmp.uns["neighbors"] = {
        "connectivities_key": "connectivities", "distances_key": "distances",
        "params": {"use_rep": "X_integrated", "method": "umap",
                   "n_neighbors": int(integration.uns.get("integration", {}).get(
                       "n_neighbors", 15))},
    }
    sc.tl.umap(tmp, min_dist=float(umap_min_dist), random_state=int(seed),
               maxiter=int(umap_n_epochs) if umap_n_epochs else None)
    out = ad.AnnData(obs=pd.DataFrame(index=integration.obs_names.copy()))
    out.obsm["X_umap"] = np.asarray(tmp.obsm["X_umap"], dtype=np.float32)
    return out
