"""Entry script of rule `plot_integration`: UMAP of the method used downstream,
coloured by sample, patient, timepoint, batch, compartment and Leiden cluster."""

import anndata as ad

from cartcohort.integrate import read_integration
from cartcohort.logs import script_logging
from cartcohort.plots.integrate import umap_grid

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    adata = read_integration(smk.input.h5ad)
    layout = ad.read_h5ad(smk.input.umap)
    info = adata.uns["integration"]
    fig = umap_grid(
        layout.obsm["X_umap"],
        adata.obs,
        keys=list(smk.params.colour_by),
        title=f"UMAP after integration with {info['method']} "
              f"({adata.n_obs} cells, batch key '{info['batch_key']}')",
        seed=int(smk.params.seed),
    )
    fig.savefig(smk.output.umap, dpi=150)
    log.info("wrote %s", smk.output.umap)
