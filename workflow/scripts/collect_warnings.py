"""Entry script of rule `warnings`: every input carried through -> results/tables/warnings.tsv."""

from cartcohort.logs import script_logging

with script_logging(snakemake) as log:
    from cartcohort import report, tables

    # no QC table on the published entry point (the authors' cells are taken as given)
    qc_samples = snakemake.input.get("qc_samples")
    warnings = report.collect_warnings(
        [*snakemake.input.load, snakemake.input.merge,
         *([snakemake.input.kinetics] if snakemake.input.get("kinetics") else []),
         *([snakemake.input.protein] if snakemake.input.get("protein") else [])],
        tables.read_table(qc_samples) if qc_samples else None,
        **snakemake.params.collect_warnings,
    )
    log.info("%d warnings", len(warnings))
    tables.TABLES["warnings"].write(warnings, snakemake.output.table)
