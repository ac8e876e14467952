"""Entry script of rule `umap`: UMAP layout of the kNN graph of the method used
downstream -> results/integrate/umap.h5ad (obsm['X_umap'] only)."""

from cartcohort.logs import script_logging

with script_logging(snakemake) as log:
    from cartcohort.tl import integrate

    layout = integrate.umap_layout(
        integrate.read_integration(snakemake.input.h5ad), **snakemake.params.umap_layout
    )
    log.info("UMAP of %d cells -> %s", layout.n_obs, snakemake.output.h5ad)
    layout.write_h5ad(snakemake.output.h5ad)
