"""Entry script of rule `sample_features`: one row of features per sample."""

from cartcohort import features
from cartcohort.features import read_tsv
from cartcohort.logs import script_logging
from cartcohort.tables import write_table

with script_logging(snakemake) as log:  # noqa: F821
    smk = snakemake  # noqa: F821
    cells = read_tsv(smk.input.cells)
    rep_path = smk.input.get("repertoire")
    repertoire = read_tsv(rep_path) if rep_path else None
    table = features.sample_features(
        cells,
        repertoire=repertoire,
        source=str(smk.input.cells),
        repertoire_source=str(rep_path or ""),
    )
    write_table(table, smk.output.features, sort_by=["sample"])
    log.info("wrote %s: %d samples x %d columns", smk.output.features, *table.shape)
