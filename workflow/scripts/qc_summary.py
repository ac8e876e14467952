"""Entry script of rule `qc_summary`: stack the per-sample QC rows into tables/qc_samples.tsv."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import pp, tables

    combined = pp.combine_summaries([tables.read_table(p) for p in snakemake.input.summaries])
    tables.write_table(combined, snakemake.output.table, sort_by=["sample"])
