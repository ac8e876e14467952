# Product features, patient-level association with response, and product scorecards.
# Methods: workflow/scripts/cartcohort/tl/features.py, stats/ and scorecards/ (module docstrings).
# The patient is the statistical unit throughout (cells are never replicates).


rule response_groups:
    input:
        clinical=config["clinical"],
    output:
        clinical="results/tables/clinical.tsv",
    log:
        "logs/response_groups.log",
    benchmark:
        "benchmarks/response_groups.tsv"
    conda:
        "../../envs/associate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("response_groups"),
        runtime=runtime("response_groups"),
    params:
        apply_response_override=apply_response_override_kwargs(),
    script:
        "../scripts/response_groups.py"


rule sample_features:
    input:
        unpack(sample_features_inputs),
    output:
        features="results/tables/sample_features.tsv",
    log:
        "logs/sample_features.log",
    benchmark:
        "benchmarks/sample_features.tsv"
    conda:
        "../../envs/associate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("sample_features"),
        runtime=runtime("sample_features"),
    script:
        "../scripts/sample_features.py"


rule associate:
    input:
        features="results/tables/sample_features.tsv",
        clinical=clinical_table(),
        panel=primary_panel_path(),
        dictionary=features_catalogue_path(),
    output:
        association="results/tables/association.tsv",
        in_vivo="results/tables/in_vivo_correlates.tsv",
        notes="results/tables/association_notes.tsv",
        longitudinal="results/tables/longitudinal.tsv",
        survival="results/tables/survival.tsv",
        libraries="results/tables/association_libraries.tsv",
    log:
        "logs/associate.log",
    benchmark:
        "benchmarks/associate.tsv"
    conda:
        "../../envs/associate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("associate"),
        runtime=runtime("associate"),
    params:
        associate=associate_kwargs(),
    script:
        "../scripts/associate.py"


rule pseudobulk_de:
    input:
        h5mu="results/cohort.h5mu",
        clinical=clinical_table(),
    output:
        de="results/tables/pseudobulk_de.tsv",
    log:
        "logs/pseudobulk_de.log",
    benchmark:
        "benchmarks/pseudobulk_de.tsv"
    priority: 5
    conda:
        "../../envs/associate.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("pseudobulk_de"),
        runtime=runtime("pseudobulk_de"),
    params:
        pseudobulk_de=pseudobulk_de_kwargs(),
    script:
        "../scripts/pseudobulk_de.py"


rule scorecards:
    input:
        features="results/tables/sample_features.tsv",
        clinical=clinical_table(),
        association="results/tables/association.tsv",
        panel=primary_panel_path(),
        dictionary=features_catalogue_path(),
    output:
        cards=primary_files("results/scorecards/{sample}.tsv"),
        reference="results/tables/reference_features.tsv",
        calibration="results/tables/scorecard_calibration.tsv",
        html=report(
            "results/scorecards/scorecards.html",
            caption="../report/scorecards.rst",
            category="Scorecards",
        ),
        heatmap=report(
            "results/figures/scorecards_heatmap.png",
            caption="../report/scorecards_heatmap.rst",
            category="Scorecards",
        ),
    log:
        "logs/scorecards.log",
    benchmark:
        "benchmarks/scorecards.tsv"
    conda:
        "../../envs/associate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("scorecards"),
        runtime=runtime("scorecards"),
    params:
        cohort_scorecards=cohort_scorecards_kwargs(),
    script:
        "../scripts/scorecards.py"


rule plot_association:
    input:
        association="results/tables/association.tsv",
        de="results/tables/pseudobulk_de.tsv",
    output:
        forest=report(
            "results/figures/association_forest.png",
            caption="../report/association_forest.rst",
            category="Association",
        ),
        forest_exploratory=report(
            "results/figures/association_forest_exploratory.png",
            caption="../report/association_forest_exploratory.rst",
            category="Association",
        ),
        volcano=report(
            "results/figures/association_volcano.png",
            caption="../report/association_volcano.rst",
            category="Association",
        ),
    log:
        "logs/plot_association.log",
    benchmark:
        "benchmarks/plot_association.tsv"
    conda:
        "../../envs/associate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("plot_association"),
        runtime=runtime("plot_association"),
    script:
        "../scripts/plot_association.py"


rule plot_time_survival:
    input:
        features="results/tables/sample_features.tsv",
        clinical=clinical_table(),
        panel=primary_panel_path(),
        dictionary=features_catalogue_path(),
    output:
        trajectories=report(
            directory("results/figures/longitudinal_trajectories"),
            patterns=["{page}.png"],
            caption="../report/longitudinal_trajectories.rst",
            category="Association",
            subcategory="Time and survival",
        ),
        km=report(
            directory("results/figures/survival_km"),
            patterns=["{page}.png"],
            caption="../report/survival_km.rst",
            category="Association",
            subcategory="Time and survival",
        ),
    log:
        "logs/plot_time_survival.log",
    benchmark:
        "benchmarks/plot_time_survival.tsv"
    conda:
        "../../envs/associate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("plot_time_survival"),
        runtime=runtime("plot_time_survival"),
    params:
        time_survival_figures=time_survival_figures_kwargs(),
    script:
        "../scripts/plot_time_survival.py"
