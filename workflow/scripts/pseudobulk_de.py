"""Entry script of rule `pseudobulk_de`: DESeq2 per state on patient pseudobulks."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    import anndata as ad
    import h5py
    from anndata.io import read_elem

    from cartcohort import stats, tables

    # obs and var only: the counts are summed from the file a block of cells at a time
    with h5py.File(snakemake.input.h5mu, "r") as f:
        gex = ad.AnnData(obs=read_elem(f["mod/gex/obs"]), var=read_elem(f["mod/gex/var"]))
    de = stats.pseudobulk_de(
        gex,
        counts_path=snakemake.input.h5mu,
        clinical=tables.read_table(snakemake.input.clinical),
        clinical_source=snakemake.input.clinical,
        n_cpus=snakemake.threads,
        **snakemake.params.pseudobulk_de,
    )
    tables.write_table(de, snakemake.output.de)
