"""Entry script of rule `plot_clonotypes`: the report figures of the clonotype step."""

from cartcohort.logs import script_logging
from cartcohort.plots import clonotypes as plots
from cartcohort.tables import read_table

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    samples = read_table(smk.input.samples)
    tracking = read_table(smk.input.tracking)
    figures = {
        smk.output.expansion: plots.plot_clonal_expansion(samples),
        smk.output.diversity: plots.plot_rarefied_diversity(
            samples, response=smk.params.response, responders=smk.params.responders
        ),
        smk.output.alluvial: plots.plot_top_clones_alluvial(
            tracking, samples=samples, top_n=smk.params.top_clones
        ),
    }
    for path, fig in figures.items():
        fig.savefig(path, dpi=150)
        log.info("wrote %s", path)
