"""Entry script of rule `cohort_h5ad`: results/cohort.h5ad, the gex modality of
results/cohort.h5mu with every call and the response in obs and the UMAP (cellxgene)."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import browser, tables

    browser.write_cohort_h5ad(
        h5mu_path=snakemake.input.h5mu,
        clinical=tables.read_table(snakemake.input.clinical),
        out_path=snakemake.output.h5ad,
    )
