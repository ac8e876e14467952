"""Entry script of rule `merge_samples`: the QC-passing cells of the included samples
merged, normalised, HVGs and the PCA shared by every method -> results/integrate/merged.h5ad,
and the warnings of the merge (genes not in every library) -> merge_warnings.tsv."""

from cartcohort.logs import script_logging

with script_logging(snakemake) as log:
    from cartcohort import pp, tables

    merged = pp.merge_samples(
        snakemake.input.h5mu,
        qc_table=tables.read_table(snakemake.input.qc),
        qc_table_path=str(snakemake.input.qc),
        **snakemake.params.merge_samples,
    )
    log.info("writing %s (%d cells x %d genes)", snakemake.output.h5ad, merged.adata.n_obs,
             merged.adata.n_vars)
    # an intermediate read by integrate/annotate: uncompressed is several times faster
    merged.adata.write_h5ad(snakemake.output.h5ad)
    tables.write_table(merged.warnings, snakemake.output.warnings)
