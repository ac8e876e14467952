"""Entry script of rule `clonotypes`: scirpy clonotypes within each patient."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import tables, tl

    result = tl.clonotypes.cohort_clonotypes(
        snakemake.input.h5mu,
        qc_samples=tables.read_table(snakemake.input.qc_samples),
        n_jobs=snakemake.threads,
        **snakemake.params.cohort_clonotypes,
    )
    tables.write_table(result.clonotypes, snakemake.output.clonotypes)
    tables.write_table(result.public, snakemake.output.public,
                       sort_by=["cdr3_aa_vj", "cdr3_aa_vdj"])
    result.airr.write_h5ad(snakemake.output.airr, compression="gzip")
