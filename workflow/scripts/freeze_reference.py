"""Entry script of rule `reference`: freeze results/reference/ from the cohort run."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from pathlib import Path

    from cartcohort import reference

    reference.freeze_reference(
        merged=snakemake.input.merged,
        integrated=snakemake.input.integrated,
        cells=snakemake.input.cells,
        signatures=snakemake.input.signatures,
        repertoire=snakemake.input.repertoire,
        copies={key: snakemake.input[key] for key in reference.COPIED},
        out_dir=Path(snakemake.output.manifest).parent,
        libraries=list(snakemake.input.qc_libraries),
        **snakemake.params.freeze_reference,
    )
