"""Each rule's params are exactly the config keyword arguments of the one library function
its entry script calls: one param, named after that function (and at most a `caption`
param for its report caption), whose keys are parameters of the function; where the function declares a default for one of them, that default is
the schema's (the params are evaluated through Snakemake with the schema defaults alone,
.test/config_minimal, see tests/_snakemake_dump.py; a kwarg that varies with the wildcards
is derived from them and not compared).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

from _snakemake_dump import minimal_dump

STEPS = ["load", "qc", "integrate", "clonotypes", "annotate", "associate", "report"]
# rule -> "module:function" its entry script calls with **snakemake.params.<function>;
# None: the rule has no config-derived arguments (and no params).
RULE_CALLS: dict[str, str | None] = {
    "load_sample": "cartcohort.io:load_sample",
    "load_summary": None,
    "qc_sample": "cartcohort.pp:run_sample_qc",
    "qc_summary": None,
    "plot_qc": None,
    "merge_samples": "cartcohort.pp.stream:merge_samples",
    "integrate": "cartcohort.tl.integrate:integrate_method",
    "umap": "cartcohort.tl.integrate:umap_layout",
    "integration_metrics": "cartcohort.tl.integrate:score_methods",
    "integration_metrics_states": "cartcohort.tl.integrate:score_final_states",
    "plot_integration": "cartcohort.pl.integrate:integration_umap",
    "clonotypes": "cartcohort.tl.clonotypes:cohort_clonotypes",
    "repertoire": "cartcohort.tl.repertoire:repertoire_tables",
    "kinetics": "cartcohort.tl.kinetics:kinetics_tables",
    "plot_kinetics": "cartcohort.pl.kinetics:kinetics_figures",
    "epitopes": "cartcohort.tl.epitopes:epitope_db_tables",
    "plot_clonotypes": "cartcohort.pl.clonotypes:clonotype_figures",
    "annotate": "cartcohort.tl.annotate:annotate",
    "protein": "cartcohort.tl.annotate.protein_step:annotate_protein",
    "cohort": None,
    "cohort_h5ad": None,
    "cell_browser": None,
    "plot_annotation": None,
    "import_cells": "cartcohort.published:import_published",
    "published_annotation": "cartcohort.published_annotate:published_annotation",
    "response_groups": "cartcohort.response_groups:apply_response_override",
    "sample_features": None,
    "associate": "cartcohort.stats:associate",
    "pseudobulk_de": "cartcohort.stats:pseudobulk_de",
    "scorecards": "cartcohort.scorecards:cohort_scorecards",
    "plot_association": None,
    "plot_time_survival": "cartcohort.pl.outcomes:time_survival_figures",
    "warnings": "cartcohort.report:collect_warnings",
    "overview": "cartcohort.report:overview_page",
    "provenance": "cartcohort.report:provenance_record",
    "provenance_page": "cartcohort.report:render_provenance_html",
    "reference": "cartcohort.reference:freeze_reference",
    "score_product": "cartcohort.reference:score_new_product",
    "score_products": None,
    **{f"versions_{step}": "cartcohort.report:record_versions" for step in STEPS},
}


@pytest.fixture(scope="module")
def rules(tmp_path_factory, demo_dir) -> dict:
    return minimal_dump(tmp_path_factory)["rules"]


def _function(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _plain(value: Any) -> Any:
    """A default as it reads in the params JSON (tuples are lists)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def test_every_rule_listed(rules):
    assert set(rules) - {"all", "tables"} == set(RULE_CALLS), (
        "RULE_CALLS must name the library call of every rule: "
        f"missing {sorted(set(rules) - {'all', 'tables'} - set(RULE_CALLS))}, "
        f"stale {sorted(set(RULE_CALLS) - set(rules))}")


@pytest.mark.parametrize("rule", sorted(RULE_CALLS))
def test_one_param_named_after_the_call(rules, rule):
    if rule not in rules:
        pytest.fail(f"rule {rule} is not in the workflow")
    target = RULE_CALLS[rule]
    names = rules[rule]["param_names"]
    if target is None:
        assert names == [], f"rule {rule}: params {names} but no library call is listed"
        return
    fn = _function(target)
    assert names == [fn.__name__], (
        f"rule {rule}: params {names}; expected one param `{fn.__name__}` ({target})")


@pytest.mark.parametrize("rule", sorted(r for r, t in RULE_CALLS.items() if t))
def test_param_keys_are_kwargs_with_schema_defaults(rules, rule):
    target = RULE_CALLS[rule]
    fn = _function(target)
    signature = inspect.signature(fn)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    evaluations = rules[rule]["params"]
    # a kwarg that differs between wildcards (e.g. `embed`: is {method} integrate.use?)
    # is derived from them, not a schema default
    by_wildcards = {key for key in evaluations[0]["params"].get(fn.__name__) or {}
                    if len({repr(e["params"][fn.__name__].get(key)) for e in evaluations}) > 1}
    for evaluated in evaluations:
        where = f"rule {rule} {evaluated['wildcards'] or ''}".rstrip()
        kwargs = evaluated["params"].get(fn.__name__)
        assert isinstance(kwargs, dict), f"{where}: param {fn.__name__} is {kwargs!r}, not a dict"
        unknown = sorted(set(kwargs) - set(signature.parameters))
        assert accepts_any or not unknown, f"{where}: {unknown} are not parameters of {target}"
        for key, value in kwargs.items():
            parameter = signature.parameters.get(key)
            if (parameter is None or parameter.default is inspect.Parameter.empty
                    or key in by_wildcards):
                continue
            default = _plain(parameter.default)
            if default is None and value in ({}, []):
                continue  # `None` = "not given", the config's empty map or list
            assert default == value, (
                f"{where}: {target}({key}={parameter.default!r}) but the schema default "
                f"gives {value!r}")
