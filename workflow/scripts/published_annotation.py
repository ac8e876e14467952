"""Entry script of rule `published_annotation`: our annotation of the authors' counts."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import published_annotate, tables
    from cartcohort.tl.annotate import load_signatures

    result = published_annotate.published_annotation(
        snakemake.input.counts,
        tables.read_table(snakemake.input.cells),
        load_signatures(snakemake.input.signatures),
        **snakemake.params.published_annotation,
    )
    tables.write_table(result.cells, snakemake.output.cells, sort_by=["sample", "cell"])
    tables.write_table(result.agreement, snakemake.output.agreement)
