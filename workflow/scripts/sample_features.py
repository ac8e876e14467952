"""Entry script of rule `sample_features`: one row of features per sample."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import tables
    from cartcohort.tl import features

    table = features.sample_features(
        tables.read_table(snakemake.input.cells),
        repertoire=tables.read_table(snakemake.input.repertoire),
        source=snakemake.input.cells,
        repertoire_source=snakemake.input.repertoire,
        protein=tables.read_table(snakemake.input.protein),
    )
    tables.write_table(table, snakemake.output.features, sort_by=["sample"])
