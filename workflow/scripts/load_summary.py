"""Entry script of rule `load_summary`: stack the per-library load summaries."""

from cartcohort.logs import script_logging

with script_logging(snakemake) as log:
    from cartcohort import io, tables

    combined = io.load_summary([tables.read_table(p) for p in snakemake.input.summaries])
    log.info("%d libraries loaded, %d cells", len(combined), combined["n_gex_cells"].sum())
    tables.write_table(combined, snakemake.output.table, sort_by=["sample"])
