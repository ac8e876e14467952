"""Snakemake entry for rule load_summary: stack per-library load summaries."""

import pandas as pd

from cartcohort import io
from cartcohort.logs import script_logging
from cartcohort.tables import read_table, write_table

with script_logging(snakemake) as log:  # noqa: F821
    tables = [read_table(p) for p in snakemake.input.summaries]  # noqa: F821
    combined = pd.concat(tables, ignore_index=True)[list(io.SUMMARY_COLUMNS)]
    log.info("%d libraries loaded, %d cells", len(combined), combined["n_gex_cells"].sum())
    write_table(combined, snakemake.output.table, sort_by=["sample"])  # noqa: F821
