import copy
import re
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

# The library package lives next to the entry scripts.
sys.path.insert(0, os.path.join(workflow.basedir, "workflow", "scripts"))

from cartcohort import sheets  # noqa: E402
from cartcohort.errors import InputError  # noqa: E402

WORKFLOW_DIR = workflow.basedir


validate(config, schema="../../config/schemas/config.schema.yaml")


def _config_path(value):
    """A path from the config, relative to the working (project) directory."""
    return os.path.abspath(value)


def _resource_path(value):
    """A resource path from the config: the project directory first, then the
    workflow folder, where the bundled resources (signatures) live."""
    if os.path.isabs(value) or os.path.exists(value):
        return os.path.abspath(value)
    bundled = os.path.join(WORKFLOW_DIR, value)
    if os.path.exists(bundled):
        return bundled
    raise WorkflowError(
        f"config: {value!r} exists neither in the project directory {os.getcwd()} nor in "
        f"the workflow folder {WORKFLOW_DIR}. Fix: give an existing path."
    )


config["samples"] = _config_path(config["samples"])
config["clinical"] = _config_path(config["clinical"])

try:
    SAMPLES, CLINICAL = sheets.prepare_inputs(
        config,
        base_dir=".",
        check_files=config.get("check_input_files", True),
        cache_path=os.path.join(".snakemake", "cartcohort_input_checks.json"),
    )
except InputError as err:
    raise WorkflowError(str(err)) from None

validate(SAMPLES.reset_index(), schema="../../config/schemas/samples.schema.yaml")
validate(CLINICAL.reset_index(), schema="../../config/schemas/clinical.schema.yaml")

EXCLUDED_SAMPLES = set(config.get("exclude_samples", []))
COHORT_SAMPLES = [s for s in SAMPLES.index if s not in EXCLUDED_SAMPLES]
PRIMARY_SAMPLES = [
    s
    for s in COHORT_SAMPLES
    if SAMPLES.loc[s, "timepoint"] == config["primary_timepoint"]
]
INTEGRATION_METHODS = list(config["integrate"]["methods"])
INTEGRATION_USED = config["integrate"]["use"]
if INTEGRATION_USED not in INTEGRATION_METHODS:
    raise WorkflowError(
        f"config: integrate.use={INTEGRATION_USED!r} is not among integrate.methods "
        f"{INTEGRATION_METHODS}. Fix: add it to integrate.methods or choose one of them."
    )


wildcard_constraints:
    sample="|".join(re.escape(s) for s in SAMPLES.index) if len(SAMPLES) else "NONE",
    method="|".join(INTEGRATION_METHODS),


# ---------------------------------------------------------------- input functions


def sample_gex(wildcards):
    """Path of the GEX input of one library (absolute)."""
    return SAMPLES.loc[wildcards.sample, "gex"]


def sample_vdj(wildcards):
    """Path of the TCR contig input of one library, as a list (empty: no TCR)."""
    vdj = SAMPLES.loc[wildcards.sample, "vdj"]
    return [vdj] if vdj else []


def sample_meta(wildcards):
    """The sample-sheet row of one library as a plain dict (no paths)."""
    row = SAMPLES.loc[wildcards.sample]
    meta = {k: row[k] for k in row.index if k not in ("gex", "vdj")}
    meta["sample"] = wildcards.sample
    return {
        k: (None if isinstance(v, float) and v != v else v) for k, v in meta.items()
    }


def canonical(params):
    """A params dict with keys sorted at every level: Snakemake compares params by
    their text, so reordering keys in a config file must not trigger re-runs."""
    if isinstance(params, dict):
        return {k: canonical(params[k]) for k in sorted(params)}
    if isinstance(params, (list, tuple)):
        return [canonical(v) for v in params]
    return params


def _deep_update(base, override):
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def qc_params(wildcards):
    """QC settings of one library: config['qc'] + per-sample overrides + the
    doublet settings of the library's compartment; `seed` added."""
    qc = copy.deepcopy(config["qc"])
    per_sample = qc.pop("per_sample", {}) or {}
    doublets = qc.get("doublets", {})
    per_compartment = doublets.pop("per_compartment", {}) or {}
    compartment = SAMPLES.loc[wildcards.sample, "compartment"]
    if compartment in per_compartment:
        doublets.update(per_compartment[compartment])
    qc["doublets"] = doublets
    qc = _deep_update(qc, per_sample.get(wildcards.sample, {}))
    qc["seed"] = seed()
    return canonical(qc)


def cohort_files(pattern):
    """`pattern` expanded over the cohort's samples (excluded samples left out)."""
    return expand(pattern, sample=COHORT_SAMPLES)


def primary_files(pattern):
    """`pattern` expanded over the primary-timepoint (infusion product) samples."""
    return expand(pattern, sample=PRIMARY_SAMPLES)


def associate_params(wildcards):
    """config['associate'] with the cohort-level settings it needs and the seed."""
    params = copy.deepcopy(config["associate"])
    params["responders"] = list(config["responders"])
    params["primary_timepoint"] = str(config["primary_timepoint"])
    params["seed"] = seed()
    return canonical(params)


def signatures_path():
    """The marker-program file (user file or the bundled one)."""
    return _resource_path(config["annotate"]["signatures"])


def seed():
    """Master seed from the config."""
    return int(config["seed"])


def all_outputs():
    """Every final output of the workflow (the `all` target)."""
    return [
        "results/cohort.h5mu",
        "results/tables/cells.tsv.gz",
        "results/tables/qc_samples.tsv",
        "results/tables/load_samples.tsv",
        "results/tables/integration_metrics.tsv",
        "results/tables/clonotypes.tsv",
        "results/tables/public_clonotypes.tsv",
        "results/tables/clone_states.tsv",
        "results/tables/repertoire_samples.tsv",
        "results/tables/clone_tracking.tsv",
        "results/tables/sample_features.tsv",
        "results/tables/association.tsv",
        "results/tables/pseudobulk_de.tsv",
        "results/provenance.json",
        "results/provenance.html",
        *report_figures(),
        *primary_files("results/scorecards/{sample}.tsv"),
    ]


def clonotype_params(wildcards):
    """config['clonotypes'] with the master seed added."""
    params = dict(config["clonotypes"])
    params["seed"] = seed()
    return canonical(params)


def patient_response():
    """patient -> response code (from the clinical table)."""
    return {str(p): str(r) for p, r in CLINICAL["response"].items()}


def annotate_params(wildcards):
    """config['annotate'] with the CAR features added (annotation draws no random numbers)."""
    params = dict(config["annotate"])
    params["car_features"] = list(config.get("car_features") or [])
    return canonical(params)


def merge_params():
    """Settings of the merge/normalise/HVG/PCA step shared by every integration method."""
    cfg = config["integrate"]
    keys = ["n_top_genes", "exclude_genes", "n_pcs", "batch_key", "scale"]
    out = {k: cfg[k] for k in keys if k in cfg}
    out["gene_join"] = config["load"]["gene_join"]
    return canonical(out)


def integrate_params(wildcards):
    """Settings of one integration method: the graph/Leiden keys of config['integrate']
    (not those of the shared merge step, the UMAP or the metrics), with the method's own
    section (e.g. integrate.harmony) as `method_params`."""
    cfg = config["integrate"]
    keys = ["batch_key", "n_neighbors", "leiden_resolutions"]
    out = {k: cfg[k] for k in keys if k in cfg}
    out["method_params"] = dict(cfg.get(wildcards.method) or {})
    return canonical(out)


def umap_params():
    """UMAP settings (rule umap)."""
    cfg = config["integrate"]
    return canonical({k: cfg.get(k) for k in ("umap_min_dist", "umap_n_epochs")})


def embed_method(wildcards):
    """Leiden only for the method used downstream; the others are compared by the
    metrics, which need their kNN graph alone."""
    return wildcards.method == INTEGRATION_USED


def integration_metrics_inputs(wildcards):
    """Every method's h5ad; plus cells.tsv.gz when integrate.label_key names an
    annotation column (e.g. `state`) used as the bio-conservation label."""
    inputs = {
        "h5ad": expand("results/integrate/{method}.h5ad", method=INTEGRATION_METHODS)
    }
    if config["integrate"].get("label_key"):
        inputs["cells"] = "results/tables/cells.tsv.gz"
    return inputs


# ---------------------------------------------------------------- resources

# Memory (MB) and run time (min) of each rule as a linear function of the size of its
# input files, so that a cluster executor requests what a job needs. The coefficients
# are fitted to the `benchmark:` files of `make bench` (benchmarks/results.tsv, 20k and
# 200k cells) with headroom; see docs/RESOURCES.md. Retries (--retries) scale memory by
# 1.5x per attempt. Columns: MB fixed, MB per input MB, min fixed, min per input GB.
RESOURCE_MODEL = {
    "load_sample": (1000, 6.0, 5, 6),
    "qc_sample": (1000, 6.0, 5, 10),
    "merge_samples": (1000, 2.5, 10, 3),
    "integrate": (1000, 2.0, 10, 8),
    "integration_metrics": (2500, 1.5, 10, 12),
    "plot_integration": (1000, 1.0, 5, 2),
    "umap": (1000, 12.0, 10, 8),
    "cohort": (1000, 3.0, 10, 3),
    "clonotypes": (1000, 2.0, 10, 4),
    "annotate": (1000, 3.0, 10, 3),
    "plot_annotation": (1000, 6.0, 5, 2),
    "pseudobulk_de": (1000, 5.0, 10, 3),
    "repertoire": (1000, 4.0, 5, 20),
    "plot_clonotypes": (1000, 2.0, 5, 10),
    "load_summary": (500, 2.0, 5, 10),
    "qc_summary": (500, 2.0, 5, 10),
    "plot_qc": (1000, 0.5, 5, 10),
    "sample_features": (1000, 4.0, 5, 20),
    "associate": (1000, 4.0, 10, 20),
    "scorecards": (1000, 4.0, 5, 10),
    "plot_association": (1000, 4.0, 5, 10),
}


# Threads: every rule runs on one thread. The heavy steps are serial by design - seeded
# UMAP and pynndescent run single-threaded (their parallel modes are not reproducible),
# harmony takes ~4 s at 200k cells - so a second thread would idle while blocking a
# core; measured at 200k cells on 2 cores (make bench), jobs side by side (merge beside
# clonotypes, the compared methods beside the used one, metrics beside annotation) are
# what shortens the run. Raise it per rule with --set-threads where a tool gains.
THREADS = 1


MAX_MEM_MB = workflow.global_resources.get("mem_mb")
MAX_MEM_MB = MAX_MEM_MB if isinstance(MAX_MEM_MB, int) else None


def mem_mb(rule):
    """Resource function: memory of `rule` from its input size (RESOURCE_MODEL)."""
    fixed, per_mb, _, _ = RESOURCE_MODEL[rule]

    def _mem_mb(wildcards, input, attempt):
        need = int((fixed + per_mb * input.size_mb) * (1.5 ** (attempt - 1)))
        # with --resources mem_mb=N (the machine's memory), a job predicted to need more
        # than N gets N and runs alone, rather than the run being refused
        return min(need, MAX_MEM_MB) if MAX_MEM_MB else need

    return _mem_mb


def runtime(rule):
    """Resource function: run time (minutes) of `rule` from its input size."""
    _, _, fixed, per_gb = RESOURCE_MODEL[rule]

    def _runtime(wildcards, input, attempt):
        return int(fixed + per_gb * input.size_mb / 1024) * attempt

    return _runtime


# ---------------------------------------------------------------- report and provenance

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
        "results/figures/integration_umap.png",
        "results/figures/integration_metrics.png",
        "results/figures/annotation_umap_state.png",
        "results/figures/annotation_umap_lineage.png",
        "results/figures/annotation_umap_car.png",
        "results/figures/annotation_state_fractions.png",
        "results/figures/annotation_dotplot.png",
        "results/figures/clonal_expansion.png",
        "results/figures/rarefied_diversity.png",
        "results/figures/top_clones_alluvial.png",
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
        notes["celltypist"] = (
            "no celltypist model configured (annotate.celltypist_model)"
        )
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
