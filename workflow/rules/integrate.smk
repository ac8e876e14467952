# Integration across patients, timepoints and batches: the QC-passing cells merged,
# normalised, HVGs and PCA once (results/integrate/merged.h5ad), then one embedding and
# graph per method in integrate.methods (results/integrate/{method}.h5ad), metrics to
# compare them (a first pass before annotation, a second against the final cell states
# after it), and the UMAP of the method used downstream (integrate.use), computed
# apart (rule umap) so that annotation does not wait for the layout.


rule merge_samples:
    input:
        h5mu=cohort_files("results/qc/{sample}.h5mu"),
        qc="results/tables/qc_samples.tsv",
    output:
        h5ad="results/integrate/merged.h5ad",
        warnings="results/integrate/merge_warnings.tsv",
    log:
        "logs/merge_samples.log",
    benchmark:
        "benchmarks/merge_samples.tsv"
    conda:
        "../../envs/integrate.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("merge_samples"),
        runtime=runtime("merge_samples"),
    params:
        merge_samples=merge_samples_kwargs(),
    script:
        "../scripts/merge_samples.py"


rule integrate:
    input:
        h5ad="results/integrate/merged.h5ad",
    output:
        h5ad="results/integrate/{method}.h5ad",
    log:
        "logs/integrate/{method}.log",
    benchmark:
        "benchmarks/integrate/{method}.tsv"
    conda:
        "../../envs/integrate.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("integrate"),
        runtime=runtime("integrate"),
    params:
        integrate_method=integrate_method_kwargs,
    script:
        "../scripts/integrate.py"


rule umap:
    input:
        h5ad=f"results/integrate/{INTEGRATION_USED}.h5ad",
    output:
        h5ad="results/integrate/umap.h5ad",
    log:
        "logs/umap.log",
    benchmark:
        "benchmarks/umap.tsv"
    priority: 10
    conda:
        "../../envs/integrate.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("umap"),
        runtime=runtime("umap"),
    params:
        umap_layout=umap_layout_kwargs(),
    script:
        "../scripts/umap_layout.py"


rule integration_metrics:
    input:
        unpack(integration_metrics_inputs),
    output:
        table="results/integrate/metrics_pre_annotation.tsv",
    log:
        "logs/integration_metrics.log",
    benchmark:
        "benchmarks/integration_metrics.tsv"
    conda:
        "../../envs/integrate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("integration_metrics"),
        runtime=runtime("integration_metrics"),
    params:
        score_methods=score_methods_kwargs(),
    script:
        "../scripts/integration_metrics.py"


# Second pass after annotation (annotate depends on integrate.use, so this is a rule of
# its own downstream of it): the final cell states as the label, the first pass beside.
rule integration_metrics_states:
    input:
        h5ad=expand("results/integrate/{method}.h5ad", method=INTEGRATION_METHODS),
        cells="results/tables/cells.tsv.gz",
        first_pass="results/integrate/metrics_pre_annotation.tsv",
    output:
        table="results/tables/integration_metrics.tsv",
        figure=report(
            "results/figures/integration_metrics.png",
            caption="../report/integration_metrics.rst",
            category="Integration",
        ),
    log:
        "logs/integration_metrics_states.log",
    benchmark:
        "benchmarks/integration_metrics_states.tsv"
    conda:
        "../../envs/integrate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("integration_metrics_states"),
        runtime=runtime("integration_metrics_states"),
    params:
        score_final_states=score_final_states_kwargs(),
    script:
        "../scripts/integration_metrics_states.py"


rule plot_integration:
    input:
        h5ad=f"results/integrate/{INTEGRATION_USED}.h5ad",
        umap="results/integrate/umap.h5ad",
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
        mem_mb=mem_mb("plot_integration"),
        runtime=runtime("plot_integration"),
    params:
        integration_umap=integration_umap_kwargs(),
    script:
        "../scripts/plot_integration.py"
