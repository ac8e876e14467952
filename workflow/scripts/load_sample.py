"""Snakemake entry for rules load_sample (one library -> h5mu + summary row) and
load_summary (stack the summary rows into tables/load_samples.tsv)."""

import pandas as pd

from cartcohort import io
from cartcohort.logs import script_logging
from cartcohort.tables import read_table, write_table

with script_logging(snakemake) as log:  # noqa: F821
    if snakemake.rule == "load_summary":  # noqa: F821
        tables = [read_table(p) for p in snakemake.input.summaries]  # noqa: F821
        combined = pd.concat(tables, ignore_index=True)[list(io.SUMMARY_COLUMNS)]
        log.info("%d libraries loaded, %d cells", len(combined), combined["n_gex_cells"].sum())
        write_table(combined, snakemake.output.table, sort_by=["sample"])  # noqa: F821
    else:
        vdj = snakemake.input.vdj  # noqa: F821
        vdj = [vdj] if isinstance(vdj, str) else list(vdj)
        mdata, summary = io.load_sample(
            sample=snakemake.wildcards.sample,  # noqa: F821
            gex_path=snakemake.input.gex,  # noqa: F821
            vdj_path=vdj[0] if vdj else None,
            meta=snakemake.params.meta,  # noqa: F821
            car_features=list(snakemake.params.car_features),  # noqa: F821
        )
        log.info("%s", summary.to_dict("records")[0])
        mdata.write(snakemake.output.h5mu)  # noqa: F821
        write_table(summary, snakemake.output.summary)  # noqa: F821
