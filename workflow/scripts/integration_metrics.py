"""Entry script of rule `integration_metrics`: batch-mixing and label-conservation
metrics of every integration method -> table + heatmap."""

import pandas as pd

from cartcohort import integrate
from cartcohort.errors import CartCohortError
from cartcohort.logs import script_logging
from cartcohort.plots.integrate import metrics_heatmap
from cartcohort.tables import read_table, write_table

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    cfg = smk.params.integrate
    mcfg = dict(cfg.get("metrics") or {})
    label_key = cfg.get("label_key") or None
    seed = int(smk.params.seed)
    reference = None
    if label_key is not None:
        # a per-cell annotation (cells.tsv.gz), e.g. the signature-based `state`
        cells = read_table(smk.input.cells)
        if label_key not in cells.columns:
            raise CartCohortError(
                f"{smk.input.cells}: no column '{label_key}' (config integrate.label_key). "
                f"Fix: use one of {sorted(cells.columns)} or null"
            )
        reference = cells.set_index("cell")[label_key].astype("string")
        log.info("label: '%s' from %s", label_key, smk.input.cells)
    tables = []
    for path in smk.input.h5ad:
        adata = integrate.subsample_for_metrics(
            integrate.read_integration(path),
            max_cells=int(mcfg.get("max_cells", 50000)),
            n_neighbors=int(cfg["n_neighbors"]),
            seed=seed,
        )
        method = adata.uns["integration"]["method"]
        if label_key is None:
            if reference is None:
                # Leiden of the unintegrated PCA: the same X_pca is in every method's file
                reference = integrate.reference_labels(
                    adata,
                    n_neighbors=int(cfg["n_neighbors"]),
                    resolution=float(cfg["leiden_resolutions"][0]),
                    seed=seed,
                )
                log.info("label: Leiden of the unintegrated PCA (%d clusters)",
                         reference.nunique())
            adata.obs["leiden_unintegrated"] = reference.reindex(adata.obs_names).to_numpy()
            key = "leiden_unintegrated"
        else:
            adata.obs[label_key] = reference.reindex(adata.obs_names).to_numpy()
            key = label_key
        table = integrate.integration_metrics(
            adata,
            batch_key=cfg["batch_key"],
            label_key=key,
            perplexity=float(mcfg.get("perplexity", 30)),
            asw_max_cells=int(mcfg.get("asw_max_cells", 20000)),
            seed=seed,
        )
        log.info("%s:\n%s", method, table.to_string(index=False))
        tables.append(table.assign(method=method))
    out = pd.concat(tables, ignore_index=True)[["method", "metric", "value", "direction"]]
    write_table(out, smk.output.table)
    fig = metrics_heatmap(
        out, title=f"Integration metrics\n(label: {label_key or 'leiden_unintegrated'})"
    )
    fig.savefig(smk.output.figure, dpi=150)
