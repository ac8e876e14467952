"""Snakemake entry: QC figures (per-sample violins with thresholds, counts vs genes)."""

from cartcohort.logs import script_logging
from cartcohort.plots import qc as qc_plots
from cartcohort.tables import read_table

with script_logging(snakemake) as log:  # noqa: F821
    obs = qc_plots.read_qc_obs(list(snakemake.input.h5mu))  # noqa: F821
    thresholds = read_table(snakemake.input.table)  # noqa: F821
    log.info("plotting QC of %d cells in %d samples", len(obs), obs["sample"].nunique())
    fig = qc_plots.qc_violins(obs, thresholds=thresholds)
    qc_plots.save_figure(fig, snakemake.output.violins)  # noqa: F821
    fig = qc_plots.qc_scatter(obs, thresholds=thresholds)
    qc_plots.save_figure(fig, snakemake.output.scatter)  # noqa: F821
