"""Entry script of rule `repertoire`: expansion, rarefied diversity, clone tracking."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import tables, tl

    result = tl.repertoire.repertoire_tables(
        tables.read_table(snakemake.input.cells), **snakemake.params.repertoire_tables
    )
    tables.write_table(result.samples, snakemake.output.samples, sort_by=["sample"])
    tables.write_table(result.tracking, snakemake.output.tracking)
    tables.write_table(result.states, snakemake.output.states)
