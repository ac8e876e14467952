"""Entry script of rule `integration_metrics`: batch-mixing and label-conservation
metrics of every integration method, first pass (label integrate.label_key, by default
the Leiden clusters of the unintegrated PCA) -> table; the second pass against the final
cell states and the figure are rule integration_metrics_states."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import tables
    from cartcohort.tl import integrate

    scores = integrate.score_methods(
        snakemake.input.h5ad,
        cells_path=snakemake.input.get("cells"),
        **snakemake.params.score_methods,
    )
    tables.write_table(scores.table, snakemake.output.table)
