"""Entry script of rule `plot_qc`: per-sample QC violins with thresholds, counts vs genes."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import pl, tables

    pl.qc.qc_figures(
        snakemake.input.h5mu,
        tables.read_table(snakemake.input.table),
        violins=snakemake.output.violins,
        scatter=snakemake.output.scatter,
    )
