"""Entry script of rule `pseudobulk_de`: DESeq2 per state on patient pseudobulks."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    import mudata

    from cartcohort import stats, tables

    de = stats.pseudobulk_de(
        mudata.read_h5ad(snakemake.input.h5mu, mod="gex"),
        clinical=tables.read_table(snakemake.input.clinical),
        clinical_source=snakemake.input.clinical,
        n_cpus=snakemake.threads,
        **snakemake.params.pseudobulk_de,
    )
    tables.write_table(de, snakemake.output.de)
