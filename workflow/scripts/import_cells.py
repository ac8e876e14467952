"""Entry script of rule `import_cells`: the authors' cell table -> the per-cell table."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import published, tables

    imported = published.import_published(
        snakemake.input.cells,
        snakemake.input.label_map,
        list(snakemake.input.vdj),  # the sheet's contigs of params vdj_samples, in order
        **snakemake.params.import_published,
    )
    tables.write_table(imported.cells, snakemake.output.cells)
    tables.write_table(imported.summary, snakemake.output.summary)
    tables.write_table(imported.warnings, snakemake.output.warnings)
