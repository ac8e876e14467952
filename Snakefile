# cart-cohort: single-cell CAR-T cohort analysis (scRNA-seq + scTCR-seq).
# Run with `make run` (demo cohort) or
#   snakemake --cores 2 -s /path/to/Snakefile -d /your/project --configfile your/config.yaml


# The workflow's folder (this file's), also when another Snakefile includes this one.
WORKFLOW_DIR = os.path.abspath(str(workflow.current_basedir))


configfile: os.path.join(WORKFLOW_DIR, "config", "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/load.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/integrate.smk"
include: "workflow/rules/clonotypes.smk"
include: "workflow/rules/annotate.smk"
include: "workflow/rules/published.smk"
include: "workflow/rules/associate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/browser.smk"
include: "workflow/rules/score.smk"


# Tiny bookkeeping rules run on the submit host, not as cluster jobs.
localrules:
    all,
    tables,
    load_summary,
    qc_summary,
    sample_features,
    response_groups,
    warnings,
    overview,
    provenance,
    provenance_page,
    score_products,


rule all:
    default_target: True
    input:
        all_outputs(),


# `snakemake tables`: the whole analysis without figures and report pages
rule tables:
    input:
        table_outputs(),
