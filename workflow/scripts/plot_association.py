"""Entry script of rule `plot_association`: forest plot and pseudobulk DE volcano."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import pl, tables

    pl.associate.association_figures(
        tables.read_table(snakemake.input.association),
        tables.read_table(snakemake.input.de),
        forest=snakemake.output.forest,
        forest_exploratory=snakemake.output.forest_exploratory,
        volcano=snakemake.output.volcano,
    )
