"""What Snakemake itself makes of the workflow, as JSON: the rules (input and output
entries, log, benchmark, conda env, script, localrules), every rule's params evaluated for
concrete wildcards, the STEPS of common.smk and the files Snakemake included.

A wrapper Snakefile in a temporary folder includes the real Snakefile; at the end of
parsing, when every rule is declared, it evaluates each rule's params (input functions
get a wildcards object: each sample of the sheet, each method of integrate.methods) and
writes them as JSON. It runs as a dry run through the workflow CLI, so the config is
validated and defaulted exactly as in a real run. Nothing under results/ is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from conftest import DEMO, REPO, run_snakemake

WRAPPER = '''
include: {snakefile!r}


import inspect as _inspect
import itertools as _itertools
import json as _json
import re

from snakemake.io import strip_wildcard_constraints as _strip_constraints
from snakemake.iocontainers import Wildcards as _Wildcards


def _dump_plain(value):
    if isinstance(value, dict):
        return {{str(k): _dump_plain(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return [_dump_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_dump_plain(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return {{"__repr__": repr(value)}}


def _dump_values(rule):
    values = {{"sample": list(SAMPLES.index), "method": list(INTEGRATION_METHODS)}}
    names = sorted(rule.wildcard_names)
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(f"rule {{rule.name}}: no test values for wildcards {{missing}}")
    for combo in _itertools.product(*(values[n] for n in names)):
        yield dict(zip(names, combo))


def _dump_params(rule):
    out = []
    for wildcards in _dump_values(rule):
        evaluated = {{}}
        for name, value in rule.params.items():
            if callable(value):
                args = list(_inspect.signature(value).parameters)
                if args != ["wildcards"]:
                    evaluated[name] = {{"__needs__": args}}
                    continue
                value = value(_Wildcards(fromdict=wildcards))
            evaluated[name] = _dump_plain(value)
        out.append({{"wildcards": wildcards, "params": evaluated}})
    return out


def _dump_files(files):
    """Input or output entries of a rule in order: the name given in the rule (None for a
    positional one), the pattern without wildcard constraints (an input function: its
    name), the flags and, for report(), its caption, category, subcategory and labels."""
    names = {{}}
    for name, (start, end) in files._names.items():
        for i in range(start, start + 1 if end is None else end):
            names[i] = name
    out = []
    for i, item in enumerate(files):
        flags = dict(getattr(item, "flags", None) or {{}})
        entry = {{"name": names.get(i), "flags": sorted(flags), "report": None}}
        if callable(item):
            entry["pattern"] = None
            entry["function"] = getattr(item, "__name__", repr(item))
        else:
            entry["pattern"] = str(_strip_constraints(str(item)))
            entry["function"] = None
        _report = flags.get("report")
        if _report is not None:
            caption = _report.caption
            entry["report"] = {{
                "caption": caption.get_path_or_uri(secret_free=True) if caption else None,
                "category": _report.category,
                "subcategory": _report.subcategory,
                "labels": _dump_plain(_report.labels),
            }}
        out.append(entry)
    return out


def _dump_directives():
    """(snakefile, lineno) of each rule -> its directives in the order written, from
    Snakemake's own compilation of every included file (decorators in source order)."""
    from snakemake.parser import parse

    found = {{}}
    for snakefile in list(workflow.included):
        code, _ = parse(snakefile, workflow, linemap={{}})
        current = None
        for m in re.finditer(r"@workflow\.(\w+)(?:\(name=(?:'[^']*'|None), lineno=(\d+), "
                             r"snakefile='([^']*)'\))?", code):
            if m.group(1) == "rule":
                current = found.setdefault((m.group(3), int(m.group(2))), [])
            elif current is not None and m.group(1) != "run":
                current.append(m.group(1))
    return found


_directives = _dump_directives()
_dump = {{"config": _dump_plain(config), "samples": list(SAMPLES.index),
          "methods": list(INTEGRATION_METHODS), "steps": list(STEPS),
          "included": [str(f) for f in workflow.included],
          "localrules": sorted(workflow._localrules), "rules": {{}}}}
for _rule in workflow.rules:
    _dump["rules"][_rule.name] = {{
        "snakefile": str(_rule.snakefile),
        "basedir": str(_rule.basedir),
        "wildcards": sorted(_rule.wildcard_names),
        "input": _dump_files(_rule.input),
        "output": _dump_files(_rule.output),
        "log": [str(x) for x in _rule.log],
        "benchmark": str(_rule.benchmark) if _rule.benchmark else None,
        "conda_env": str(_rule.conda_env) if _rule.conda_env else None,
        "script": _rule.script,
        "shellcmd": _rule.shellcmd,
        "is_run": bool(_rule.is_run),
        "norun": bool(_rule.norun),
        "param_names": [n for n, _ in _rule.params.items()],
        "directives": _directives.get((str(_rule.snakefile), _rule.lineno)),
        "params": _dump_params(_rule),
    }}
with open({out!r}, "w") as _fh:
    _json.dump(_dump, _fh, indent=1, sort_keys=True)
'''


def demo_project(tmp_path: Path) -> Path:
    """A project folder whose resources/demo is the demo cohort (relative paths of the
    shipped configs resolve in it)."""
    project = tmp_path / "project"
    (project / "resources").mkdir(parents=True)
    (project / "resources" / "demo").symlink_to(DEMO, target_is_directory=True)
    return project


def dump_workflow(
    tmp_path: Path,
    overrides: dict[str, Any] | None = None,
    *,
    configfile: Path | None = None,
    replace_config: bool = False,
    check: bool = True,
    name: str = "dump",
):
    """Dry-run the workflow through the wrapper; returns (dump dict or None, process).

    ``overrides`` are written to a config file given with ``--configfile`` (merged over
    config/config.yaml as a user's file is) after ``configfile``; samples and clinical
    point at the demo cohort unless the overrides set them. ``replace_config`` passes
    ``--replace-workflow-config``: config/config.yaml is then not read at all.
    """
    project = demo_project(tmp_path / name)
    out = tmp_path / name / "dump.json"
    wrapper = tmp_path / name / "Snakefile"
    wrapper.write_text(WRAPPER.format(snakefile=str(REPO / "Snakefile"), out=str(out)))
    cfg = {"samples": str(DEMO / "samples.tsv"), "clinical": str(DEMO / "clinical.tsv")}
    if configfile is not None:
        cfg = {}
    cfg.update(overrides or {})
    user = tmp_path / name / "overrides.yaml"
    user.write_text(yaml.safe_dump(cfg))
    # target `all` named: an included Snakefile's `default_target` does not carry over
    args = ["all", "-n", "--configfile", *([str(configfile)] if configfile else []), str(user)]
    if replace_config:
        args.append("--replace-workflow-config")
    proc = run_snakemake(project, *args, snakefile=wrapper, check=check, cores=1)
    dump = json.loads(out.read_text()) if out.exists() else None
    return dump, proc


_CACHE: dict[str, dict] = {}
MINIMAL_CONFIG = REPO / ".test" / "config_minimal" / "config.yaml"


def demo_dump(tmp_path_factory) -> dict:
    """The dump of the demo config (config/config.yaml), once per test session."""
    if "demo" not in _CACHE:
        _CACHE["demo"], _ = dump_workflow(tmp_path_factory.mktemp("demo_dump"))
    return _CACHE["demo"]


def minimal_dump(tmp_path_factory) -> dict:
    """The dump of .test/config_minimal (schema defaults only), once per test session."""
    if "minimal" not in _CACHE:
        _CACHE["minimal"], _ = dump_workflow(tmp_path_factory.mktemp("minimal_dump"),
                                             configfile=MINIMAL_CONFIG, replace_config=True)
    return _CACHE["minimal"]
