"""Entry script of rule `scorecards`: every infusion product placed in the cohort."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import scorecards, tables

    scorecards.cohort_scorecards(
        tables.read_table(snakemake.input.features),
        clinical=tables.read_table(snakemake.input.clinical),
        association=tables.read_table(snakemake.input.association),
        cards=snakemake.output.cards,
        reference=snakemake.output.reference,
        html=snakemake.output.html,
        heatmap=snakemake.output.heatmap,
        source=snakemake.input.features,
        clinical_source=snakemake.input.clinical,
        **snakemake.params.cohort_scorecards,
    )
