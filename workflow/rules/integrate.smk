# Integration across patients, timepoints and batches: one h5ad per method in
# integrate.methods (results/integrate/{method}.h5ad), metrics to compare them,
# and UMAPs of the method used downstream (integrate.use).


rule integrate:
    input:
        h5mu=cohort_files("results/qc/{sample}.h5mu"),
        qc="results/tables/qc_samples.tsv",
    output:
        h5ad="results/integrate/{method}.h5ad",
    log:
        "logs/integrate/{method}.log",
    benchmark:
        "benchmarks/integrate/{method}.tsv"
    conda:
        "../../envs/integrate.yaml"
    threads: 2
    resources:
        mem_mb=16000,
    params:
        integrate=integrate_params,
        samples=COHORT_SAMPLES,
        gene_join=config["load"]["gene_join"],
        seed=seed(),
    script:
        "../scripts/integrate.py"


rule integration_metrics:
    input:
        unpack(integration_metrics_inputs),
    output:
        table="results/tables/integration_metrics.tsv",
        figure=report(
            "results/figures/integration_metrics.png",
            caption="../report/integration_metrics.rst",
            category="Integration",
        ),
    log:
        "logs/integration_metrics.log",
    benchmark:
        "benchmarks/integration_metrics.tsv"
    conda:
        "../../envs/integrate.yaml"
    threads: 1
    resources:
        mem_mb=8000,
    params:
        integrate=canonical(config["integrate"]),
        seed=seed(),
    script:
        "../scripts/integration_metrics.py"


rule plot_integration:
    input:
        h5ad=f"results/integrate/{INTEGRATION_USED}.h5ad",
    output:
        umap=report(
            "results/figures/integration_umap.png",
            caption="../report/integration_umap.rst",
            category="Integration",
        ),
    log:
        "logs/plot_integration.log",
    benchmark:
        "benchmarks/plot_integration.tsv"
    conda:
        "../../envs/integrate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        colour_by=["sample", "patient", "timepoint", "batch", "compartment", "leiden"],
        seed=seed(),
    script:
        "../scripts/plot_integration.py"
