STEPS = ["load", "qc", "integrate", "clonotypes", "annotate", "associate", "report"]


def report_figures():
    """Every figure that goes into the HTML report (declared with report() by its rule)."""
    return [
        "results/overview.html",
        "results/figures/qc_violins.png",
        "results/figures/qc_scatter.png",
        "results/figures/association_forest.png",
        "results/figures/association_volcano.png",
        "results/figures/scorecards_heatmap.png",
        "results/scorecards/scorecards.html",
    ]


def overview_notes():
    """Analyses skipped for reasons known from the config alone."""
    notes = {}
    if not config["car_features"]:
        notes["CAR+ calls"] = (
            "config car_features is empty: car_positive is left empty (NA), "
            "CAR+ fractions are not computed"
        )
    if not config["annotate"].get("celltypist_model"):
        notes["celltypist"] = "no celltypist model configured (annotate.celltypist_model)"
    return notes


def provenance_inputs():
    """Label -> path of every user input file hashed into provenance.json."""
    files = {"samples_sheet": config["samples"], "clinical_table": config["clinical"]}
    for sample in SAMPLES.index:
        files[f"{sample}.gex"] = SAMPLES.loc[sample, "gex"]
        if SAMPLES.loc[sample, "vdj"]:
            files[f"{sample}.vdj"] = SAMPLES.loc[sample, "vdj"]
    files["signatures"] = signatures_path()
    return files


for _step in STEPS:

    rule:
        name:
            f"versions_{_step}"
        output:
            f"results/provenance/versions_{_step}.json",
        params:
            env_file=os.path.join(WORKFLOW_DIR, "envs", f"{_step}.yaml"),
        log:
            f"logs/versions/{_step}.log",
        benchmark:
            f"benchmarks/versions/{_step}.tsv"
        conda:
            f"../../envs/{_step}.yaml"
        script:
            "../scripts/record_versions.py"


rule provenance:
    input:
        versions=expand("results/provenance/versions_{step}.json", step=STEPS),
    output:
        "results/provenance.json",
    params:
        steps=STEPS,
        input_files=provenance_inputs(),
        workflow_dir=WORKFLOW_DIR,
    log:
        "logs/provenance.log",
    benchmark:
        "benchmarks/provenance.tsv"
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/provenance.py"


rule overview:
    input:
        qc_samples="results/tables/qc_samples.tsv",
        association="results/tables/association.tsv",
        clinical=config["clinical"],
    output:
        report(
            "results/overview.html",
            caption="../report/overview.rst",
            category="Overview",
            labels={"page": "cohort overview"},
        ),
    params:
        excluded=sorted(EXCLUDED_SAMPLES),
        notes=overview_notes(),
    log:
        "logs/overview.log",
    benchmark:
        "benchmarks/overview.tsv"
    conda:
        "../../envs/report.yaml"
    script:
        "../scripts/overview.py"
