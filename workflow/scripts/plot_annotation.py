"""Entry script of rule `plot_annotation`: UMAPs, state fractions and signature dot plot."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    import mudata as md

    from cartcohort import pl

    for name, figure in pl.annotate.annotation_figures(md.read_h5mu(snakemake.input.h5mu)["gex"]):
        pl.save_figure(figure, snakemake.output[name])
