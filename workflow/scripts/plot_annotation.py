"""Entry script of rule `plot_annotation`: UMAPs, state fractions, signature dot plot and the
per-library model vs naive-rule calls."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    import mudata as md

    from cartcohort import pl, tables

    for name, figure in pl.annotate.annotation_figures(md.read_h5mu(snakemake.input.h5mu)["gex"]):
        pl.save_figure(figure, snakemake.output[name])
    pl.save_figure(pl.annotate.library_calls(tables.read_table(snakemake.input.libraries)),
                   snakemake.output.library_calls)
