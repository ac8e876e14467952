# Published entry point (config published.cells set): the authors' cell table or annotated
# object, checked against the sample sheet and its labels mapped to our calls, becomes the
# per-cell table of rule annotate, so sample_features, associate, the scorecards and the
# report run unchanged. Method: workflow/scripts/cartcohort/published.py (module docstring).
# Both rules write results/tables/cells.tsv.gz: the entry point decides which one runs.

if PUBLISHED:

    ruleorder: import_cells > annotate

else:

    ruleorder: annotate > import_cells


rule import_cells:
    input:
        unpack(import_cells_inputs),
    output:
        cells="results/tables/cells.tsv.gz",
        summary="results/tables/import_samples.tsv",
        warnings="results/import/warnings.tsv",
    log:
        "logs/import_cells.log",
    benchmark:
        "benchmarks/import_cells.tsv"
    conda:
        "../../envs/annotate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("import_cells"),
        runtime=runtime("import_cells"),
    params:
        import_published=import_published_kwargs(),
    script:
        "../scripts/import_cells.py"


# Our annotation beside the authors' labels (config published.annotate): the full
# annotation on the raw counts of the authors' object, and its agreement with their mapped
# labels. Method: workflow/scripts/cartcohort/published_annotate.py (module docstring).


rule published_annotation:
    input:
        unpack(published_annotation_inputs),
    output:
        cells="results/tables/published_own_cells.tsv.gz",
        agreement="results/tables/published_agreement.tsv",
    log:
        "logs/published_annotation.log",
    benchmark:
        "benchmarks/published_annotation.tsv"
    conda:
        "../../envs/annotate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("annotate"),
        runtime=runtime("annotate"),
    params:
        published_annotation=published_annotation_kwargs(),
    script:
        "../scripts/published_annotation.py"
