"""No setting is ever ignored: every key the schema declares changes what the workflow does.

Snakemake re-runs a rule when its params change, and every config-derived argument of a
library call reaches it through that rule's one param (`<function>=<function>_kwargs`,
tests/test_params_contract.py). So a setting is used when changing it changes the params
of at least one rule. One dry run of a wrapper Snakefile includes the real workflow and,
at the end of parsing, changes each declared setting in turn to another valid value
(in the global `config` the param builders read) and re-evaluates every builder.

A few settings act while the DAG is built instead (which files are read, which samples
and methods exist, what is refused): each is listed in PARSE_TIME with where it acts,
and a dry run with a changed value must give another job list or refuse to start.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from _snakemake_dump import DEMO, demo_project
from conftest import REPO, run_snakemake

# setting -> where it acts while Snakemake builds the DAG (not through a rule's params)
PARSE_TIME = {
    "samples": "the sample sheet read by sheets.prepare_inputs",
    "clinical": "the clinical table read by sheets.prepare_inputs",
    "exclude_samples": "COHORT_SAMPLES: the cohort-level rules' inputs",
    "check_input_files": "sheets.prepare_inputs: whether input files are opened at parse time",
    "non_responders": "sheets.prepare_inputs: response codes accepted in the clinical table",
    "load.min_tcr_gex_overlap": "sheets.prepare_inputs: the TCR/GEX barcode overlap check",
    "integrate.methods": "INTEGRATION_METHODS: one integrate job per method",
    "integrate.use": "INTEGRATION_USED: the method whose graph annotation and UMAP use",
    "integrate.label_key": "integration_metrics_inputs: cells.tsv.gz becomes an input",
    "annotate.signatures": "signatures_path(): an input file of rule annotate",
    "protein.alias_table": "protein_alias_table_path(): an input file of rule protein",
    "protein.gates": "protein_gates_path(): an input file of rule protein",
    "associate.primary_panel": "primary_panel_path(): an input file of rules associate, "
                               "scorecards and plot_time_survival",
    "new_samples": "SCORING: the new products' sheet replaces the cohort's (score_products)",
    "scorecards.features": "features_catalogue_path(): an input file of rule score_product",
    "published.cells": "PUBLISHED: rule import_cells replaces the Cell Ranger steps; an input "
                       "file of rule import_cells",
    "published.label_map": "import_cells_inputs(): an input file of rule import_cells",
    "published.annotate": "PUBLISHED_ANNOTATE: rule published_annotation is a target of the "
                          "published entry point",
    "published.features_from": "sample_features_inputs(): our calls' cells table becomes the "
                               "input of rule sample_features",
}
# rules that record the whole config (provenance) rather than use it
RECORDERS = {"provenance"}
# free-form maps: a changed entry for one demo library / compartment / method
MAP_VALUES = {
    "qc.per_sample": {"P01_IP": {"n_mads": 4}},
    "qc.doublets.per_compartment": {"product": {"expected_rate": 0.08}},
    "integrate.harmony": {"theta": 3},
    "integrate.scanorama": {"knn": 25},
    "integrate.scvi": {"n_latent": 20},
    "protein.extra_aliases": {"CCR7": ["CCR7-TotalSeqC-hu"]},
}

WRAPPER = '''
include: {snakefile!r}


import copy as _copy
import inspect as _inspect
import json as _json

from snakemake.iocontainers import Wildcards as _Wildcards

from cartcohort.tl.integrate import METHODS as _METHODS


def _evaluate_all():
    out = {{}}
    for _rule in workflow.rules:
        for _name, _ in _rule.params.items():
            _builder = globals().get(_name + "_kwargs")
            if _builder is None:
                continue
            if _inspect.signature(_builder).parameters:
                for _s in SAMPLES.index:
                    for _m in _METHODS:  # a method's section acts when it runs
                        _w = _Wildcards(fromdict={{"sample": _s, "method": _m, "step": "load"}})
                        out[f"{{_rule.name}}|{{_s}}|{{_m}}"] = repr(_builder(_w))
            else:
                out[_rule.name] = repr(_builder())
    return out


_changes = _json.load(open({changes!r}))
_base = _evaluate_all()
_result = {{}}
for _key, _value in _changes.items():
    _saved = _copy.deepcopy(config)
    _node = config
    _parts = _key.split(".")
    for _p in _parts[:-1]:
        _node = _node[_p]
    _node[_parts[-1]] = _value
    _after = _evaluate_all()
    _result[_key] = sorted(k.split("|")[0] for k in _base if _after.get(k) != _base[k])
    config.clear()
    config.update(_saved)
with open({out!r}, "w") as _fh:
    _json.dump(_result, _fh)
'''


def _schema() -> dict:
    return yaml.safe_load((REPO / "config" / "schemas" / "config.schema.yaml").read_text())


def _leaves(schema: dict, prefix: str = "") -> dict[str, dict]:
    """dotted key -> subschema of every declared setting that is not a section."""
    out = {}
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if "properties" in sub and path not in MAP_VALUES:
            out.update(_leaves(sub, path + "."))
        else:
            out[path] = sub
    return out


def _other_value(key: str, sub: dict, current):
    """A valid value different from `current` (the demo config's value)."""
    if key in MAP_VALUES:
        return MAP_VALUES[key]
    if "$ref" in sub:
        sub = _schema()["$defs"][sub["$ref"].split("/")[-1]]
    if "enum" in sub:
        return next(v for v in sub["enum"] if v != current)
    if "type" not in sub:
        for option in sub.get("anyOf", []) + sub.get("oneOf", []):
            if option.get("enum") == [current]:
                continue
            return _other_value(key, option, current)
    types = sub.get("type")
    types = types if isinstance(types, list) else [types]
    if "boolean" in types:
        return not current
    if "array" in types:
        items = sub.get("items", {})
        if "enum" in items:
            return [v for v in items["enum"] if v not in (current or [])][:1] or items["enum"][:1]
        if items.get("type") in ("number", "integer"):
            return [x * 2 for x in current] if current else [0.7]
        return list(current or []) + ["CD4"]
    if "integer" in types:
        base = current if isinstance(current, int) else sub.get("minimum", 1)
        return base + 1 if sub.get("maximum") is None or base + 1 <= sub["maximum"] else base - 1
    if "number" in types:
        base = current if isinstance(current, (int, float)) else 0.5
        other = base * 0.9 if base else 0.05
        return other
    if "string" in types:
        return f"{current}x" if current else "x"
    raise AssertionError(f"{key}: no rule to make another value of {sub}")


@pytest.fixture(scope="module")
def changed_rules(tmp_path_factory) -> dict[str, list[str]]:
    """setting -> the rules whose params change when the setting changes."""
    tmp = tmp_path_factory.mktemp("settings_used")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    schema = _schema()
    changes = {}
    for key, sub in _leaves(schema).items():
        if key in PARSE_TIME:
            continue
        node = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:  # not in config.yaml: the schema default
            node = sub.get("default")
        changes[key] = _other_value(key, sub, node)
    (tmp / "changes.json").write_text(json.dumps(changes))
    wrapper = tmp / "Snakefile"
    out = tmp / "result.json"
    wrapper.write_text(WRAPPER.format(snakefile=str(REPO / "Snakefile"),
                                      changes=str(tmp / "changes.json"), out=str(out)))
    project = demo_project(tmp)
    user = tmp / "demo.yaml"
    user.write_text(yaml.safe_dump({"samples": str(DEMO / "samples.tsv"),
                                    "clinical": str(DEMO / "clinical.tsv")}))
    run_snakemake(project, "all", "-n", "--configfile", str(user), snakefile=wrapper, cores=1)
    return {key: sorted(set(rules) - RECORDERS)
            for key, rules in json.loads(out.read_text()).items()}


def test_every_setting_changes_some_rule_or_the_dag(changed_rules):
    ignored = sorted(key for key, rules in changed_rules.items() if not rules)
    assert not ignored, (
        f"settings that change no rule's params (ignored by the workflow): {ignored}")
    assert set(changed_rules) | set(PARSE_TIME) == set(_leaves(_schema()))


def test_settings_of_a_method_not_run_are_refused(tmp_path):
    """integrate.scvi set while scvi is not among integrate.methods would be ignored:
    refused before any job, naming the key and the fix."""
    project = demo_project(tmp_path)
    user = tmp_path / "user.yaml"
    user.write_text(yaml.safe_dump({"samples": str(DEMO / "samples.tsv"),
                                    "clinical": str(DEMO / "clinical.tsv"),
                                    "integrate": {"scvi": {"n_latent": 20}}}))
    proc = run_snakemake(project, "-n", "--configfile", str(user), check=False, cores=1)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "integrate.scvi is set but scvi is not in integrate.methods" in out
    assert "Fix: add the method to integrate.methods" in out
    assert not (project / "results").exists()


def test_plot_and_umap_settings_stay_in_their_rules(changed_rules):
    assert changed_rules["clonotypes.top_clones_alluvial"] == ["plot_clonotypes"]
    # rule reference freezes the annotation settings new products are annotated with
    # (and rule published_annotation, our annotation of a published object's counts)
    assert changed_rules["annotate.smoothing"] == ["annotate", "published_annotation",
                                                   "reference"]
    assert "integration_metrics" not in changed_rules["integrate.umap_min_dist"]
    assert "pseudobulk_de" not in changed_rules["associate.collapse_rho"]


@pytest.mark.parametrize("key", sorted(PARSE_TIME))
def test_parse_time_settings_are_read_where_listed(key):
    """Each parse-time setting is read by the code named in PARSE_TIME."""
    leaf = key.split(".")[-1]
    sources = [REPO / "workflow" / "rules" / "common.smk",
               *sorted((REPO / "workflow" / "scripts" / "cartcohort" / "sheets").glob("*.py"))]
    assert any(f'"{leaf}"' in Path(p).read_text() for p in sources), (
        f"{key} ({PARSE_TIME[key]}) is read nowhere in common.smk or cartcohort.sheets")
