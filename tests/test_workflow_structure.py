"""Static checks of the workflow's declarations: every rule is a declaration with a log,
a benchmark and a conda env; env files pin exactly the versions of the lock."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cartcohort.provenance import env_packages
from conftest import REPO

RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk")) + [REPO / "Snakefile"]
STEP_ENVS = ["load", "qc", "integrate", "clonotypes", "annotate", "associate", "report"]


def _rule_blocks(path: Path) -> list[tuple[str, str]]:
    """(name, body) of every rule in a Snakemake file (indentation-based)."""
    lines = path.read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)rule\s*(\w*)\s*:", line)
        if not m:
            continue
        indent = len(m.group(1))
        body = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt)
        name = m.group(2) or re.search(r"name:\s*\n?\s*f?[\"']([^\"']+)", "\n".join(body)).group(1)
        blocks.append((name, "\n".join(body)))
    return blocks


ALL_RULES = [(p.name, n, b) for p in RULE_FILES for n, b in _rule_blocks(p)]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version.strip()
    return pins


def test_rules_found():
    names = {n for _, n, _ in ALL_RULES}
    for expected in ("load_sample", "qc_sample", "integrate", "clonotypes", "annotate",
                     "sample_features", "associate", "provenance", "all"):
        assert expected in names


@pytest.mark.parametrize("file,name,body", [r for r in ALL_RULES if r[1] != "all"],
                         ids=[f"{r[0]}:{r[1]}" for r in ALL_RULES if r[1] != "all"])
def test_rule_declares_log_benchmark_conda_script(file, name, body):
    for directive in ("log:", "benchmark:", "conda:", "script:"):
        assert directive in body, f"rule {name} in {file} lacks {directive}"
    assert "shell:" not in body and "run:" not in body, (
        f"rule {name}: use script: so sample ids and paths never reach a shell"
    )


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


def test_every_rule_env_exists():
    for file, name, body in ALL_RULES:
        if name == "all":
            continue
        m = re.search(r"conda:\s*\n\s*f?\"\.\./\.\./envs/([\w{}_]+)\.yaml\"", body)
        assert m, f"rule {name}: conda env path not of the form ../../envs/<step>.yaml"
        step = m.group(1)
        if "{" not in step:
            assert step in STEP_ENVS, f"rule {name} uses an unknown env {step}"
