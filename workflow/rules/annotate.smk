# CAR-T cell-state annotation: lineage (CD4/CD8/DN/DP), memory/exhaustion states,
# checkpoint-receptor positivity and CAR+ cells, with clone-aware final calls; then the
# final MuData (rule cohort: matrices + UMAP + calls + AIRR), built apart so that the
# tables downstream of annotation do not wait for the UMAP.
# Methods: workflow/scripts/cartcohort/tl/annotate/ (module docstrings).


rule annotate:
    input:
        merged="results/integrate/merged.h5ad",
        integrated=f"results/integrate/{INTEGRATION_USED}.h5ad",
        airr="results/clonotypes/airr.h5ad",
        signatures=signatures_path(),
    output:
        calls="results/annotate/calls.h5ad",
        cells="results/tables/cells.tsv.gz",
        agreement="results/tables/annotation_agreement.tsv",
        signature_genes="results/tables/annotation_signature_genes.tsv",
        car_models="results/tables/annotation_car_models.tsv",
        libraries="results/tables/annotation_libraries.tsv",
        warnings="results/annotate/warnings.tsv",
    log:
        "logs/annotate.log",
    benchmark:
        "benchmarks/annotate.tsv"
    priority: 10
    conda:
        "../../envs/annotate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("annotate"),
        runtime=runtime("annotate"),
    params:
        annotate=annotate_kwargs(),
    script:
        "../scripts/annotate.py"


rule cohort:
    input:
        merged="results/integrate/merged.h5ad",
        integrated=f"results/integrate/{INTEGRATION_USED}.h5ad",
        umap="results/integrate/umap.h5ad",
        calls="results/annotate/calls.h5ad",
        airr="results/clonotypes/airr.h5ad",
    output:
        h5mu="results/cohort.h5mu",
    log:
        "logs/cohort.log",
    benchmark:
        "benchmarks/cohort.tsv"
    priority: 5
    conda:
        "../../envs/annotate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("cohort"),
        runtime=runtime("cohort"),
    script:
        "../scripts/cohort.py"


rule plot_annotation:
    input:
        h5mu="results/cohort.h5mu",
        libraries="results/tables/annotation_libraries.tsv",
    output:
        umap_state=report(
            "results/figures/annotation_umap_state.png",
            caption="../report/annotation_umap_state.rst",
            category="Annotation",
        ),
        umap_lineage=report(
            "results/figures/annotation_umap_lineage.png",
            caption="../report/annotation_umap_lineage.rst",
            category="Annotation",
        ),
        umap_car=report(
            "results/figures/annotation_umap_car.png",
            caption="../report/annotation_umap_car.rst",
            category="Annotation",
        ),
        state_fractions=report(
            "results/figures/annotation_state_fractions.png",
            caption="../report/annotation_state_fractions.rst",
            category="Annotation",
        ),
        dotplot=report(
            "results/figures/annotation_dotplot.png",
            caption="../report/annotation_dotplot.rst",
            category="Annotation",
        ),
        library_calls=report(
            "results/figures/annotation_library_calls.png",
            caption="../report/annotation_library_calls.rst",
            category="Annotation",
        ),
    log:
        "logs/plot_annotation.log",
    benchmark:
        "benchmarks/plot_annotation.tsv"
    conda:
        "../../envs/annotate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("plot_annotation"),
        runtime=runtime("plot_annotation"),
    script:
        "../scripts/plot_annotation.py"


# Surface protein (CITE-seq): per library with an ADT panel, panel mapping (alias table),
# ADT QC, dsb (raw matrix beside the filtered one) or CLR, and protein calls (lineage,
# memory gates, checkpoints, CAR) beside the RNA calls. Methods:
# workflow/scripts/cartcohort/pp/prot.py, tl/annotate/protein.py, protein_step.py.
rule protein:
    input:
        h5mu=cohort_files("results/load/{sample}.h5mu"),
        gex=protein_gex_inputs(),
        calls="results/annotate/calls.h5ad",
        alias_table=protein_alias_table_path(),
        gates=protein_gates_path(),
    output:
        cells="results/tables/protein_cells.tsv.gz",
        libraries="results/tables/protein_libraries.tsv",
        fits="results/tables/protein_fits.tsv",
        agreement="results/tables/protein_agreement.tsv",
        warnings="results/protein/warnings.tsv",
    log:
        "logs/protein.log",
    benchmark:
        "benchmarks/protein.tsv"
    conda:
        "../../envs/annotate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("protein"),
        runtime=runtime("protein"),
    params:
        annotate_protein=annotate_protein_kwargs(),
    script:
        "../scripts/protein.py"
