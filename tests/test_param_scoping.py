"""Each rule's params hold only the settings its library call uses, so changing a setting
re-runs only the rules that use it.

Snakemake decides re-runs by params equality: with the default ``--rerun-triggers``
(which include ``params``), a job whose outputs exist re-runs when the params recorded in
``.snakemake/metadata`` for them differ from the params it would get now. So a rule whose
evaluated params are equal under two configs is not re-run when a user switches between
them. Instead of a completed run (too expensive here), the tests compare the evaluated
params of every rule (tests/_snakemake_dump.py, through Snakemake) between the demo config
and the demo config with one setting changed.
"""

from __future__ import annotations

import pytest

from _snakemake_dump import dump_workflow

# (section, key, new value, rule that must NOT re-run, rule that must re-run)
CASES = [
    ("clonotypes", "top_clones_alluvial", 3, "repertoire", "plot_clonotypes"),
    ("integrate", "umap_min_dist", 0.5, "integration_metrics", "umap"),
    ("associate", "collapse_rho", 0.8, "pseudobulk_de", "associate"),
]


def _params(dump: dict, rule: str) -> list:
    return dump["rules"][rule]["params"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, demo_dir):
    dump, _ = dump_workflow(tmp_path_factory.mktemp("scoping"), name="baseline")
    return dump


@pytest.mark.parametrize("section,key,value,unaffected,affected", CASES,
                         ids=[f"{c[0]}.{c[1]}" for c in CASES])
def test_setting_changes_only_the_params_that_use_it(tmp_path, baseline, section, key, value,
                                                     unaffected, affected):
    assert baseline["config"][section][key] != value
    changed, _ = dump_workflow(tmp_path, {section: {key: value}}, name="changed")
    assert changed["config"][section][key] == value
    assert _params(changed, unaffected) == _params(baseline, unaffected), (
        f"{section}.{key} changes the params of rule {unaffected}: it would re-run")
    # the test can see a change: the rule that uses the setting does re-run
    assert _params(changed, affected) != _params(baseline, affected), (
        f"{section}.{key} does not reach rule {affected}")
