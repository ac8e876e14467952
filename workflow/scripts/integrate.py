"""Entry script of rule `integrate`: one integration method on the merged cohort
(corrected embedding, kNN graph; Leiden for the method used downstream)
-> results/integrate/{method}.h5ad (no expression matrix)."""

from cartcohort.logs import script_logging

with script_logging(snakemake) as log:
    from cartcohort.tl import integrate

    result = integrate.integrate_method(
        snakemake.input.h5ad,
        method=snakemake.wildcards.method,
        n_threads=snakemake.threads,
        **snakemake.params.integrate_method,
    )
    log.info("writing %s", snakemake.output.h5ad)
    result.write_h5ad(snakemake.output.h5ad)
