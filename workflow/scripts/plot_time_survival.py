"""Entry script of rule `plot_time_survival`: blood trajectories and Kaplan-Meier pages."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import stats, tables
    from cartcohort.dictionary import read_dictionary
    from cartcohort.pl import outcomes

    outcomes.time_survival_figures(
        tables.read_table(snakemake.input.features),
        tables.read_table(snakemake.input.clinical),
        stats.load_primary_panel(snakemake.input.panel),
        dictionary=read_dictionary(snakemake.input.dictionary),
        trajectories=snakemake.output.trajectories,
        km=snakemake.output.km,
        **snakemake.params.time_survival_figures,
    )
