"""Entry script of rule `cohort`: the final MuData results/cohort.h5mu - `gex` (counts
layer, log-normalised X, embeddings, graph, UMAP, every call in obs) and `airr`
(scirpy) of the QC-passing cells."""

import anndata as ad
import mudata as md

from cartcohort.annotate import attach_calls
from cartcohort.integrated import read_integrated
from cartcohort.logs import script_logging

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    gex = read_integrated(smk.input.merged, smk.input.integrated, umap_path=smk.input.umap)
    gex = attach_calls(gex, ad.read_h5ad(smk.input.calls))
    airr = ad.read_h5ad(smk.input.airr)
    airr = airr[airr.obs_names.isin(gex.obs_names)].copy()
    log.info("cohort: %d cells x %d genes, %d with AIRR data", gex.n_obs, gex.n_vars,
             airr.n_obs)
    md.set_options(pull_on_update=False)
    md.MuData({"gex": gex, "airr": airr}).write(smk.output.h5mu, compression="gzip")
