"""Entry script of rule `merge_samples`: merge QC-passing cells of the included samples,
normalise, select HVGs and compute the PCA shared by every integration method
-> results/integrate/merged.h5ad."""

from cartcohort import integrate
from cartcohort.logs import script_logging
from cartcohort.tables import read_table

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    cfg = smk.params.merge
    paths = dict(zip(smk.params.samples, smk.input.h5mu, strict=True))
    adata = integrate.load_qc_cells(
        paths,
        qc_table=read_table(smk.input.qc),
        qc_table_path=str(smk.input.qc),
        join=cfg["gene_join"],
    )
    prepared = integrate.prepare_cohort(
        adata,
        batch_key=cfg["batch_key"],
        n_top_genes=int(cfg["n_top_genes"]),
        n_pcs=int(cfg["n_pcs"]),
        exclude_genes=list(cfg.get("exclude_genes") or []),
        scale=bool(cfg.get("scale", True)),
        seed=int(smk.params.seed),
    )
    del adata
    log.info("writing %s (%d cells x %d genes)", smk.output.h5ad, prepared.n_obs,
             prepared.n_vars)
    # an intermediate read by integrate/annotate: uncompressed is several times faster
    prepared.write_h5ad(smk.output.h5ad)
