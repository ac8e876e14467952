"""Static proof that every rule's conda env provides what its script imports.

For each rule of the workflow, as Snakemake itself parses it (the ``workflow_dump``
fixture, tests/_snakemake_dump.py; the ``versions_<step>`` rules that report.smk declares
in a loop over ``STEPS`` included), the entry script named by ``script:`` is parsed with
:mod:`ast`; every ``import``/``from … import`` (module level and inside functions,
classes, ``if``/``with`` blocks) is collected, and imports of the ``cartcohort`` library
(absolute or relative) are followed transitively, parent packages included. Each
third-party top-level module is mapped to its distribution with
``importlib.metadata.packages_distributions()`` of this interpreter (standard library:
``sys.stdlib_module_names``) and checked against the rule's env file
``envs/<step>.yaml`` (read with ``cartcohort.report.env_packages``); the checks run once per
step env, over every rule that uses it:

* ``test_env_provides_imports``: the distribution is pinned in the env or is a
  dependency (transitive ``Requires-Dist`` without extras, as installed here) of a pin;
* ``test_env_pins_direct_imports``: stricter, every distribution our own code imports is
  pinned in the env itself (so it cannot vanish when a dependency drops it).

Imports under ``if TYPE_CHECKING:`` are never executed and are skipped. Imports inside a
``try`` whose handlers catch ``ImportError``/``ModuleNotFoundError`` are optional features
(e.g. celltypist) that fail with their own message; they are listed by
``test_optional_imports_are_known`` but not required. Run-time imports by name
(``importlib.import_module(variable)``) cannot be seen statically.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement

from cartcohort.report import env_packages
from conftest import REPO

SCRIPTS_DIR = REPO / "workflow" / "scripts"
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}
# the step envs envs/<step>.yaml (= STEPS of common.smk, test_rules_parsed checks it)
STEP_ENVS = ["load", "qc", "integrate", "clonotypes", "annotate", "associate", "report"]
# optional features whose package is deliberately not in an env → config key enabling them
OPTIONAL_IMPORTS = {"celltypist": "annotate.celltypist_model"}


def _norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ------------------------------------------------------------------ rules of the workflow

@dataclass(frozen=True)
class RuleSpec:
    file: str
    name: str
    step: str
    script: Path

    @property
    def env_file(self) -> Path:
        return REPO / "envs" / f"{self.step}.yaml"


def rule_specs(rules: dict) -> list[RuleSpec]:
    """Every rule that runs a script, from Snakemake's parse of the workflow (the dump's
    ``rules``): its file, name, step env and entry script."""
    specs = []
    for name, rule in sorted(rules.items()):
        if rule["script"] is None:
            continue  # e.g. rule all
        assert rule["conda_env"], f"rule {name} has a script but no conda env"
        env = Path(os.path.normpath(os.path.join(rule["basedir"], rule["conda_env"])))
        assert env.parent == REPO / "envs" and env.suffix == ".yaml", (
            f"rule {name}: conda {rule['conda_env']!r} is not ../../envs/<step>.yaml")
        specs.append(RuleSpec(
            file=Path(rule["snakefile"]).name,
            name=name,
            step=env.stem,
            script=Path(rule["basedir"], rule["script"]).resolve(),
        ))
    return specs


@pytest.fixture(scope="module")
def rules(workflow_dump) -> list[RuleSpec]:
    return rule_specs(workflow_dump["rules"])


def _step_rules(rules: list[RuleSpec], step: str) -> list[RuleSpec]:
    found = [r for r in rules if r.step == step]
    assert found, f"no rule runs in envs/{step}.yaml"
    return found


# ------------------------------------------------------------------ import collection

@dataclass(frozen=True)
class Import:
    module: str        # absolute dotted name as imported
    file: Path         # file holding the import statement
    lineno: int
    in_function: bool  # inside a def/lambda: runs only when that function is called
    optional: bool     # inside try/except ImportError


@dataclass(frozen=True)
class Reach:
    imp: Import
    hops: tuple[str, ...]  # "file:line" of every library import leading to the file
    on_import: bool        # runs as soon as the entry script starts (all hops module level)

    def where(self, root: Path = SCRIPTS_DIR) -> str:
        last = (f"{self.imp.file.relative_to(root)}:{self.imp.lineno}"
                f"{' [in function]' if self.imp.in_function else ''}")
        when = "fails at start" if self.on_import else "fails when the function is called"
        return f"{' -> '.join(self.hops + (last,))} 'import {self.imp.module}' ({when})"


def _catches_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        if handler.type is None:
            return True
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(t, ast.Name) and t.id in IMPORT_ERRORS for t in types):
            return True
    return False


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@lru_cache(maxsize=None)
def _local_file(module: str, root: Path) -> Path | None:
    """Source file of a module of our own code below ``root`` (library or script), else None."""
    base = root.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _package_of(path: Path, root: Path) -> str | None:
    """Dotted package a file below ``root`` belongs to (a package's __init__: itself)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1]) or None


@lru_cache(maxsize=None)
def _imports_in(path: Path, root: Path) -> tuple[Import, ...]:
    """Every import statement of one file, with absolute module names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(path, root)
    found: list[Import] = []

    def visit(node: ast.AST, *, in_def: bool, optional: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, in_def=in_def, optional=optional)
            return
        if isinstance(node, ast.Try):
            guarded = optional or _catches_import_error(node)
            for child in node.body:
                visit(child, in_def=in_def, optional=guarded)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, in_def=in_def, optional=optional)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name, path, node.lineno, in_def, optional))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert package, f"{path}:{node.lineno}: relative import outside a package"
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                assert base, f"{path}:{node.lineno}: relative import beyond the top package"
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            found.append(Import(mod, path, node.lineno, in_def, optional))
            # `from pkg import name`: name may itself be a module of our own code
            for alias in node.names:
                if alias.name != "*" and _local_file(f"{mod}.{alias.name}", root):
                    found.append(Import(f"{mod}.{alias.name}", path, node.lineno, in_def,
                                        optional))
        inner = in_def or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, in_def=inner, optional=optional)

    visit(tree, in_def=False, optional=False)
    return tuple(found)


def _walk(script: Path, root: Path, *, module_level_only: bool) -> tuple[list[Reach], set[Path]]:
    reaches: list[Reach] = []
    seen: set[Path] = set()
    queue: list[tuple[Path, tuple[str, ...]]] = [(script, ())]
    while queue:
        path, hops = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        for imp in _imports_in(path, root):
            parts = imp.module.split(".")
            local = [_local_file(".".join(parts[:k]), root) for k in range(1, len(parts) + 1)]
            local = [f for f in local if f is not None]
            if not local:
                reaches.append(Reach(imp, hops, on_import=module_level_only
                                     and not imp.in_function))
                continue
            if imp.optional or (module_level_only and imp.in_function):
                continue
            hop = (f"{path.relative_to(root)}:{imp.lineno}"
                   f"{' [in function]' if imp.in_function else ''}")
            for f in local:  # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
                queue.append((f, hops + (hop,)))
    return reaches, seen


def collect_imports(script: Path, *, root: Path = SCRIPTS_DIR) -> tuple[list[Reach], list[Path]]:
    """Imports of non-local modules reachable from an entry script through our own code.

    Returns the reaches (each import statement once; ``on_import`` when it runs as soon as
    the script starts) and the local files visited.
    """
    eager, _ = _walk(script, root, module_level_only=True)
    every, files = _walk(script, root, module_level_only=False)
    first = {(r.imp.file, r.imp.lineno, r.imp.module): r for r in reversed(eager)}
    out = list(first.values())
    for r in every:
        key = (r.imp.file, r.imp.lineno, r.imp.module)
        if key not in first:
            first[key] = r
            out.append(r)
    return out, sorted(files)


# ------------------------------------------------------------------ distributions

@lru_cache(maxsize=1)
def _module_dists() -> dict[str, list[str]]:
    return {k: sorted({_norm(d) for d in v}) for k, v in md.packages_distributions().items()}


def dists_of(module: str) -> list[str]:
    """Distributions providing a top-level module ([] for the standard library)."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return []
    dists = _module_dists().get(top)
    if not dists:
        raise AssertionError(
            f"module '{top}' is not installed in {sys.prefix}, so its distribution is unknown; "
            "install it in the dev venv (and the lock) or remove the import")
    return dists


@lru_cache(maxsize=None)
def _requires(dist: str) -> tuple[str, ...]:
    """Dependencies (no extras; markers evaluated for this interpreter) of an installed dist."""
    try:
        reqs = md.distribution(dist).requires or []
    except md.PackageNotFoundError:
        raise AssertionError(f"{dist} is pinned but not installed in {sys.prefix}; cannot "
                             "compute its dependencies (rebuild the venv from the lock)")
    out = []
    for line in reqs:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        out.append(_norm(req.name))
    return tuple(sorted(set(out)))


def env_closure(pins: set[str]) -> dict[str, str]:
    """Every distribution an env installs → the pin that brings it in."""
    via = {p: p for p in pins}
    queue = sorted(pins)
    while queue:
        dist = queue.pop(0)
        for dep in _requires(dist):
            if dep not in via:
                via[dep] = via[dist]
                queue.append(dep)
    return via


def _pins(spec: RuleSpec) -> set[str]:
    assert spec.env_file.is_file(), f"rule {spec.name}: env {spec.env_file} does not exist"
    return {_norm(n) for n in env_packages(spec.env_file)}


# ------------------------------------------------------------------ tests

def test_rules_parsed(workflow_dump, rules):
    names = {r.name for r in rules}
    for expected in ("load_sample", "qc_sample", "integrate", "clonotypes", "annotate",
                     "associate", "provenance", "overview"):
        assert expected in names
    # every rule runs a script, so every rule's imports are checked (the targets `all`
    # and `tables` only collect)
    assert [n for n, r in workflow_dump["rules"].items() if not r["script"]] == ["all", "tables"]
    # the step envs these tests run over are the STEPS of common.smk, and no rule uses
    # another env
    assert workflow_dump["steps"] == STEP_ENVS
    assert {r.step for r in rules} == set(STEP_ENVS)
    # the versions_<step> rules of report.smk are declared in a loop over STEPS, each
    # with its step's env
    versions = {r.name: r for r in rules if r.name.startswith("versions_")}
    assert set(versions) == {f"versions_{step}" for step in workflow_dump["steps"]}
    for step in workflow_dump["steps"]:
        rule = versions[f"versions_{step}"]
        assert rule.file == "report.smk" and rule.step == step
        assert rule.script == SCRIPTS_DIR / "record_versions.py"


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_collector_follows_library_and_relative_imports(tmp_path):
    """Function-level, relative and `from pkg import module` imports are followed."""
    _write(tmp_path, {
        "entry.py": "from lib.logs import log\nfrom lib import step\n",
        "lib/__init__.py": "import json\n",
        "lib/logs.py": "import logging\nfrom .errors import E\n",
        "lib/errors.py": "class E(Exception):\n    pass\n",
        "lib/step.py": ("import numpy as np\n"
                        "def f():\n    from .sub import deep\n    import scanpy as sc\n"
                        "try:\n    import celltypist\nexcept ImportError:\n    pass\n"),
        "lib/sub/__init__.py": "",
        "lib/sub/deep.py": "from ..errors import E\nimport sklearn.neighbors\n",
        "lib/unused.py": "import torch\n",
    })
    reaches, files = collect_imports(tmp_path / "entry.py", root=tmp_path)
    rel = {str(f.relative_to(tmp_path)) for f in files}
    assert rel == {"entry.py", "lib/__init__.py", "lib/logs.py", "lib/errors.py", "lib/step.py",
                   "lib/sub/__init__.py", "lib/sub/deep.py"}
    got = {r.imp.module: r for r in reaches}
    assert set(got) == {"json", "logging", "numpy", "scanpy", "celltypist", "sklearn.neighbors"}
    assert got["numpy"].on_import and got["json"].on_import
    assert not got["scanpy"].on_import and got["scanpy"].imp.in_function
    # reached only through a function-level import of lib.sub.deep
    assert not got["sklearn.neighbors"].on_import
    assert got["sklearn.neighbors"].hops == ("entry.py:2", "lib/step.py:3 [in function]")
    assert got["celltypist"].imp.optional and not got["numpy"].imp.optional
    assert dists_of("yaml") == ["pyyaml"] and dists_of("sklearn.neighbors") == ["scikit-learn"]
    assert dists_of("os.path") == [] and dists_of("__future__") == []


def test_closure_includes_dependencies():
    closure = env_closure({"scanpy"})
    for dep in ("anndata", "numpy", "h5py", "scikit-learn", "matplotlib"):
        assert dep in closure
    assert "pytest" not in closure  # extras ("test") are not followed


def _unprovided(spec, have: set[str]) -> list[str]:
    """Non-optional imports reached from the rule's script whose distribution is not in
    `have`, one line each (distribution: where it is imported)."""
    reaches, _ = collect_imports(spec.script)
    missing = set()
    for r in reaches:
        dists = [] if r.imp.optional else dists_of(r.imp.module)
        if dists and not any(d in have for d in dists):
            missing.add(f"  {' or '.join(dists)}: {r.where()}")
    return sorted(missing)


@pytest.mark.parametrize("step", STEP_ENVS)
def test_env_provides_imports(rules, step):
    failures = [
        f"rule {spec.name} ({spec.file}) runs {spec.script.name} in envs/{spec.step}.yaml, "
        "which neither pins nor depends on:\n" + "\n".join(missing)
        for spec in _step_rules(rules, step)
        if (missing := _unprovided(spec, env_closure(_pins(spec))))
    ]
    assert not failures, "\n".join(failures) + (
        f"\nFix: add the distribution to STEP_PACKAGES['{step}'] in tools/write_envs.py "
        "and regenerate the envs.")


@pytest.mark.parametrize("step", STEP_ENVS)
def test_env_pins_direct_imports(rules, step):
    failures = [
        f"rule {spec.name} ({spec.file}): envs/{spec.step}.yaml must pin every "
        "distribution its code imports:\n" + "\n".join(missing)
        for spec in _step_rules(rules, step)
        if (missing := _unprovided(spec, _pins(spec)))
    ]
    assert not failures, "\n".join(failures) + (
        f"\nFix: add it to STEP_PACKAGES['{step}'] in tools/write_envs.py.")


def test_optional_imports_are_known(rules):
    """Optional (try/except ImportError) imports are reviewed features, not forgotten pins."""
    optional = {}
    for spec in rules:
        reaches, _ = collect_imports(spec.script)
        for r in reaches:
            imp = r.imp
            if imp.optional:
                optional.setdefault(imp.module.split(".")[0], set()).add(
                    f"{imp.file.relative_to(REPO)}:{imp.lineno} (rule {spec.name})")
    unknown = {m: sorted(w) for m, w in optional.items() if m not in OPTIONAL_IMPORTS}
    assert not unknown, (
        "imports guarded by try/except ImportError that are not declared optional in "
        f"OPTIONAL_IMPORTS of this test: {unknown}. Pin them in the step's env, or declare "
        "them with the config key that enables them.")
