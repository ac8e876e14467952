import copy
import re
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

# 9.14.8: schema defaults reach remote jobs again (snakemake#3614, reverted in #3924)
min_version("9.14.8")

# The library package lives next to the entry scripts (WORKFLOW_DIR: see the Snakefile).
sys.path.insert(0, os.path.join(WORKFLOW_DIR, "workflow", "scripts"))

from cartcohort import sheets  # noqa: E402
from cartcohort.config import validate_config  # noqa: E402
from cartcohort.errors import InputError  # noqa: E402
from cartcohort.report import shown_path  # noqa: E402
from cartcohort.vocab import ENTRY_CELL_RANGER, LIBRARY_UNIT_LABEL  # noqa: E402

# The schema is the one place where defaults live: once validated, `config` holds every
# key of config/schemas/config.schema.yaml, so the rules index it and never default.
CONFIG_SCHEMA = os.path.join(WORKFLOW_DIR, "config", "schemas", "config.schema.yaml")
try:
    validate_config(config, CONFIG_SCHEMA)
except InputError as err:
    raise WorkflowError(str(err)) from None


def _project_path(path):
    """`path` relative to the project directory when it lies inside it (the report shows
    every input of a rule: no machine path there, issue #23), else absolute."""
    path = os.path.abspath(path)
    rel = os.path.relpath(path)
    return path if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def _config_path(value):
    """A path from the config, relative to the working (project) directory."""
    return _project_path(value)


def _resource_path(value):
    """A resource path from the config: the project directory first, then the
    workflow folder, where the bundled resources (signatures) live."""
    if os.path.isabs(value) or os.path.exists(value):
        return _project_path(value)
    bundled = os.path.join(WORKFLOW_DIR, value)
    if os.path.exists(bundled):
        return _project_path(bundled)
    raise WorkflowError(
        f"config: {value!r} exists neither in the project directory {os.getcwd()} nor in "
        f"the workflow folder {WORKFLOW_DIR}. Fix: give an existing path."
    )


config["samples"] = _config_path(config["samples"])
config["clinical"] = _config_path(config["clinical"])
# Published entry point (config published.cells; workflow/rules/published.smk): the cells
# come from the authors' table, so no Cell Ranger step runs and the sheet may lack gex/vdj.
PUBLISHED = bool(config["published"]["cells"])
if PUBLISHED and not config["published"]["label_map"]:
    raise WorkflowError(
        "config: published.cells is set but published.label_map is empty. Fix: give the "
        "YAML that maps the authors' labels to our states (README 'Start from a published "
        "cell table')."
    )
# Our annotation beside the authors' labels (published.annotate; rule published_annotation)
PUBLISHED_ANNOTATE = PUBLISHED and bool(config["published"]["annotate"])
if config["published"]["features_from"] == "ours" and not PUBLISHED_ANNOTATE:
    raise WorkflowError(
        "config: published.features_from is 'ours' but our annotation does not run "
        "(published.cells empty or published.annotate false). Fix: set published.annotate: "
        "true with an .h5ad/.h5mu of raw counts, or features_from: authors."
    )

# INPUT_WARNINGS: rows of results/tables/warnings.tsv found at parse time (inputs carried
# through, e.g. patients with response NA), see cartcohort.sheets.prepare_inputs.
# Scoring mode (config new_samples, target score_products): the libraries are the new
# products only, so no cohort rule has inputs (see workflow/rules/score.smk).
SCORING = bool(config["new_samples"])
try:
    if SCORING:
        from cartcohort.reference.sheet import prepare_new_samples

        SAMPLES, CLINICAL, INPUT_WARNINGS = prepare_new_samples(
            config,
            path=_config_path(config["new_samples"]),
            check_files=config["check_input_files"],
            cache_path=os.path.join(".snakemake", "cartcohort_input_checks.json"),
        )
    else:
        SAMPLES, CLINICAL, INPUT_WARNINGS = sheets.prepare_inputs(
            config,
            base_dir=".",
            check_files=config["check_input_files"],
            cache_path=os.path.join(".snakemake", "cartcohort_input_checks.json"),
        )
except InputError as err:
    raise WorkflowError(str(err)) from None

# (on the published entry point gex may be empty; prepare_inputs checked the sheet)
if not PUBLISHED:
    validate(SAMPLES.reset_index(), schema="../../config/schemas/samples.schema.yaml")
validate(CLINICAL.reset_index(), schema="../../config/schemas/clinical.schema.yaml")

EXCLUDED_SAMPLES = set(config["exclude_samples"])
NEW_SAMPLES = list(SAMPLES.index) if SCORING else []
COHORT_SAMPLES = (
    [] if SCORING else [s for s in SAMPLES.index if s not in EXCLUDED_SAMPLES]
)
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


def _unused_method_settings():
    """Methods whose section integrate.<name> differs from its schema default although
    the method is not run: their settings would be ignored."""
    from cartcohort.config import load_schema, schema_defaults
    from cartcohort.tl.integrate import METHODS

    defaults = schema_defaults(load_schema(CONFIG_SCHEMA))["integrate"]
    return sorted(
        name
        for name, method in METHODS.items()
        if method.configurable
        and name not in INTEGRATION_METHODS
        and config["integrate"][name] != defaults[name]
    )


_UNUSED_METHOD_SETTINGS = _unused_method_settings()
if _UNUSED_METHOD_SETTINGS:
    raise WorkflowError(
        "config: "
        + "; ".join(
            f"integrate.{name} is set but {name} is not in integrate.methods "
            f"{INTEGRATION_METHODS}, so its settings would be ignored"
            for name in _UNUSED_METHOD_SETTINGS
        )
        + ". Fix: add the method to integrate.methods, or remove its section."
    )


if config["protein"]["car_adt"] and COHORT_SAMPLES and not PUBLISHED:
    # An anti-CAR antibody the panels lack is refused before any job runs.
    from cartcohort.errors import CartCohortError
    from cartcohort.tl.annotate.protein_step import check_car_adt_panels

    try:
        check_car_adt_panels(
            config["protein"]["car_adt"],
            gex={s: SAMPLES.loc[s, "gex"] for s in COHORT_SAMPLES},
        )
    except (CartCohortError, InputError) as err:
        raise WorkflowError(str(err)) from None


wildcard_constraints:
    sample="|".join(re.escape(s) for s in SAMPLES.index) if len(SAMPLES) else "NONE",
    method="|".join(INTEGRATION_METHODS),


# ---------------------------------------------------------------- input functions


def sample_gex(wildcards):
    """Path of the GEX input of one library (relative to the project directory when
    inside it: the report lists every input, issue #23)."""
    return _project_path(SAMPLES.loc[wildcards.sample, "gex"])


def sample_vdj(wildcards):
    """Path of the TCR contig input of one library, as a list (empty: no TCR)."""
    vdj = SAMPLES.loc[wildcards.sample, "vdj"]
    return [_project_path(vdj)] if vdj else []


def load_sample_kwargs(wildcards):
    """Keyword arguments of `io.load_sample`, rule load_sample - the library's
    sample-sheet row as a plain dict (no paths; NaN as None), the CAR features and
    whether the library must hold them (sheet column car_expected)."""
    row = SAMPLES.loc[wildcards.sample]
    meta = {
        k: row[k]
        for k in row.index
        if k not in ("gex", "vdj", sheets.CAR_EXPECTED_COLUMN)
    }
    meta["sample"] = wildcards.sample
    meta = {
        k: (None if isinstance(v, float) and v != v else v) for k, v in meta.items()
    }
    return canonical(
        {
            "meta": meta,
            "car_features": list(config["car_features"]),
            "car_expected": bool(row[sheets.CAR_EXPECTED_COLUMN]),
        }
    )


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


def run_sample_qc_kwargs(wildcards):
    """Keyword arguments of `pp.run_sample_qc` for one library: config['qc'] with the
    doublet settings of the library's compartment (qc.doublets.per_compartment), then
    the library's own overrides (qc.per_sample) merged in; `seed` added."""
    kwargs = copy.deepcopy(config["qc"])
    per_sample = kwargs.pop("per_sample")
    doublets = kwargs["doublets"]
    per_compartment = doublets.pop("per_compartment")
    doublets.update(
        per_compartment.get(SAMPLES.loc[wildcards.sample, "compartment"], {})
    )
    kwargs = _deep_update(kwargs, per_sample.get(wildcards.sample, {}))
    kwargs["seed"] = seed()
    return canonical(kwargs)


def cohort_files(pattern):
    """`pattern` expanded over the cohort's samples (excluded samples left out)."""
    return expand(pattern, sample=COHORT_SAMPLES)


def primary_files(pattern):
    """`pattern` expanded over the primary-timepoint (infusion product) samples."""
    return expand(pattern, sample=PRIMARY_SAMPLES)


def clinical_table():
    """The clinical table the response groups are read from: the user's, or with
    config response_override the one of rule response_groups (override applied)."""
    if config["response_override"]:
        return "results/tables/clinical.tsv"
    return config["clinical"]


def apply_response_override_kwargs():
    """Keyword arguments of `response_groups.apply_response_override`, rule
    response_groups - the override column (config response_override)."""
    return canonical({"column": config["response_override"]})


def _response_groups_kwargs():
    """The response-group settings shared by the association steps."""
    return {
        "primary_timepoint": config["primary_timepoint"],
        "responders": list(config["responders"]),
        "exclude_responses": list(config["associate"]["exclude_responses"]),
    }


def associate_kwargs():
    """Keyword arguments of `stats.associate`, rule associate - the response groups, the
    test settings of config['associate'], the blood compartment and the survival endpoint
    (associate.survival); the primary panel is an input file. Not the pseudobulk keys.
    """
    cfg = config["associate"]
    keys = [
        "covariates",
        "collapse_rho",
        "min_patients_per_group",
        "min_events_per_variable",
        "composition_transform",
    ]
    kwargs = {k: cfg[k] for k in keys}
    kwargs.update(_response_groups_kwargs())
    kwargs.update(
        blood_compartment=cfg["blood_compartment"], survival=dict(cfg["survival"])
    )
    kwargs["unit"] = cfg["unit"]
    return canonical(kwargs)


def time_survival_figures_kwargs():
    """Keyword arguments of `pl.outcomes.time_survival_figures`, rule plot_time_survival -
    the response groups, the blood compartment and the survival endpoint."""
    cfg = config["associate"]
    kwargs = dict(
        _response_groups_kwargs(),
        blood_compartment=cfg["blood_compartment"],
        survival=dict(cfg["survival"]),
    )
    return canonical(kwargs)


def pseudobulk_de_kwargs():
    """Keyword arguments of `stats.pseudobulk_de`, rule pseudobulk_de - the response
    groups, the pseudobulk keys of config['associate'] (no bootstrap or seed) and the
    genes kept out of the HVGs (integrate.exclude_genes)."""
    cfg = config["associate"]
    keys = ["min_cells_pseudobulk", "min_patients_per_group", "min_gene_count"]
    kwargs = {k: cfg[k] for k in keys}
    kwargs.update(_response_groups_kwargs())
    kwargs["exclude_genes"] = list(config["integrate"]["exclude_genes"])
    return canonical(kwargs)


def cohort_scorecards_kwargs():
    """Keyword arguments of `scorecards.cohort_scorecards`, rule scorecards - the response
    groups and the nominal coverage of the flags' interval (scorecards.flag_coverage; the
    products scored are the rule's card outputs, the panel is its input)."""
    kwargs = _response_groups_kwargs()
    kwargs["flag_coverage"] = config["scorecards"]["flag_coverage"]
    return canonical(kwargs)


def _new_library_settings():
    """The settings a new library must share with the reference (load, QC, CAR
    features, primary timepoint; reference.score.MATCHED_SETTINGS)."""
    return {
        "load": config["load"],
        "qc": config["qc"],
        "car_features": list(config["car_features"]),
        "primary_timepoint": config["primary_timepoint"],
    }


def freeze_reference_kwargs():
    """Keyword arguments of `reference.freeze_reference`, rule reference - the settings
    new libraries are processed with: those of _new_library_settings, annotation's
    (annotate_kwargs), the clonotype definition (cohort_clonotypes_kwargs without the
    cohort's samples), the repertoire settings, the kNN size (integrate.n_neighbors),
    the seed and the scorecard settings."""
    clonotypes = dict(cohort_clonotypes_kwargs())
    clonotypes.pop("samples")
    settings = {
        **_new_library_settings(),
        "annotate": annotate_kwargs(),
        "clonotypes": clonotypes,
        "repertoire": repertoire_tables_kwargs(),
        "n_neighbors": config["integrate"]["n_neighbors"],
        "seed": seed(),
        "flag_coverage": config["scorecards"]["flag_coverage"],
        **_response_groups_kwargs(),
    }
    return canonical({"settings": settings})


def score_new_product_kwargs(wildcards):
    """Keyword arguments of `reference.score_new_product`, rule score_product - the new
    library, the reference folder (config reference) and this run's settings that must
    equal the reference's."""
    return canonical(
        {
            "sample": wildcards.sample,
            "reference_dir": _config_path(config["reference"]),
            "settings": _new_library_settings(),
            "features_file": features_catalogue_path(),
        }
    )


def features_catalogue_path():
    """Readable feature names of the product scorecard (config scorecards.features)."""
    return _resource_path(config["scorecards"]["features"])


def reference_files():
    """The frozen reference's manifest (rule score_product's input; every file's
    checksum is verified against it)."""
    return os.path.join(_config_path(config["reference"]), "manifest.json")


def signatures_path():
    """The marker-program file (user file or the bundled one)."""
    return _resource_path(config["annotate"]["signatures"])


def primary_panel_path():
    """The primary-panel file of the response association (user file or the bundled one)."""
    return _resource_path(config["associate"]["primary_panel"])


def seed():
    """Master seed from the config."""
    return int(config["seed"])


def table_outputs():
    """The cohort object and every table of results/tables/ (the `tables` target): the
    whole analysis without figures, report pages, provenance or the frozen reference
    (on the published entry point, its tables; when scoring, the new products' table).
    """
    if SCORING:
        return ["results/tables/new_products.tsv"]
    if PUBLISHED:
        return [p for p in published_outputs() if p.startswith("results/tables/")]
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
        "results/tables/clone_kinetics.tsv",
        "results/tables/kinetics_samples.tsv",
        "results/tables/kinetics_patients.tsv",
        "results/tables/clone_fate.tsv",
        *epitope_outputs(),
        "results/tables/sample_features.tsv",
        "results/tables/protein_libraries.tsv",
        "results/tables/association.tsv",
        "results/tables/pseudobulk_de.tsv",
        "results/tables/scorecard_calibration.tsv",
        "results/tables/warnings.tsv",
    ]


def all_outputs():
    """Every final output of the workflow (the `all` target); with config new_samples
    set, the new products' scorecards (target score_products) and no cohort output;
    on the published entry point, what runs from a cell table (published_outputs)."""
    if SCORING:
        return ["results/tables/new_products.tsv"]
    if PUBLISHED:
        return published_outputs()
    return [
        *table_outputs(),
        "results/cohort.h5ad",
        "results/browser",
        "results/provenance.json",
        "results/provenance.html",
        *report_figures(),
        *primary_files("results/scorecards/{sample}.tsv"),
        "results/reference/manifest.json",
    ]


def published_outputs():
    """The outputs of the published entry point: the imported cells, the features, the
    association, the scorecards, warnings, the overview and provenance, and the figures
    that need no count matrix (no QC, integration, clonotype or annotation figures, no
    pseudobulk DE nor frozen reference: those need the Cell Ranger inputs)."""
    tcr = [
        "results/tables/repertoire_samples.tsv",
        "results/tables/clone_tracking.tsv",
        "results/tables/clone_states.tsv",
    ]
    return [
        "results/tables/cells.tsv.gz",
        "results/tables/import_samples.tsv",
        *(tcr if published_vdj_samples() else []),
        *(
            [
                "results/tables/published_own_cells.tsv.gz",
                "results/tables/published_agreement.tsv",
            ]
            if PUBLISHED_ANNOTATE
            else []
        ),
        "results/tables/sample_features.tsv",
        "results/tables/association.tsv",
        "results/tables/warnings.tsv",
        "results/overview.html",
        "results/provenance.json",
        "results/provenance.html",
        "results/figures/longitudinal_trajectories",
        "results/figures/survival_km",
        "results/scorecards/scorecards.html",
        "results/figures/scorecards_heatmap.png",
        *primary_files("results/scorecards/{sample}.tsv"),
    ]


def import_published_kwargs():
    """Keyword arguments of `published.import_published`, rule import_cells - the
    cohort's libraries (sheet columns of published.SHEET_COLUMNS; NaN as None), the
    excluded ones and the column names of config['published'] (the table and the label
    map are inputs)."""
    from cartcohort.published import SHEET_COLUMNS

    def _value(v):
        return None if isinstance(v, float) and v != v else v

    cols = [c for c in SHEET_COLUMNS if c in SAMPLES.columns]
    rows = SAMPLES.loc[list(COHORT_SAMPLES), cols].to_dict("index")  # one pass (1,000s)
    samples = {s: {c: _value(row[c]) for c in cols} for s, row in rows.items()}
    cfg = config["published"]
    keys = [
        "cell_column",
        "sample_column",
        "patient_column",
        "label_column",
        "clone_column",
    ]
    clonotypes = config["clonotypes"]
    return canonical(
        {
            "samples": samples,
            "excluded": sorted(EXCLUDED_SAMPLES),
            **{k: cfg[k] for k in keys},
            "vdj_samples": published_vdj_samples(),
            "clonotypes": {
                k: clonotypes[k]
                for k in [
                    "receptor_arms",
                    "dual_ir",
                    "sequence",
                    "metric",
                    "cutoff",
                    "clusters",
                ]
            },
        }
    )


def published_annotation_inputs(wildcards):
    """The authors' object (its counts), the imported cells and the marker programs."""
    return {
        "counts": _config_path(config["published"]["cells"]),
        "cells": "results/tables/cells.tsv.gz",
        "signatures": signatures_path(),
    }


def published_annotation_kwargs():
    """Keyword arguments of `published_annotate.published_annotation`: the table's cell and
    library columns, the CAR features, the annotate settings (annotate_kwargs) and the
    normalisation, PCA, graph and Leiden settings of integrate (its first resolution).
    """
    integrate = config["integrate"]
    annotate = annotate_kwargs()
    return canonical(
        {
            "cell_column": config["published"]["cell_column"],
            "sample_column": config["published"]["sample_column"],
            "car_features": annotate.pop("car_features"),
            "annotate": annotate,
            "n_top_genes": integrate["n_top_genes"],
            "n_pcs": integrate["n_pcs"],
            "scale": integrate["scale"],
            "n_neighbors": integrate["n_neighbors"],
            "leiden_resolution": integrate["leiden_resolutions"][0],
            "seed": seed(),
        }
    )


def published_vdj_samples():
    """The cohort's libraries whose sheet row gives TCR contigs (vdj), on the published
    entry point (their clonotypes are defined by rule import_cells)."""
    if not PUBLISHED:
        return []
    return [s for s in COHORT_SAMPLES if SAMPLES.loc[s, "vdj"]]


def kinetics_tables_kwargs():
    """Keyword arguments of `tl.kinetics.kinetics_tables`: config['kinetics'], the primary
    timepoint, the blood compartment (associate), the CAR-sorted patterns (annotate) and
    the seed."""
    kwargs = {k: v for k, v in config["kinetics"].items() if k != "epitope_db"}
    kwargs["primary_timepoint"] = config["primary_timepoint"]
    kwargs["blood_compartment"] = config["associate"]["blood_compartment"]
    kwargs["car_sorted_patterns"] = list(config["annotate"]["car_sorted_patterns"])
    kwargs["seed"] = seed()
    return canonical(kwargs)


def epitope_db_path():
    """kinetics.epitope_db (a VDJdb export TSV), or [] when not set (rule epitopes is then
    not a target)."""
    path = config["kinetics"]["epitope_db"]
    return [path] if path else []


def epitope_outputs():
    """The epitope tables when kinetics.epitope_db is set."""
    if not config["kinetics"]["epitope_db"]:
        return []
    return ["results/tables/epitope_clones.tsv", "results/tables/epitope_products.tsv"]


def epitope_db_tables_kwargs():
    """Keyword arguments of `tl.epitopes.epitope_db_tables`: kinetics.epitope_db and the
    primary timepoint."""
    return canonical(
        {
            "epitope_db": config["kinetics"]["epitope_db"],
            "primary_timepoint": config["primary_timepoint"],
        }
    )


def import_cells_inputs(wildcards):
    """The authors' cell table and the label map (config published); none when the run
    starts from Cell Ranger outputs (rule annotate then writes the cells table)."""
    if not PUBLISHED:
        return {}
    cfg = config["published"]
    return {
        "cells": _config_path(cfg["cells"]),
        "label_map": _config_path(cfg["label_map"]),
        "vdj": [SAMPLES.loc[s, "vdj"] for s in published_vdj_samples()],
    }


def sample_features_inputs(wildcards):
    """The cells table, and the repertoire, kinetics and protein tables unless the cells
    come from a published table (there: no kinetics nor ADT; the repertoire where libraries
    give contigs; our calls instead of the authors' with published.features_from: ours).
    """
    inputs = {"cells": "results/tables/cells.tsv.gz"}
    if PUBLISHED_ANNOTATE and config["published"]["features_from"] == "ours":
        inputs["cells"] = "results/tables/published_own_cells.tsv.gz"
    if PUBLISHED:
        inputs["imported"] = "results/tables/import_samples.tsv"
        if published_vdj_samples():
            inputs["repertoire"] = "results/tables/repertoire_samples.tsv"
    else:
        inputs["repertoire"] = "results/tables/repertoire_samples.tsv"
        inputs["kinetics"] = "results/tables/kinetics_patients.tsv"
        inputs["protein"] = "results/tables/protein_cells.tsv.gz"
    return inputs


def warnings_inputs(wildcards):
    """The warnings files that rule warnings gathers (the per-library load jobs, the merge,
    the protein step, the QC table); on the published entry point, those of rule
    import_cells."""
    if PUBLISHED:
        return {"load": [], "merge": "results/import/warnings.tsv"}
    return {
        "load": cohort_files("results/load/{sample}.warnings.tsv"),
        "merge": "results/integrate/merge_warnings.tsv",
        "kinetics": "results/kinetics/warnings.tsv",
        "protein": "results/protein/warnings.tsv",
        "qc_samples": "results/tables/qc_samples.tsv",
    }


def overview_inputs(wildcards):
    """The overview's tables: per-library cells (QC table, or the import summary on the
    published entry point), association, clinical, warnings (and annotation's), the
    sample features (patients by timepoint) and the feature dictionary (labels)."""
    inputs = {
        "association": "results/tables/association.tsv",
        "clinical": clinical_table(),
        "warnings": "results/tables/warnings.tsv",
        "features": "results/tables/sample_features.tsv",
        "dictionary": features_catalogue_path(),
    }
    if PUBLISHED:
        inputs["qc_samples"] = "results/tables/import_samples.tsv"
        if PUBLISHED_ANNOTATE:
            inputs["published_agreement"] = "results/tables/published_agreement.tsv"
    else:
        inputs["qc_samples"] = "results/tables/qc_samples.tsv"
        inputs["annotate_warnings"] = "results/annotate/warnings.tsv"
    return inputs


def entry_point():
    """Which entry point the run uses, in words (the overview says it)."""
    if PUBLISHED:
        cfg = config["published"]
        return (
            f"published cell table {shown_path(cfg['cells'])} (the authors' labels of "
            f"column '{cfg['label_column']}', mapped by {shown_path(cfg['label_map'])})"
        )
    return ENTRY_CELL_RANGER


def kinetics_figures_kwargs():
    """Keyword arguments of `pl.kinetics.kinetics_figures` besides the paths: the response
    of each patient, the responder codes, the blood compartment, the CAR-sorted patterns
    and kinetics.alpha."""
    return canonical(
        {
            "response": patient_response(),
            "responders": list(config["responders"]),
            "blood_compartment": config["associate"]["blood_compartment"],
            "car_sorted_patterns": list(config["annotate"]["car_sorted_patterns"]),
            "alpha": config["kinetics"]["alpha"],
        }
    )


def cohort_clonotypes_kwargs():
    """Keyword arguments of `tl.clonotypes.cohort_clonotypes`: the clonotype definition
    and clusters of config['clonotypes'], and the cohort's samples (the order of the
    rule's h5mu inputs). Not the repertoire or plot keys of config['clonotypes']."""
    cfg = config["clonotypes"]
    keys = ["receptor_arms", "dual_ir", "sequence", "metric", "cutoff", "clusters"]
    kwargs = {k: cfg[k] for k in keys}
    kwargs["samples"] = list(COHORT_SAMPLES)
    return canonical(kwargs)


def repertoire_tables_kwargs():
    """Keyword arguments of `tl.repertoire.repertoire_tables`: the rarefaction, bootstrap
    and clone-state keys of config['clonotypes'], the primary timepoint and the seed."""
    cfg = config["clonotypes"]
    keys = [
        "rarefaction_depth",
        "rarefaction_min_cells",
        "n_bootstrap",
        "expanded_min_size",
    ]
    kwargs = {k: cfg[k] for k in keys}
    kwargs["primary_timepoint"] = config["primary_timepoint"]
    kwargs["seed"] = seed()
    return canonical(kwargs)


def clonotype_figures_kwargs():
    """Keyword arguments of `pl.clonotypes.clonotype_figures`: the response of each patient
    in a response group (clinical table), the responder codes and
    clonotypes.top_clones_alluvial."""
    return canonical(
        {
            "response": patient_response(),
            "responders": list(config["responders"]),
            "top_clones_alluvial": config["clonotypes"]["top_clones_alluvial"],
        }
    )


def patient_response():
    """patient -> response code (from the clinical table), for the patients of a response
    group: codes of responders or non_responders that are not in associate.exclude_responses
    (patients with NA or an excluded code are drawn as 'other')."""
    grouped = set(config["responders"]) | set(config["non_responders"])
    grouped -= set(config["associate"]["exclude_responses"])
    return {str(p): str(r) for p, r in CLINICAL["response"].items() if r in grouped}


def annotate_kwargs():
    """Config keyword arguments of `tl.annotate.annotate`, rule annotate - the annotate
    settings but the signature file (an input), the CAR features, and the kNN size
    (integrate.n_neighbors) and seed of each library's own graph (the lineage and
    checkpoint-receptor calls pool over it)."""
    cfg = config["annotate"]
    keys = [
        "min_state_score",
        "min_confidence_margin",
        "cluster_consensus",
        "car_method",
        "car_min_umis",
        "car_fdr",
        "car_population_alpha",
        "car_sorted_patterns",
        "car_sorted_prior",
        "clone_aware",
        "smoothing",
        "down_weight",
        "sd_floor",
        "celltypist_model",
    ]
    return canonical(
        {
            **{k: cfg[k] for k in keys},
            "car_features": config["car_features"],
            "n_neighbors": config["integrate"]["n_neighbors"],
            "seed": seed(),
        }
    )


def protein_gex_inputs():
    """The GEX inputs of the cohort's libraries, in the order of COHORT_SAMPLES (rule
    protein looks for the raw matrix beside each)."""
    return [_project_path(SAMPLES.loc[s, "gex"]) for s in COHORT_SAMPLES]


def protein_alias_table_path():
    """The ADT alias table (user file or the bundled one)."""
    return _resource_path(config["protein"]["alias_table"])


def protein_gates_path():
    """The protein memory gates (user file or the bundled one)."""
    return _resource_path(config["protein"]["gates"])


def annotate_protein_kwargs():
    """Config keyword arguments of `tl.annotate.protein_step.annotate_protein`, rule
    protein - the protein settings but the alias table and gates (inputs)."""
    cfg = config["protein"]
    keys = [
        "extra_aliases",
        "car_adt",
        "min_total_counts",
        "min_detected",
        "max_isotype_fraction",
        "pseudocount",
        "min_empty_droplets",
        "empty_log10_range",
        "car_prior",
    ]
    return canonical({k: cfg[k] for k in keys})


def merge_samples_kwargs():
    """Keyword arguments of `pp.stream.merge_samples`, rule merge_samples - the cohort's samples
    (the order of the rule's h5mu inputs), load.gene_join, the merge/HVG/PCA keys of
    config['integrate'], the seed and dask.scheduler. Not the keys of the methods, the UMAP or
    the metrics.
    """
    cfg = config["integrate"]
    kwargs = {
        k: cfg[k]
        for k in ["batch_key", "n_top_genes", "n_pcs", "exclude_genes", "scale"]
    }
    kwargs["samples"] = list(COHORT_SAMPLES)
    kwargs["gene_join"] = config["load"]["gene_join"]
    kwargs["seed"] = seed()
    kwargs["dask_scheduler"] = config["dask"]["scheduler"]
    return canonical(kwargs)


def integrate_method_kwargs(wildcards):
    """Keyword arguments of `tl.integrate.integrate_method` for one method: the graph and
    Leiden keys of config['integrate'], `embed` (Leiden only for the method used
    downstream; the others are compared by the metrics, which need their graph alone), the
    method's own section (e.g. integrate.harmony; none for a method without settings) as
    `method_params`, and the seed. Not the keys of the merge step, the UMAP or the metrics.
    """
    from cartcohort.tl.integrate import METHODS

    cfg = config["integrate"]
    method = METHODS[wildcards.method]
    kwargs = {k: cfg[k] for k in ["batch_key", "n_neighbors", "leiden_resolutions"]}
    kwargs["embed"] = method.name == INTEGRATION_USED
    kwargs["method_params"] = cfg[method.name] if method.configurable else {}
    kwargs["seed"] = seed()
    return canonical(kwargs)


def umap_layout_kwargs():
    """Keyword arguments of `tl.integrate.umap_layout`, rule umap - the UMAP keys of
    config['integrate'] and the seed."""
    cfg = config["integrate"]
    kwargs = {k: cfg[k] for k in ["umap_min_dist", "umap_n_epochs"]}
    kwargs["seed"] = seed()
    return canonical(kwargs)


def score_methods_kwargs():
    """Keyword arguments of `tl.integrate.score_methods`, rule integration_metrics -
    integrate.metrics, the batch and label keys, the neighbours of the subset's graph, the
    Leiden resolution of the reference label (first of integrate.leiden_resolutions) and
    the seed. Not the UMAP keys nor those of the merge step or the methods."""
    cfg = config["integrate"]
    kwargs = {k: cfg[k] for k in ["batch_key", "label_key", "n_neighbors"]}
    kwargs.update(cfg["metrics"])
    kwargs["reference_resolution"] = cfg["leiden_resolutions"][0]
    kwargs["seed"] = seed()
    return canonical(kwargs)


def score_final_states_kwargs():
    """Keyword arguments of `tl.integrate.score_final_states`, rule
    integration_metrics_states - the first pass's keys (integrate.metrics, the batch key,
    the neighbours of the subset's graph, the seed), so both passes score the same cells;
    not the label key (the label is the final cell state) nor the reference's Leiden
    resolution."""
    cfg = config["integrate"]
    kwargs = {k: cfg[k] for k in ["batch_key", "n_neighbors"]}
    kwargs.update(cfg["metrics"])
    kwargs["seed"] = seed()
    return canonical(kwargs)


def integration_umap_kwargs():
    """Keyword arguments of `pl.integrate.integration_umap`, rule plot_integration - the
    method used downstream (integrate.use) and what its graph must be: the method's own
    graph (bbknn) or a kNN graph of its corrected embedding, exact up to
    `exact_knn_max_cells` cells. The caption renders them; the figure checks them against
    the graph actually built and names it in its title."""
    from cartcohort.tl.integrate import EXACT_KNN_MAX_CELLS, METHODS

    return canonical(
        {
            "seed": seed(),
            "method": INTEGRATION_USED,
            "corrects_graph": METHODS[INTEGRATION_USED].corrects_graph,
            "exact_knn_max_cells": EXACT_KNN_MAX_CELLS,
        }
    )


def integration_metrics_inputs(wildcards):
    """Every method's h5ad; plus cells.tsv.gz when integrate.label_key names an
    annotation column (e.g. `state`) used as the first pass's bio-conservation label
    (the second pass, rule integration_metrics_states, always scores the final states).
    """
    inputs = {
        "h5ad": expand("results/integrate/{method}.h5ad", method=INTEGRATION_METHODS)
    }
    if config["integrate"]["label_key"]:
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
    "qc_sample": (1000, 21.0, 5, 10),
    "merge_samples": (1000, 0.65, 10, 3),
    "integrate": (1000, 2.0, 10, 8),
    "integration_metrics": (2500, 1.5, 10, 12),
    # the same work as the first pass, plus cells.tsv.gz (not yet benchmarked on its own)
    "integration_metrics_states": (2500, 1.5, 10, 12),
    "plot_integration": (1000, 1.0, 5, 2),
    "umap": (1000, 12.0, 10, 8),
    "cohort": (1000, 3.0, 10, 3),
    # the obs of the h5mu only (the matrix is copied inside HDF5); the browser holds the
    # h5ad's matrix a few times over (demo: 0.7 GB for a 27 MB h5ad)
    "cohort_h5ad": (1000, 1.0, 5, 3),
    "cell_browser": (1000, 30.0, 10, 20),
    "clonotypes": (1000, 2.0, 10, 4),
    "annotate": (1000, 3.0, 10, 3),
    # not yet benchmarked: the ADT matrices (cells x antibodies) and the RNA calls
    "protein": (1000, 3.0, 10, 3),
    "plot_annotation": (1000, 6.0, 5, 2),
    "pseudobulk_de": (1000, 5.0, 10, 3),
    "repertoire": (1000, 4.0, 5, 20),
    "kinetics": (1000, 4.0, 5, 20),
    "plot_kinetics": (1000, 2.0, 5, 10),
    "epitopes": (2000, 4.0, 10, 20),
    "plot_clonotypes": (1000, 2.0, 5, 10),
    "load_summary": (500, 2.0, 5, 10),
    "qc_summary": (500, 2.0, 5, 10),
    "plot_qc": (1000, 0.5, 5, 10),
    "sample_features": (1000, 4.0, 5, 20),
    "associate": (1000, 4.0, 10, 20),
    "scorecards": (1000, 4.0, 5, 10),
    "plot_association": (1000, 4.0, 5, 10),
    "plot_time_survival": (1000, 4.0, 5, 10),
    # not yet benchmarked: a pass over the authors' cell table
    "import_cells": (1000, 4.0, 5, 10),
    "response_groups": (500, 2.0, 5, 10),
    # not yet benchmarked: the cohort's merged.h5ad dominates (reference); one library
    # plus the frozen model (score_product)
    "reference": (1000, 3.0, 5, 5),
    "score_product": (2000, 10.0, 5, 10),
    "score_products": (500, 2.0, 5, 10),
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


def input_mb(input):
    """Size of a job's input files in MB (files not there yet count 0).

    A plain `os.stat` per file: Snakemake's `input.size_mb` goes through its storage
    layer, one event loop per call, which made the resource functions most of a dry
    run's time on 1,000 libraries."""
    total = 0
    for f in input:
        try:
            total += os.stat(f).st_size
        except OSError:
            pass
    return total / 1024**2


def mem_mb(rule):
    """Resource function: memory of `rule` from its input size (RESOURCE_MODEL)."""
    fixed, per_mb, _, _ = RESOURCE_MODEL[rule]

    def _mem_mb(wildcards, input, attempt):
        need = int((fixed + per_mb * input_mb(input)) * (1.5 ** (attempt - 1)))
        # with --resources mem_mb=N (the machine's memory), a job predicted to need more
        # than N gets N and runs alone, rather than the run being refused
        return min(need, MAX_MEM_MB) if MAX_MEM_MB else need

    return _mem_mb


def runtime(rule):
    """Resource function: run time (minutes) of `rule` from its input size."""
    _, _, fixed, per_gb = RESOURCE_MODEL[rule]

    def _runtime(wildcards, input, attempt):
        return int(fixed + per_gb * input_mb(input) / 1024) * attempt

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
        "results/figures/association_forest_exploratory.png",
        "results/figures/association_volcano.png",
        "results/figures/longitudinal_trajectories",
        "results/figures/survival_km",
        "results/figures/scorecards_heatmap.png",
        "results/figures/integration_umap.png",
        "results/figures/integration_metrics.png",
        "results/figures/annotation_umap_state.png",
        "results/figures/annotation_umap_lineage.png",
        "results/figures/annotation_umap_car.png",
        "results/figures/annotation_state_fractions.png",
        "results/figures/annotation_dotplot.png",
        "results/figures/annotation_library_calls.png",
        "results/figures/clonal_expansion.png",
        "results/figures/rarefied_diversity.png",
        "results/figures/top_clones_alluvial.png",
        "results/figures/car_kinetics.png",
        "results/figures/clone_fate.png",
        "results/figures/clone_expansion_volcano",
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
    if PUBLISHED:
        notes["Cell Ranger steps"] = (
            "published entry point: the authors' cells and labels are used; QC, "
            "integration, pseudobulk DE and the frozen reference need the Cell Ranger "
            "outputs and do not run"
            + (
                ""
                if published_vdj_samples() or config["published"]["clone_column"]
                else "; no library gives TCR contigs (sheet vdj) nor the table clonotypes"
            )
            + (
                "; our annotation runs on the object's counts beside the authors' labels "
                + (
                    "(the features use our calls: published.features_from ours)"
                    if config["published"]["features_from"] == "ours"
                    else "(the features use the authors' mapped labels)"
                )
                if PUBLISHED_ANNOTATE
                else "; our annotation does not run (published.annotate false)"
            )
        )
    if not config["annotate"]["celltypist_model"]:
        notes["celltypist"] = (
            "no celltypist model configured (annotate.celltypist_model)"
        )
    return notes


def provenance_inputs():
    """Label -> path of every user input file hashed into provenance.json."""
    files = {"samples_sheet": config["samples"], "clinical_table": config["clinical"]}
    if PUBLISHED:
        files["published_cells"] = _config_path(config["published"]["cells"])
        files["label_map"] = _config_path(config["published"]["label_map"])
    for sample in SAMPLES.index:
        if SAMPLES.loc[sample].get("gex", ""):
            files[f"{sample}.gex"] = SAMPLES.loc[sample, "gex"]
        if SAMPLES.loc[sample, "vdj"]:
            files[f"{sample}.vdj"] = SAMPLES.loc[sample, "vdj"]
    files["signatures"] = signatures_path()
    return files


def record_versions_kwargs(step):
    """Keyword arguments of `report.record_versions` for one step: its conda env file
    (no config: the versions are read inside that env)."""
    return canonical({"env_file": os.path.join(WORKFLOW_DIR, "envs", f"{step}.yaml")})


def provenance_record_kwargs():
    """Keyword arguments of `report.provenance_record`: the resolved config (recorded
    whole, so any config change rewrites the record), every input file hashed into it,
    the steps whose versions it gathers (order of the rule's `versions` input) and the
    workflow folder (for the git commit)."""
    return canonical(
        {
            "config": config,
            "input_files": provenance_inputs(),
            "steps": STEPS,
            "workflow_dir": WORKFLOW_DIR,
        }
    )


def render_provenance_html_kwargs():
    """Keyword arguments of `report.render_provenance_html`: the workflow order of the
    steps (columns of the software table)."""
    return canonical({"step_order": STEPS})


def collect_warnings_kwargs():
    """Keyword arguments of `report.collect_warnings`, rule warnings - the warning rows
    found when the sheets were read (INPUT_WARNINGS of sheets.prepare_inputs), and with
    associate.unit library the row that says libraries are tested as replicates."""
    rows = list(INPUT_WARNINGS)
    if config["associate"]["unit"] == "library":
        rows.append(
            sheets.warning_row(
                step="associate",
                check="libraries_as_replicates",
                count=len(COHORT_SAMPLES),
                detail=f"associate.unit = library: {LIBRARY_UNIT_LABEL}; "
                "association_libraries.tsv tests every library as an independent "
                "observation, beside the patient-level association.tsv",
                action="Use it only to reproduce a paper's own test; the patient-level "
                "association (associate.unit: patient) is the one to report",
            )
        )
    return canonical({"parse_warnings": rows})


def overview_page_kwargs():
    """Keyword arguments of `report.overview_page`: samples excluded in the config and
    the analyses skipped for reasons known from the config alone."""
    return canonical(
        {
            "excluded_by_config": sorted(set(config["exclude_samples"])),
            "extra_notes": overview_notes(),
            "entry_point": entry_point(),
            "unit_label": (
                LIBRARY_UNIT_LABEL if config["associate"]["unit"] == "library" else ""
            ),
        }
    )
