"""Entry script of rule `repertoire`: expansion, rarefied diversity, clone tracking."""

import pandas as pd

from cartcohort import clonotypes as ct
from cartcohort.logs import script_logging
from cartcohort.tables import write_table

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    params = smk.params.clonotypes
    cells = pd.read_csv(smk.input.cells, sep="\t", na_values=["NA"], keep_default_na=False,
                        low_memory=False)
    tables = ct.repertoire_tables(
        cells,
        primary_timepoint=smk.params.primary_timepoint,
        depth=params["rarefaction_depth"],
        min_cells=params.get("rarefaction_min_cells", 50),
        n_bootstrap=params["n_bootstrap"],
        seed=params["seed"],
        expanded_min_size=params.get("expanded_min_size", 3),
    )
    log.info("%d samples, %d tracked clone x sample rows, %d clone-state rows",
             len(tables.samples), len(tables.tracking), len(tables.states))
    write_table(tables.samples, smk.output.samples, sort_by=["sample"])
    write_table(tables.tracking, smk.output.tracking)
    write_table(tables.states, smk.output.states)
