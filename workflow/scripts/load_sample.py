"""Snakemake entry for rule load_sample: one library -> h5mu + summary row."""

from cartcohort import io
from cartcohort.logs import script_logging
from cartcohort.tables import write_table

with script_logging(snakemake) as log:  # noqa: F821
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
