"""Entry script of rules `versions_<step>`: inside a step's env, the versions of what it pins."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import report

    versions = report.record_versions(**snakemake.params.record_versions)
    report.write_json(versions, snakemake.output[0])
