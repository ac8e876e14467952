"""Entry script of rule `annotate`: lineage, states, checkpoint markers, CAR+ (clone-aware)."""

import anndata as ad

from cartcohort import annotate as an
from cartcohort.integrated import read_integrated
from cartcohort.logs import script_logging
from cartcohort.tables import write_table

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    params = smk.params.annotate
    signatures = an.load_signatures(smk.input.signatures)
    log.info("signatures %s (version %s): %s", smk.input.signatures, signatures.version,
             signatures.state_ids)
    gex = read_integrated(smk.input.merged, smk.input.integrated)
    airr = ad.read_h5ad(smk.input.airr)
    log.info("%d cells, %d genes; %d cells with AIRR data", gex.n_obs, gex.n_vars, airr.n_obs)
    result = an.annotate(
        gex,
        airr=airr,
        signatures=signatures,
        car_features=params["car_features"],
        min_state_score=float(params["min_state_score"]),
        min_confidence_margin=float(params["min_confidence_margin"]),
        cluster_consensus=bool(params["cluster_consensus"]),
        car_method=params["car_method"],
        car_min_umis=int(params["car_min_umis"]),
        clone_aware=bool(params["clone_aware"]),
        smoothing=float(params.get("smoothing", 0.75)),
        down_weight=float(params.get("down_weight", 0.5)),
        sd_floor=float(params.get("sd_floor", 0.5)),
        celltypist_model=params.get("celltypist_model") or "",
    )
    cells = an.cells_table(result.gex)
    log.info("states: %s", cells["state"].value_counts().to_dict())
    log.info("lineage: %s", cells["cd4_cd8"].value_counts().to_dict())
    write_table(cells, smk.output.cells, sort_by=["cell"])
    write_table(result.agreement, smk.output.agreement,
                sort_by=["sample", "call", "cell_call", "final_call"])
    write_table(result.signature_genes, smk.output.signature_genes)
    write_table(result.car_models, smk.output.car_models, sort_by=["sample"])
    # the calls without the expression matrix; rule `cohort` joins them with the
    # matrices, the UMAP and the AIRR data into results/cohort.h5mu
    calls = ad.AnnData(obs=result.gex.obs.copy(), uns=dict(result.gex.uns))
    for key in result.gex.obsm:
        if key not in gex.obsm:
            calls.obsm[key] = result.gex.obsm[key]
    calls.write_h5ad(smk.output.calls)
