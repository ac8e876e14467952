"""Entry script of rule `score_products`: the primary-panel rows of every new product's
scorecard in one table."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import reference, tables

    tables.write_table(
        reference.summarise_products([tables.read_table(p) for p in snakemake.input.cards]),
        snakemake.output.table,
        sort_by=["sample"],
    )
