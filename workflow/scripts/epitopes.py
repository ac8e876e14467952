"""Entry script of rule `epitopes`: virus-specific clones from a VDJdb export file."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    import anndata as ad

    from cartcohort import tables
    from cartcohort.tl import epitopes

    clones, products = epitopes.epitope_db_tables(
        ad.read_h5ad(snakemake.input.airr), **snakemake.params.epitope_db_tables
    )
    tables.write_table(clones, snakemake.output.clones)
    tables.write_table(products, snakemake.output.products)
