"""Entry script of rule `plot_association`: forest plot and pseudobulk DE volcano."""

from cartcohort.logs import script_logging
from cartcohort.plots import associate as plots
from cartcohort.tables import read_table

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    association = read_table(smk.input.association)
    de = read_table(smk.input.de)
    plots.forest_plot(association).savefig(smk.output.forest, dpi=150)
    plots.volcano_plot(de).savefig(smk.output.volcano, dpi=150)
    log.info("wrote %s and %s", smk.output.forest, smk.output.volcano)
