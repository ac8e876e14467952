"""Entry script of rule `kinetics`: CAR+ clone kinetics after infusion."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import tables
    from cartcohort.tl import kinetics

    result = kinetics.kinetics_tables(
        tables.read_table(snakemake.input.cells), **snakemake.params.kinetics_tables
    )
    tables.write_table(result.clones, snakemake.output.clones)
    tables.write_table(result.samples, snakemake.output.samples)
    tables.write_table(result.patients, snakemake.output.patients, sort_by=["patient"])
    tables.write_table(result.fate, snakemake.output.fate)
    tables.TABLES["kinetics_warnings"].write(result.notes, snakemake.output.warnings)
