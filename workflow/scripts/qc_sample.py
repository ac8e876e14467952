"""Entry script of rule `qc_sample`: QC of one library (all cells kept, qc_* columns added)."""

from cartcohort.logs import script_logging

with script_logging(snakemake) as log:
    import mudata as md

    from cartcohort import pp, tables

    log.info("QC of %s: %s", snakemake.wildcards.sample, snakemake.params.run_sample_qc)
    with md.set_options(pull_on_update=False):
        mdata, summary = pp.run_sample_qc(
            md.read_h5mu(snakemake.input.h5mu),
            sample=snakemake.wildcards.sample,
            **snakemake.params.run_sample_qc,
        )
        mdata.write(snakemake.output.h5mu)
    tables.write_table(summary, snakemake.output.summary)
