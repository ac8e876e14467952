# Load one library: GEX (Cell Ranger h5 / mtx folder / cellranger multi / h5ad) and
# TCR contigs (10x CSV/JSON, AIRR) into results/load/{sample}.h5mu, plus a one-row
# summary of cell and barcode counts and the library's warnings (features kept out of
# the RNA matrix, a CAR the sheet says it lacks: results/load/{sample}.warnings.tsv)
# (cartcohort.io.load_sample); stack the summaries (cartcohort.io.load_summary). Inputs were resolved and validated at parse time by
# cartcohort.sheets.prepare_inputs (rules/common.smk).


rule load_sample:
    input:
        gex=sample_gex,
        vdj=sample_vdj,
    output:
        h5mu="results/load/{sample}.h5mu",
        summary="results/load/{sample}.summary.tsv",
        warnings="results/load/{sample}.warnings.tsv",
    log:
        "logs/load_sample/{sample}.log",
    benchmark:
        "benchmarks/load_sample/{sample}.tsv"
    conda:
        "../../envs/load.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("load_sample"),
        runtime=runtime("load_sample"),
    params:
        load_sample=load_sample_kwargs,
    script:
        "../scripts/load_sample.py"


rule load_summary:
    input:
        summaries=cohort_files("results/load/{sample}.summary.tsv"),
    output:
        table="results/tables/load_samples.tsv",
    log:
        "logs/load_summary.log",
    benchmark:
        "benchmarks/load_summary.tsv"
    conda:
        "../../envs/load.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("load_summary"),
        runtime=runtime("load_summary"),
    script:
        "../scripts/load_summary.py"
