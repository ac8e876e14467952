# Frozen cohort reference and the scoring of new infusion products against it (issue #20;
# README "Score a new product"). Rule reference freezes results/reference/ from a cohort
# run (part of `all`); with config new_samples set, target score_products loads and QCs
# the new libraries with the cohort rules' settings, then projects, labels, summarises and
# places each of them (rule score_product), running no cohort rule.
# Methods: workflow/scripts/cartcohort/reference/ (module docstrings).


rule reference:
    input:
        merged="results/integrate/merged.h5ad",
        integrated=f"results/integrate/{INTEGRATION_USED}.h5ad",
        cells="results/tables/cells.tsv.gz",
        signatures=signatures_path(),
        repertoire="results/tables/repertoire_samples.tsv",
        car_models="results/tables/annotation_car_models.tsv",
        libraries="results/tables/annotation_libraries.tsv",
        reference_features="results/tables/reference_features.tsv",
        association="results/tables/association.tsv",
        panel=primary_panel_path(),
        qc_libraries=cohort_files("results/qc/{sample}.h5mu"),
    output:
        model="results/reference/model.h5ad",
        manifest="results/reference/manifest.json",
        settings="results/reference/settings.json",
    log:
        "logs/reference.log",
    benchmark:
        "benchmarks/reference.tsv"
    conda:
        "../../envs/integrate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("reference"),
        runtime=runtime("reference"),
    params:
        freeze_reference=freeze_reference_kwargs(),
    script:
        "../scripts/freeze_reference.py"


rule score_product:
    input:
        h5mu="results/qc/{sample}.h5mu",
        qc="results/qc/{sample}.tsv",
        manifest=reference_files(),
        features_file=features_catalogue_path(),
    output:
        card="results/new_products/{sample}.tsv",
        html="results/new_products/{sample}.html",
        pdf="results/new_products/{sample}.pdf",
        cells="results/new_products/{sample}/cells.tsv.gz",
        features="results/new_products/{sample}/features.tsv",
    log:
        "logs/score_product/{sample}.log",
    benchmark:
        "benchmarks/score_product/{sample}.tsv"
    conda:
        "../../envs/annotate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("score_product"),
        runtime=runtime("score_product"),
    params:
        score_new_product=score_new_product_kwargs,
    script:
        "../scripts/score_product.py"


rule score_products:
    input:
        cards=expand("results/new_products/{sample}.tsv", sample=NEW_SAMPLES),
        html=expand("results/new_products/{sample}.html", sample=NEW_SAMPLES),
        pdf=expand("results/new_products/{sample}.pdf", sample=NEW_SAMPLES),
    output:
        table="results/tables/new_products.tsv",
    log:
        "logs/score_products.log",
    benchmark:
        "benchmarks/score_products.tsv"
    conda:
        "../../envs/associate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("score_products"),
        runtime=runtime("score_products"),
    script:
        "../scripts/score_products.py"
