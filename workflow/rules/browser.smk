# The cells to explore: results/cohort.h5ad (the gex modality with the calls, for
# `cellxgene launch`) and a static UCSC Cell Browser under results/browser/
# (cartcohort.browser). Not part of the `tables` target: neither is a table.


rule cohort_h5ad:
    input:
        h5mu="results/cohort.h5mu",
        clinical=clinical_table(),
    output:
        h5ad="results/cohort.h5ad",
    log:
        "logs/cohort_h5ad.log",
    benchmark:
        "benchmarks/cohort_h5ad.tsv"
    conda:
        "../../envs/annotate.yaml"
    resources:
        mem_mb=mem_mb("cohort_h5ad"),
        runtime=runtime("cohort_h5ad"),
    script:
        "../scripts/cohort_h5ad.py"


rule cell_browser:
    input:
        h5ad="results/cohort.h5ad",
    output:
        site=directory("results/browser"),
    log:
        "logs/cell_browser.log",
    benchmark:
        "benchmarks/cell_browser.tsv"
    conda:
        "../../envs/annotate.yaml"
    resources:
        mem_mb=mem_mb("cell_browser"),
        runtime=runtime("cell_browser"),
    script:
        "../scripts/cell_browser.py"
