"""Write the report's provenance page (results/provenance.html) from results/provenance.json."""

import json

from cartcohort.logs import script_logging
from cartcohort.provenance import render_provenance_html

with script_logging(snakemake):
    with open(snakemake.input.record) as fh:
        record = json.load(fh)
    page = render_provenance_html(record, step_order=snakemake.params.steps)
    with open(snakemake.output[0], "w") as fh:
        fh.write(page)
