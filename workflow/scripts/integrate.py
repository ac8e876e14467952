"""Entry script of rule `integrate`: one integration method on the merged cohort
(corrected embedding, kNN graph; Leiden for the method used downstream)
-> results/integrate/{method}.h5ad (no expression matrix)."""

from cartcohort import integrate
from cartcohort.logs import script_logging

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    cfg = smk.params.integrate
    method = smk.wildcards.method
    prepared = integrate.read_prepared(smk.input.h5ad, counts=method == "scvi")
    log.info("%s: %d cells, %d PCs", method, prepared.n_obs, prepared.obsm["X_pca"].shape[1])
    result = integrate.integrate_prepared(
        prepared,
        method=method,
        batch_key=cfg["batch_key"],
        n_neighbors=int(cfg["n_neighbors"]),
        leiden_resolutions=[float(r) for r in cfg["leiden_resolutions"]],
        embed=bool(smk.params.embed),
        seed=int(smk.params.seed),
        n_threads=int(smk.threads),
        method_params=cfg["method_params"],
    )
    log.info("writing %s", smk.output.h5ad)
    result.write_h5ad(smk.output.h5ad)
