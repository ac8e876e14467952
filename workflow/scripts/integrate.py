"""Entry script of rule `integrate`: merge QC-passing cells, normalise, HVGs, PCA,
integrate with one method, neighbours, UMAP, Leiden -> results/integrate/{method}.h5ad."""

from cartcohort import integrate
from cartcohort.logs import script_logging
from cartcohort.tables import read_table

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    cfg = smk.params.integrate
    method = smk.wildcards.method
    paths = dict(zip(smk.params.samples, smk.input.h5mu, strict=True))
    adata = integrate.load_qc_cells(
        paths,
        qc_table=read_table(smk.input.qc),
        qc_table_path=str(smk.input.qc),
        join=smk.params.gene_join,
    )
    result = integrate.integrate_cohort(
        adata,
        method=method,
        batch_key=cfg["batch_key"],
        n_top_genes=int(cfg["n_top_genes"]),
        n_pcs=int(cfg["n_pcs"]),
        n_neighbors=int(cfg["n_neighbors"]),
        leiden_resolutions=[float(r) for r in cfg["leiden_resolutions"]],
        umap_min_dist=float(cfg["umap_min_dist"]),
        exclude_genes=list(cfg.get("exclude_genes") or []),
        scale=bool(cfg.get("scale", True)),
        seed=int(smk.params.seed),
        n_threads=int(smk.threads),
        method_params=cfg["method_params"],
    )
    log.info("writing %s (%d cells x %d genes)", smk.output.h5ad, result.n_obs, result.n_vars)
    result.write_h5ad(smk.output.h5ad, compression="gzip")
