# Clonotypes (scirpy, within each patient) and repertoire dynamics.


rule clonotypes:
    input:
        h5mu=cohort_files("results/qc/{sample}.h5mu"),
        qc_samples="results/tables/qc_samples.tsv",
    output:
        airr="results/clonotypes/airr.h5ad",
        clonotypes="results/tables/clonotypes.tsv",
        public="results/tables/public_clonotypes.tsv",
    log:
        "logs/clonotypes.log",
    benchmark:
        "benchmarks/clonotypes.tsv"
    conda:
        "../../envs/clonotypes.yaml"
    threads: THREADS
    resources:
        mem_mb=mem_mb("clonotypes"),
        runtime=runtime("clonotypes"),
    params:
        cohort_clonotypes=cohort_clonotypes_kwargs(),
    script:
        "../scripts/clonotypes.py"


rule repertoire:
    input:
        cells="results/tables/cells.tsv.gz",
    output:
        samples="results/tables/repertoire_samples.tsv",
        tracking="results/tables/clone_tracking.tsv",
        states="results/tables/clone_states.tsv",
    log:
        "logs/repertoire.log",
    benchmark:
        "benchmarks/repertoire.tsv"
    conda:
        "../../envs/clonotypes.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("repertoire"),
        runtime=runtime("repertoire"),
    params:
        repertoire_tables=repertoire_tables_kwargs(),
    script:
        "../scripts/repertoire.py"


# CAR+ clone kinetics after infusion (cartcohort/tl/kinetics.py): in vivo features,
# outcome correlates, never product predictors.


rule kinetics:
    input:
        cells="results/tables/cells.tsv.gz",
    output:
        clones="results/tables/clone_kinetics.tsv",
        samples="results/tables/kinetics_samples.tsv",
        patients="results/tables/kinetics_patients.tsv",
        fate="results/tables/clone_fate.tsv",
        warnings="results/kinetics/warnings.tsv",
    log:
        "logs/kinetics.log",
    benchmark:
        "benchmarks/kinetics.tsv"
    conda:
        "../../envs/clonotypes.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("kinetics"),
        runtime=runtime("kinetics"),
    params:
        kinetics_tables=kinetics_tables_kwargs(),
    script:
        "../scripts/kinetics.py"


rule plot_clonotypes:
    input:
        samples="results/tables/repertoire_samples.tsv",
        tracking="results/tables/clone_tracking.tsv",
    output:
        expansion=report(
            "results/figures/clonal_expansion.png",
            caption="../report/clonotypes_expansion.rst",
            category="Clonotypes",
        ),
        diversity=report(
            "results/figures/rarefied_diversity.png",
            caption="../report/clonotypes_diversity.rst",
            category="Clonotypes",
        ),
        alluvial=report(
            "results/figures/top_clones_alluvial.png",
            caption="../report/clonotypes_alluvial.rst",
            category="Clonotypes",
        ),
    log:
        "logs/plot_clonotypes.log",
    benchmark:
        "benchmarks/plot_clonotypes.tsv"
    conda:
        "../../envs/clonotypes.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("plot_clonotypes"),
        runtime=runtime("plot_clonotypes"),
    params:
        clonotype_figures=clonotype_figures_kwargs(),
    script:
        "../scripts/plot_clonotypes.py"


rule plot_kinetics:
    input:
        samples="results/tables/kinetics_samples.tsv",
        clones="results/tables/clone_kinetics.tsv",
        fate="results/tables/clone_fate.tsv",
    output:
        car=report(
            "results/figures/car_kinetics.png",
            caption="../report/kinetics_car.rst",
            category="Clonotypes",
            subcategory="Kinetics",
        ),
        fate=report(
            "results/figures/clone_fate.png",
            caption="../report/kinetics_fate.rst",
            category="Clonotypes",
            subcategory="Kinetics",
        ),
        volcano=report(
            directory("results/figures/clone_expansion_volcano"),
            patterns=["{page}.png"],
            caption="../report/kinetics_volcano.rst",
            category="Clonotypes",
            subcategory="Kinetics",
        ),
    log:
        "logs/plot_kinetics.log",
    benchmark:
        "benchmarks/plot_kinetics.tsv"
    conda:
        "../../envs/clonotypes.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("plot_kinetics"),
        runtime=runtime("plot_kinetics"),
    params:
        kinetics_figures=kinetics_figures_kwargs(),
    script:
        "../scripts/plot_kinetics.py"


rule epitopes:
    input:
        airr="results/clonotypes/airr.h5ad",
        db=epitope_db_path(),
    output:
        clones="results/tables/epitope_clones.tsv",
        products="results/tables/epitope_products.tsv",
    log:
        "logs/epitopes.log",
    benchmark:
        "benchmarks/epitopes.tsv"
    conda:
        "../../envs/clonotypes.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("epitopes"),
        runtime=runtime("epitopes"),
    params:
        epitope_db_tables=epitope_db_tables_kwargs(),
    script:
        "../scripts/epitopes.py"
