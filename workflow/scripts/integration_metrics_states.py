"""Entry script of rule `integration_metrics_states`: every integration method scored
against the final cell states (after annotation), beside the first pass ->
integration_metrics.tsv (leading with the final states) + heatmap."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import pl, tables
    from cartcohort.tl import integrate

    scores = integrate.score_final_states(
        snakemake.input.h5ad,
        cells_path=snakemake.input.cells,
        first_pass=tables.read_table(snakemake.input.first_pass),
        **snakemake.params.score_final_states,
    )
    tables.write_table(scores.table, snakemake.output.table)
    pl.integrate.metrics_figure(scores.table, path=snakemake.output.figure)
