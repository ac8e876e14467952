"""Entry script of rule `scorecards`: every infusion product placed in the cohort, the
primary-panel flags and their leave-one-out calibration."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import scorecards, stats, tables
    from cartcohort.dictionary import read_dictionary

    scorecards.cohort_scorecards(
        tables.read_table(snakemake.input.features),
        clinical=tables.read_table(snakemake.input.clinical),
        association=tables.read_table(snakemake.input.association),
        panel=stats.load_primary_panel(snakemake.input.panel),
        dictionary=read_dictionary(snakemake.input.dictionary),
        cards=snakemake.output.cards,
        reference=snakemake.output.reference,
        calibration=snakemake.output.calibration,
        html=snakemake.output.html,
        heatmap=snakemake.output.heatmap,
        source=snakemake.input.features,
        clinical_source=snakemake.input.clinical,
        **snakemake.params.cohort_scorecards,
    )
