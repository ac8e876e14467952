for _step in STEPS:

    rule:
        name:
            f"versions_{_step}"
        output:
            f"results/provenance/versions_{_step}.json",
        log:
            f"logs/versions/{_step}.log",
        benchmark:
            f"benchmarks/versions/{_step}.tsv"
        conda:
            f"../../envs/{_step}.yaml"
        params:
            record_versions=record_versions_kwargs(_step),
        script:
            "../scripts/record_versions.py"


rule provenance:
    input:
        versions=expand("results/provenance/versions_{step}.json", step=STEPS),
    output:
        "results/provenance.json",
    log:
        "logs/provenance.log",
    benchmark:
        "benchmarks/provenance.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        provenance_record=provenance_record_kwargs(),
    script:
        "../scripts/provenance.py"


rule provenance_page:
    input:
        record="results/provenance.json",
    output:
        report(
            "results/provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"page": "provenance"},
        ),
    log:
        "logs/provenance_page.log",
    benchmark:
        "benchmarks/provenance_page.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        render_provenance_html=render_provenance_html_kwargs(),
    script:
        "../scripts/provenance_page.py"


# Every input carried through rather than refused (found when the sheets were read, by the
# per-library load jobs, the merge and the QC), gathered into results/tables/warnings.tsv
# (cartcohort.report.collect_warnings); the overview page shows it at its top.


rule warnings:
    input:
        unpack(warnings_inputs),
    output:
        table="results/tables/warnings.tsv",
    log:
        "logs/warnings.log",
    benchmark:
        "benchmarks/warnings.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        collect_warnings=collect_warnings_kwargs(),
    script:
        "../scripts/collect_warnings.py"


rule overview:
    input:
        unpack(overview_inputs),
    output:
        report(
            "results/overview.html",
            caption="../report/overview.rst",
            category="Overview",
            labels={"page": "cohort overview"},
        ),
    log:
        "logs/overview.log",
    benchmark:
        "benchmarks/overview.tsv"
    conda:
        "../../envs/report.yaml"
    params:
        overview_page=overview_page_kwargs(),
    script:
        "../scripts/overview.py"
