"""Entry script of rule `annotate`: lineage, states, checkpoint markers, CAR+ (clone-aware)."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    import anndata as ad

    from cartcohort import tables, tl

    params = snakemake.params.annotate
    signatures = tl.annotate.load_signatures(snakemake.input.signatures)
    # only the genes annotation uses are read (and every cell's total count)
    gex, counts_total = tl.integrate.read_integrated_genes(
        snakemake.input.merged, snakemake.input.integrated,
        genes=tl.annotate.annotation_genes(signatures, car_features=params["car_features"],
                                           celltypist_model=params["celltypist_model"]),
    )
    result = tl.annotate.annotate(
        gex,
        airr=ad.read_h5ad(snakemake.input.airr),
        signatures=signatures,
        counts_total=counts_total,
        **params,
    )
    tables.write_table(result.cells, snakemake.output.cells, sort_by=["cell"])
    tables.write_table(result.agreement, snakemake.output.agreement,
                       sort_by=["sample", "call", "cell_call", "final_call"])
    tables.write_table(result.signature_genes, snakemake.output.signature_genes)
    tables.TABLES["annotation_car_models"].write(result.car_models, snakemake.output.car_models,
                                                sort_by=["sample"])
    tables.TABLES["annotation_libraries"].write(result.libraries, snakemake.output.libraries,
                                                sort_by=["sample"])
    tables.TABLES["warnings"].write(result.warnings, snakemake.output.warnings)
    # the calls without the expression matrix; rule `cohort` joins them with the
    # matrices, the UMAP and the AIRR data into results/cohort.h5mu
    result.calls.write_h5ad(snakemake.output.calls)
