"""Entry script of rule `umap`: UMAP layout of the kNN graph of the method used
downstream -> results/integrate/umap.h5ad (obsm['X_umap'] only)."""

import anndata as ad
import pandas as pd

from cartcohort import integrate
from cartcohort.logs import script_logging

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    cfg = smk.params.umap
    integrated = integrate.read_integration(smk.input.h5ad)
    layout = integrate.umap_layout(
        integrated,
        min_dist=float(cfg["umap_min_dist"]),
        n_epochs=int(cfg["umap_n_epochs"]) if cfg.get("umap_n_epochs") else None,
        seed=int(smk.params.seed),
    )
    out = ad.AnnData(obs=pd.DataFrame(index=integrated.obs_names.copy()))
    out.obsm["X_umap"] = layout
    log.info("UMAP of %d cells -> %s", out.n_obs, smk.output.h5ad)
    out.write_h5ad(smk.output.h5ad)
