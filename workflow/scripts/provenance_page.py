"""Entry script of rule `provenance_page`: results/provenance.html from results/provenance.json."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import report

    page = report.render_provenance_html(
        report.read_json(snakemake.input.record), **snakemake.params.render_provenance_html
    )
    report.write_html(page, snakemake.output[0])
