"""Snakemake entry: QC of one library (all cells kept, qc_* columns added)."""

import mudata as md

from cartcohort import qc
from cartcohort.logs import script_logging
from cartcohort.tables import write_table

with script_logging(snakemake) as log:  # noqa: F821
    sample = snakemake.wildcards.sample  # noqa: F821
    params = qc.validate_qc_params(
        dict(snakemake.params.qc), source=f"config qc (sample {sample})"  # noqa: F821
    )
    log.info("QC of %s: %s", sample, params)
    with md.set_options(pull_on_update=False):
        mdata = md.read_h5mu(snakemake.input.h5mu)  # noqa: F821
        mdata, summary = qc.run_sample_qc(mdata, sample=sample, **params)
        mdata.write(snakemake.output.h5mu)  # noqa: F821
    write_table(summary, snakemake.output.summary)  # noqa: F821
