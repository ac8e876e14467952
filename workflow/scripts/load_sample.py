"""Entry script of rule `load_sample`: one library -> h5mu + one-row load summary."""

from cartcohort.logs import script_logging

with script_logging(snakemake) as log:
    from cartcohort import io, tables

    mdata, summary = io.load_sample(
        sample=snakemake.wildcards.sample,
        gex_path=snakemake.input.gex,
        vdj_path=snakemake.input.vdj,
        **snakemake.params.load_sample,
    )
    log.info("%s", summary.to_dict("records")[0])
    mdata.write(snakemake.output.h5mu)
    tables.write_table(summary, snakemake.output.summary)
