"""Entry script of rule `provenance`: write results/provenance.json."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import report

    record = report.provenance_record(
        snakemake.input.versions, **snakemake.params.provenance_record
    )
    report.write_json(record, snakemake.output[0])
