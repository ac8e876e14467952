"""Entry script of rule `warnings`: every input carried through -> results/tables/warnings.tsv."""

from cartcohort.logs import script_logging

with script_logging(snakemake) as log:
    from cartcohort import report, tables

    warnings = report.collect_warnings(
        [*snakemake.input.load, snakemake.input.merge, snakemake.input.protein],
        tables.read_table(snakemake.input.qc_samples),
        **snakemake.params.collect_warnings,
    )
    log.info("%d warnings", len(warnings))
    tables.TABLES["warnings"].write(warnings, snakemake.output.table)
