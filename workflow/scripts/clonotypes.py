"""Entry script of rule `clonotypes`: scirpy clonotypes within each patient."""

from cartcohort import clonotypes as ct
from cartcohort.logs import script_logging
from cartcohort.qc import included_samples
from cartcohort.tables import read_table, write_table

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    params = smk.params.clonotypes
    included = set(included_samples(read_table(smk.input.qc_samples)))
    parts = []
    for sample, path in zip(smk.params.samples, smk.input.h5mu, strict=True):
        if sample not in included:
            log.info("%s: excluded by QC (qc_samples.tsv sample_excluded); skipped", sample)
            continue
        parts.append(ct.read_qc_airr(path, sample=sample))
    adata = ct.concat_airr(parts)
    common = dict(
        receptor_arms=params["receptor_arms"],
        dual_ir=params["dual_ir"],
        n_jobs=smk.threads,
    )
    adata = ct.call_clonotypes(
        adata,
        sequence=params["sequence"],
        metric=params["metric"],
        cutoff=params.get("cutoff"),
        **common,
    )
    clusters = params.get("clusters", {}) or {}
    if clusters.get("enabled", True):
        adata = ct.call_clonotype_clusters(
            adata,
            metric=clusters.get("metric", "hamming"),
            sequence=clusters.get("sequence", "aa"),
            cutoff=clusters.get("cutoff", 1),
            **common,
        )
    else:
        log.info("clonotype clusters disabled (clonotypes.clusters.enabled: false)")
        adata.obs["clone_cluster_id"] = adata.obs["clone_id"]
        adata.obs["clone_cluster_size"] = adata.obs["clone_size"]
    adata, public = ct.flag_public(adata, receptor_arms=params["receptor_arms"])
    log.info("clonotypes: %s", dict(ct.summarise_airr_obs(adata)))
    samples = [s for s in smk.params.samples if s in included]
    write_table(ct.clone_table(adata, samples=samples), smk.output.clonotypes)
    write_table(public, smk.output.public, sort_by=["cdr3_aa_vj", "cdr3_aa_vdj"])
    adata.write_h5ad(smk.output.airr, compression="gzip")
