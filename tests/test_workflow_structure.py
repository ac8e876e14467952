"""The workflow's declarations as Snakemake itself sees them (tests/_snakemake_dump.py: the
parsed rule objects and Snakemake's own compilation of the rule files): every rule runs a
script with a log, a benchmark and a step's conda env, its directives in one order; env
files pin exactly the versions of the lock."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from _snakemake_dump import demo_dump
from cartcohort.report import env_packages
from conftest import REPO

STEP_ENVS = ["load", "qc", "integrate", "clonotypes", "annotate", "associate", "report"]
# the directive order of every rule (a rule may leave any of them out)
DIRECTIVE_ORDER = ["name", "input", "output", "log", "benchmark", "priority", "conda", "threads",
                   "resources", "params", "script"]


@pytest.fixture(scope="module")
def rules(tmp_path_factory, demo_dir) -> dict:
    return demo_dump(tmp_path_factory)["rules"]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version.strip()
    return pins


def test_rules_found(rules):
    for expected in ("load_sample", "qc_sample", "integrate", "clonotypes", "annotate",
                     "sample_features", "associate", "provenance", "all"):
        assert expected in rules
    assert {f"versions_{step}" for step in STEP_ENVS} <= set(rules)


def test_rule_declares_log_benchmark_conda_script(rules):
    for name, rule in rules.items():
        if name in ("all", "tables"):  # target rules only collect
            continue
        assert rule["log"], f"rule {name} lacks log:"
        assert rule["benchmark"], f"rule {name} lacks benchmark:"
        assert rule["conda_env"], f"rule {name} lacks conda:"
        assert rule["script"], f"rule {name} lacks script:"
        assert rule["shellcmd"] is None and not rule["is_run"], (
            f"rule {name}: use script: so sample ids and paths never reach a shell")


def test_directives_in_one_order(rules):
    for name, rule in rules.items():
        if name in ("all", "tables"):  # target rules only collect
            continue
        written = rule["directives"]
        assert written, f"rule {name}: not found in Snakemake's compilation"
        unknown = [d for d in written if d not in DIRECTIVE_ORDER]
        assert not unknown, f"rule {name}: directives {unknown} not in {DIRECTIVE_ORDER}"
        assert written == sorted(written, key=DIRECTIVE_ORDER.index), (
            f"rule {name}: directives {written}; the order is {DIRECTIVE_ORDER}")


def test_every_rule_env_exists(rules):
    for name, rule in rules.items():
        if name in ("all", "tables"):  # target rules only collect
            continue
        env = os.path.normpath(os.path.join(rule["basedir"], rule["conda_env"]))
        assert os.path.dirname(env) == str(REPO / "envs"), f"rule {name}: env {env}"
        step = os.path.basename(env).removesuffix(".yaml")
        assert step in STEP_ENVS, f"rule {name} uses an unknown env {step}"
        assert os.path.exists(env), f"rule {name}: {env} does not exist"


def test_every_script_exists(rules):
    for name, rule in rules.items():
        if rule["script"]:
            path = os.path.normpath(os.path.join(rule["basedir"], rule["script"]))
            assert os.path.exists(path), f"rule {name}: script {path} does not exist"


@pytest.mark.parametrize("step", STEP_ENVS)
def test_env_pins_equal_lock(step):
    env = REPO / "envs" / f"{step}.yaml"
    pins = env_packages(env)
    assert pins, f"{env} pins nothing"
    lock = _lock()
    for name, version in pins.items():
        key = re.sub(r"[-_.]+", "-", name.lower())
        assert key in lock, f"{env}: {name} is not in requirements.lock"
        assert lock[key] == version, f"{env}: {name}=={version} but the lock has {lock[key]}"


# --------------------------------------------------------------- contract tables vs rules
# (here rather than in test_tables.py, which runs in the load env without Snakemake)


def _rule_outputs(rules: dict) -> dict[str, set[str]]:
    """rule name -> the results/ TSV paths among its outputs, as Snakemake parsed them
    (patterns without wildcard constraints; outputs expanded at parse time, e.g. over the
    samples, as the expanded paths)."""
    return {
        name: {out["pattern"] for out in rule["output"]
               if out["pattern"] and re.fullmatch(r"results/.+\.tsv(\.gz)?", out["pattern"])}
        for name, rule in rules.items()
    }


def _matches(pattern: str, path: str) -> bool:
    """`path` is the registry `pattern` itself or the pattern with its wildcards filled in."""
    regex = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(pattern))
    return re.fullmatch(regex, path) is not None


def test_registry_matches_the_rules(workflow_dump):
    """Every registered table is an output of its rule, and every TSV the rules
    write is registered (under the rule that writes it)."""
    from cartcohort import tables

    outputs = _rule_outputs(workflow_dump["rules"])
    assert any(outputs.values()), "no rule outputs a results/ TSV"
    for spec in tables.TABLES.values():
        written = outputs.get(spec.rule, set())
        assert any(_matches(spec.path, path) for path in written), (
            f"table {spec.name}: {spec.path} is not an output of rule {spec.rule} "
            f"({sorted(written)})")
    unregistered = sorted(
        f"rule {rule}: {path}" for rule, written in outputs.items() for path in written
        if not any(rule in (spec.rule, *spec.also_by) and _matches(spec.path, path)
                   for spec in tables.TABLES.values()))
    assert not unregistered, "TSVs written but not in tables.TABLES:\n" + "\n".join(unregistered)


def test_snakemake_lint_is_clean():
    """`snakemake --lint` (run by `make lint` in CI) finds nothing: e.g. a docstring in
    common.smk with `rule <name>:` on one line reads to the linter as a rule definition."""
    from conftest import SNAKEMAKE

    proc = subprocess.run([str(SNAKEMAKE), "--lint"], cwd=REPO, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in out, out[-3000:]
