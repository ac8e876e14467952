"""Entry script of rule `plot_integration`: UMAP of the method used downstream,
coloured by sample, patient, timepoint, batch, compartment and Leiden cluster."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    import anndata as ad

    from cartcohort import pl
    from cartcohort.tl import integrate

    pl.integrate.integration_umap(
        integrate.read_integration(snakemake.input.h5ad),
        ad.read_h5ad(snakemake.input.umap),
        path=snakemake.output.umap,
        **snakemake.params.integration_umap,
    )
