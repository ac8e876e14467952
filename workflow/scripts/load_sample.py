"""Entry script of rule `load_sample`: one library -> h5mu + one-row load summary + the
library's warnings (features kept out of the RNA matrix, an absent CAR it may lack)."""

from cartcohort.logs import script_logging

with script_logging(snakemake) as log:
    from cartcohort import io, tables

    loaded = io.load_sample(
        sample=snakemake.wildcards.sample,
        gex_path=snakemake.input.gex,
        vdj_path=snakemake.input.vdj,
        **snakemake.params.load_sample,
    )
    log.info("%s", loaded.summary.to_dict("records")[0])
    loaded.mdata.write(snakemake.output.h5mu)
    tables.write_table(loaded.summary, snakemake.output.summary)
    tables.write_table(loaded.warnings, snakemake.output.warnings)
