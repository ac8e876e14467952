"""Entry script of rule `pseudobulk_de`: DESeq2 per state on patient pseudobulks."""

import mudata

from cartcohort import associate as assoc
from cartcohort.features import read_tsv
from cartcohort.logs import script_logging
from cartcohort.tables import write_table

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    p = smk.params.associate
    gex = mudata.read_h5ad(smk.input.h5mu, mod="gex")
    counts = gex.layers["counts"] if "counts" in gex.layers else gex.X
    log.info("gex: %d cells x %d genes (counts from %s)", gex.n_obs, gex.n_vars,
             "layers['counts']" if "counts" in gex.layers else "X")
    de = assoc.pseudobulk_de(
        counts,
        obs=gex.obs,
        genes=list(gex.var_names),
        clinical=read_tsv(smk.input.clinical),
        primary_timepoint=p["primary_timepoint"],
        responders=p["responders"],
        excluded=p["exclude_responses"],
        min_cells=int(p["min_cells_pseudobulk"]),
        min_patients_per_group=int(p["min_patients_per_group"]),
        min_gene_count=int(p["min_gene_count"]),
        clinical_source=str(smk.input.clinical),
    )
    write_table(de, smk.output.de)
    log.info("wrote %s (%d rows)", smk.output.de, len(de))
