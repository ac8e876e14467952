"""Entry script of rule `score_product`: one new infusion product placed in the frozen
cohort reference (scorecard, HTML and PDF page, per-cell
calls, features)."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from pathlib import Path

    from cartcohort import reference, tables
    from cartcohort.pl.scorecard import write_pdf_pages

    scored = reference.score_new_product(
        snakemake.input.h5mu,
        qc_summary=tables.read_table(snakemake.input.qc),
        **snakemake.params.score_new_product,
    )
    tables.write_table(scored.card, snakemake.output.card)
    tables.write_table(scored.cells, snakemake.output.cells, sort_by=["cell"])
    tables.write_table(scored.features, snakemake.output.features)
    Path(snakemake.output.html).write_text(scored.html)
    write_pdf_pages([scored.page], snakemake.output.pdf)
