"""Entry script of rule `plot_clonotypes`: the report figures of the clonotype step."""

from cartcohort.logs import script_logging

with script_logging(snakemake) as log:
    from cartcohort import pl, tables

    figures = pl.clonotypes.clonotype_figures(
        tables.read_table(snakemake.input.samples),
        tables.read_table(snakemake.input.tracking),
        **snakemake.params.clonotype_figures,
    )
    for name, fig in figures.items():
        fig.savefig(snakemake.output[name], dpi=150)
        log.info("wrote %s", snakemake.output[name])
