"""Entry script of rule `response_groups`: the clinical table with the paper's per-patient
response override applied (config response_override)."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import tables
    from cartcohort.response_groups import apply_response_override

    clinical = apply_response_override(
        tables.read_table(snakemake.input.clinical),
        **snakemake.params.apply_response_override,
    )
    tables.write_table(clinical, snakemake.output.clinical)
