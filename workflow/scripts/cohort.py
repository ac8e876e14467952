"""Entry script of rule `cohort`: the final MuData results/cohort.h5mu - `gex` (counts
layer, log-normalised X, embeddings, graph, UMAP, every call in obs) and `airr`
(scirpy) of the QC-passing cells."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    import anndata as ad

    from cartcohort import tl

    cohort = tl.annotate.assemble_cohort(
        tl.integrate.read_integrated(snakemake.input.merged, snakemake.input.integrated,
                                     umap_path=snakemake.input.umap),
        calls=ad.read_h5ad(snakemake.input.calls),
        airr=ad.read_h5ad(snakemake.input.airr),
    )
    cohort.write(snakemake.output.h5mu, compression="gzip")
