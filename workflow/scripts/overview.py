"""Entry script of rule `overview`: the overview page (warnings, cohort, skipped analyses)."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import report, tables
    from cartcohort.dictionary import read_dictionary

    page = report.overview_page(
        tables.read_table(snakemake.input.qc_samples),
        tables.read_table(snakemake.input.association),
        tables.read_table(snakemake.input.clinical),
        tables.read_table(snakemake.input.warnings),
        # none on the published entry point (no annotation step)
        tables.read_table(snakemake.input.annotate_warnings)
        if snakemake.input.get("annotate_warnings")
        else None,
        # published entry point with published.annotate: our calls vs the authors' labels
        published_agreement=tables.read_table(snakemake.input.published_agreement)
        if snakemake.input.get("published_agreement")
        else None,
        sample_features=tables.read_table(snakemake.input.features),
        dictionary=read_dictionary(snakemake.input.dictionary),
        **snakemake.params.overview_page,
    )
    report.write_html(page, snakemake.output[0])
