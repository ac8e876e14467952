"""Entry script of rule `cohort`: the final MuData results/cohort.h5mu - `gex` (counts
layer, log-normalised X, embeddings, graph, UMAP, every call in obs) and `airr`
(scirpy) of the QC-passing cells."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    import anndata as ad

    from cartcohort import tl

    # everything but the expression matrices, which are copied from merged.h5ad a block
    # of cells at a time (never all in memory)
    cohort = tl.annotate.assemble_cohort(
        tl.integrate.read_integrated(snakemake.input.merged, snakemake.input.integrated,
                                     umap_path=snakemake.input.umap, matrices=False),
        calls=ad.read_h5ad(snakemake.input.calls),
        airr=ad.read_h5ad(snakemake.input.airr),
    )
    tl.annotate.write_cohort(cohort, out_path=snakemake.output.h5mu,
                             merged_path=snakemake.input.merged)
