"""Snakemake entry: stack the per-sample QC rows into tables/qc_samples.tsv."""

from cartcohort import qc
from cartcohort.logs import script_logging
from cartcohort.tables import read_table, write_table

with script_logging(snakemake) as log:  # noqa: F821
    tables = [read_table(p) for p in snakemake.input.summaries]  # noqa: F821
    combined = qc.combine_summaries(tables)
    log.info("%d samples, %d excluded at QC", len(combined),
             len(combined) - len(qc.included_samples(combined)))
    write_table(combined, snakemake.output.table, sort_by=["sample"])  # noqa: F821
