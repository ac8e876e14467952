"""Entry script of rule `protein`: surface-protein (CITE-seq) QC, normalisation and calls
of every library with an ADT panel, beside the RNA calls of rule annotate."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    import anndata as ad
    from cartcohort import tables
    from cartcohort.tl.annotate.protein_step import annotate_protein

    result = annotate_protein(
        list(snakemake.input.h5mu),
        gex=list(snakemake.input.gex),
        calls=ad.read_h5ad(snakemake.input.calls).obs,
        alias_table=snakemake.input.alias_table,
        gates=snakemake.input.gates,
        **snakemake.params.annotate_protein,
    )
    for name, df, sort_by in (("protein_cells", result.cells, ["cell"]),
                              ("protein_libraries", result.libraries, ["sample"]),
                              ("protein_fits", result.fits, ["library", "marker"]),
                              ("protein_agreement", result.agreement, ["library", "call"])):
        tables.TABLES[name].write(df, snakemake.output[name.removeprefix("protein_")],
                                  sort_by=sort_by)
    tables.TABLES["protein_warnings"].write(result.warnings, snakemake.output.warnings)
