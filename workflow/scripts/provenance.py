"""Write results/provenance.json."""

import json

from cartcohort.logs import script_logging
from cartcohort.provenance import build_provenance

with script_logging(snakemake):
    step_versions = {}
    for step, path in zip(snakemake.params.steps, snakemake.input.versions):
        with open(path) as fh:
            step_versions[step] = json.load(fh)
    record = build_provenance(
        config=snakemake.config,
        input_files=snakemake.params.input_files,
        step_versions=step_versions,
        workflow_dir=snakemake.params.workflow_dir,
    )
    with open(snakemake.output[0], "w") as fh:
        json.dump(record, fh, indent=1, sort_keys=True)
