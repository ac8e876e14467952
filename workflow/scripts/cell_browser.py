"""Entry script of rule `cell_browser`: the static UCSC Cell Browser site results/browser/
of results/cohort.h5ad (works offline; serve it with tools/serve_browser.py)."""

from cartcohort.logs import script_logging

with script_logging(snakemake):
    from cartcohort import browser

    browser.build_cell_browser(h5ad_path=snakemake.input.h5ad,
                               out_dir=snakemake.output.site)
