"""Entry script of rule `associate`: association with response, mixed models, survival."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import stats, tables

    result = stats.associate(
        tables.read_table(snakemake.input.features),
        clinical=tables.read_table(snakemake.input.clinical),
        source=snakemake.input.features,
        clinical_source=snakemake.input.clinical,
        **snakemake.params.associate,
    )
    tables.write_table(result.association, snakemake.output.association)
    tables.write_table(result.notes, snakemake.output.notes)
    tables.write_table(result.longitudinal, snakemake.output.longitudinal)
    tables.write_table(result.survival, snakemake.output.survival)
