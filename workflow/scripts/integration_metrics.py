"""Entry script of rule `integration_metrics`: batch-mixing and label-conservation
metrics of every integration method -> table + heatmap."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import pl, tables
    from cartcohort.tl import integrate

    scores = integrate.score_methods(
        snakemake.input.h5ad,
        cells_path=snakemake.input.get("cells"),
        **snakemake.params.score_methods,
    )
    tables.write_table(scores.table, snakemake.output.table)
    pl.integrate.metrics_figure(scores.table, label=scores.label,
                                path=snakemake.output.figure)
