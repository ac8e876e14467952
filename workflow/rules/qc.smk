# Per-sample quality control: metrics, MAD thresholds, doublets (Scrublet + TCR), summary.
# Every cell is kept in results/qc/{sample}.h5mu; downstream steps subset on gex.obs
# qc_pass and skip samples with sample_excluded in results/tables/qc_samples.tsv.


rule qc_sample:
    input:
        h5mu="results/load/{sample}.h5mu",
    output:
        h5mu="results/qc/{sample}.h5mu",
        summary="results/qc/{sample}.tsv",
    log:
        "logs/qc_sample/{sample}.log",
    benchmark:
        "benchmarks/qc_sample/{sample}.tsv"
    conda:
        "../../envs/qc.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("qc_sample"),
        runtime=runtime("qc_sample"),
    params:
        run_sample_qc=run_sample_qc_kwargs,
    script:
        "../scripts/qc_sample.py"


rule qc_summary:
    input:
        summaries=cohort_files("results/qc/{sample}.tsv"),
    output:
        table="results/tables/qc_samples.tsv",
    log:
        "logs/qc_summary.log",
    benchmark:
        "benchmarks/qc_summary.tsv"
    conda:
        "../../envs/qc.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("qc_summary"),
        runtime=runtime("qc_summary"),
    script:
        "../scripts/qc_summary.py"


rule plot_qc:
    input:
        h5mu=cohort_files("results/qc/{sample}.h5mu"),
        table="results/tables/qc_samples.tsv",
    output:
        violins=report(
            "results/figures/qc_violins.png",
            caption="../report/qc_violins.rst",
            category="QC",
        ),
        scatter=report(
            "results/figures/qc_scatter.png",
            caption="../report/qc_scatter.rst",
            category="QC",
        ),
    log:
        "logs/plot_qc.log",
    benchmark:
        "benchmarks/plot_qc.tsv"
    conda:
        "../../envs/qc.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("plot_qc"),
        runtime=runtime("plot_qc"),
    script:
        "../scripts/plot_qc.py"
