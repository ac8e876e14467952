"""Entry script of rule `sample_features`: one row of features per sample."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import tables
    from cartcohort.tl import features

    # no kinetics or protein table on the published entry point (warnings.tsv says so);
    # there, the repertoire table only where libraries have TCR contigs, and the import
    # summary says which libraries have TCR data (the others' clonal features are NA)
    repertoire = snakemake.input.get("repertoire")
    kinetics = snakemake.input.get("kinetics")
    protein = snakemake.input.get("protein")  # surface protein: not on the published entry
    imported = snakemake.input.get("imported")
    tcr_samples = None
    if imported:
        summary = tables.read_table(imported)
        tcr_samples = list(summary.loc[summary["tcr"].astype(bool), "sample"])
    table = features.sample_features(
        tables.read_table(snakemake.input.cells),
        repertoire=tables.read_table(repertoire) if repertoire else None,
        kinetics=tables.read_table(kinetics) if kinetics else None,
        source=snakemake.input.cells,
        repertoire_source=repertoire or "",
        kinetics_source=kinetics or "",
        protein=tables.read_table(protein) if protein else None,
        tcr_samples=tcr_samples,
    )
    tables.write_table(table, snakemake.output.features, sort_by=["sample"])
