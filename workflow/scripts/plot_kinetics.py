"""Entry script of rule `plot_kinetics`: CAR+ kinetics, clone fate and volcano figures."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import tables
    from cartcohort.pl import kinetics

    kinetics.kinetics_figures(
        tables.read_table(snakemake.input.samples),
        tables.read_table(snakemake.input.clones),
        tables.read_table(snakemake.input.fate),
        car=snakemake.output.car,
        fate_png=snakemake.output.fate,
        volcano=snakemake.output.volcano,
        **snakemake.params.kinetics_figures,
    )
