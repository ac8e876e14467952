"""Write the report's overview page."""

from cartcohort.logs import script_logging
from cartcohort.report import overview_html, skipped_analyses
from cartcohort.tables import read_table

with script_logging(snakemake):
    qc_samples = read_table(snakemake.input.qc_samples)
    skipped = skipped_analyses(
        qc_samples=qc_samples,
        association=read_table(snakemake.input.association),
        excluded_by_config=snakemake.params.excluded,
        extra_notes=snakemake.params.notes,
    )
    page = overview_html(
        qc_samples=qc_samples, clinical=read_table(snakemake.input.clinical), skipped=skipped
    )
    with open(snakemake.output[0], "w") as fh:
        fh.write(page)
