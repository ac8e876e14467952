"""Entry script of rule `merge_samples`: the QC-passing cells of the included samples
merged, normalised, HVGs and the PCA shared by every method, written library by library
(out of core) -> results/integrate/merged.h5ad, and the warnings of the merge (genes not
in every library) -> merge_warnings.tsv."""

from cartcohort.logs import script_logging

with script_logging(snakemake) as log:
    from cartcohort import tables
    from cartcohort.pp import stream

    merged = stream.merge_samples(
        snakemake.input.h5mu,
        out_path=snakemake.output.h5ad,
        qc_table=tables.read_table(snakemake.input.qc),
        qc_table_path=str(snakemake.input.qc),
        threads=snakemake.threads,
        **snakemake.params.merge_samples,
    )
    log.info("wrote %s (%d cells x %d genes)", snakemake.output.h5ad, *merged.shape)
    tables.write_table(merged.warnings, snakemake.output.warnings)
