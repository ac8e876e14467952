"""Entry script of rule `associate`: association with response (product features; in vivo
features as outcome correlates), mixed models, survival."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import stats, tables
    from cartcohort.dictionary import read_dictionary

    result = stats.associate(
        tables.read_table(snakemake.input.features),
        clinical=tables.read_table(snakemake.input.clinical),
        primary_panel=stats.load_primary_panel(snakemake.input.panel),
        dictionary=read_dictionary(snakemake.input.dictionary),
        source=snakemake.input.features,
        clinical_source=snakemake.input.clinical,
        **snakemake.params.associate,
    )
    tables.write_table(result.association, snakemake.output.association)
    tables.write_table(result.in_vivo, snakemake.output.in_vivo)
    tables.write_table(result.notes, snakemake.output.notes)
    tables.write_table(result.longitudinal, snakemake.output.longitudinal)
    tables.write_table(result.survival, snakemake.output.survival)
    tables.write_table(result.libraries, snakemake.output.libraries)
