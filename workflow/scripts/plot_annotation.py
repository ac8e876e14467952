"""Entry script of rule `plot_annotation`: UMAPs, state fractions and signature dot plot."""

import mudata as md

from cartcohort.logs import script_logging
from cartcohort.plots import annotate as plots

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    gex = md.read_h5mu(smk.input.h5mu)["gex"]
    genes = {k: list(v) for k, v in gex.uns["annotation"]["signature_genes"].items()}
    states = list(genes)
    log.info("plotting %d cells, states %s", gex.n_obs, states)
    plots.save_figure(plots.umap_state(gex, states=states), smk.output.umap_state)
    plots.save_figure(plots.umap_lineage(gex), smk.output.umap_lineage)
    plots.save_figure(plots.umap_car(gex), smk.output.umap_car)
    plots.save_figure(plots.state_fraction_bars(gex, states=states), smk.output.state_fractions)
    plots.save_figure(plots.signature_dotplot(gex, genes_by_state=genes), smk.output.dotplot)
