"""Provenance: software versions, config hash, input checksums, git commit, seeds."""

from __future__ import annotations

import hashlib
import html
import importlib.metadata as md
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from cartcohort.errors import CartCohortError
from cartcohort.report import html_page, html_table

# conda-forge/bioconda names whose import/distribution name differs on PyPI
CONDA_TO_PYPI = {"python-igraph": "igraph"}


def env_packages(env_file: str | os.PathLike) -> dict[str, str]:
    """Packages pinned in a conda env file, as ``{pypi_name: version}``.

    Both conda dependencies (``name==version`` / ``name=version``) and the
    ``pip:`` subsection are read; ``python`` itself is left out.
    """
    spec = yaml.safe_load(Path(env_file).read_text())
    pins: dict[str, str] = {}

    def add(item: str) -> None:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==?\s*([^\s=]+)", item)
        if not m:
            raise ValueError(f"{env_file}: dependency {item!r} is not pinned as name==version")
        name, version = m.group(1), m.group(2)
        if name.lower() == "python":
            return
        pins[CONDA_TO_PYPI.get(name, name).lower()] = version

    for dep in spec.get("dependencies", []):
        if isinstance(dep, str):
            if dep.split("=")[0].strip() in ("pip",):
                continue
            add(dep)
        elif isinstance(dep, dict) and "pip" in dep:
            for item in dep["pip"]:
                add(item)
    return pins


def installed_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution in this interpreter (None if absent)."""
    out: dict[str, str | None] = {}
    for name in sorted(set(packages)):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def sha256_path(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, or of a folder (sorted relative names + file digests)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(sha256_path(f).encode())
        return h.hexdigest()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def path_size(path: str | os.PathLike) -> int:
    """Size in bytes of a file, or the total of every file under a folder."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the resolved config, serialised as canonical JSON."""
    return hashlib.sha256(
        json.dumps(config, sort_keys=True, default=str).encode()
    ).hexdigest()


def git_commit(repo_dir: str | os.PathLike) -> str | None:
    """The workflow's git commit (with ``-dirty`` when modified), or None outside git."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(repo_dir), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("-dirty" if dirty else "")


def build_provenance(
    *,
    config: Mapping[str, Any],
    input_files: Mapping[str, str],
    step_versions: Mapping[str, Mapping[str, str | None]],
    workflow_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Assemble the provenance record written to ``results/provenance.json``.

    Parameters
    ----------
    config
        The fully resolved workflow config.
    input_files
        Label → path of every input file (sheets, GEX, TCR, signatures).
    step_versions
        Step → {package: version} recorded inside each step's environment.
    workflow_dir
        The workflow's folder (for the git commit).
    """
    return {
        "workflow": "cart-cohort",
        "git_commit": git_commit(workflow_dir),
        "config": json.loads(json.dumps(config, default=str)),
        "config_sha256": config_hash(config),
        "seed": config.get("seed"),
        "inputs": {
            k: {"path": str(v), "sha256": sha256_path(v), "size_bytes": path_size(v)}
            for k, v in sorted(input_files.items())
        },
        "software": {k: dict(v) for k, v in sorted(step_versions.items())},
    }


# ------------------------------------------------------------------ report page

REQUIRED_RECORD_KEYS = ("config", "config_sha256", "inputs", "software")
# record fields shown in the summary table (a record written by another version may
# carry them; build_provenance writes no date so that provenance.json stays byte-stable)
_SUMMARY_KEYS = ("workflow", "git_commit", "git_dirty", "run_date", "date", "seed")
_SEED_KEY = re.compile(r"(^|_)(seed|random_state)s?$", re.IGNORECASE)
NOT_PINNED = "—"
NOT_INSTALLED = "not installed"

_PAGE_STYLE = (".mono,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}"
               "td.mono{white-space:nowrap}"
               "tr.differs td{background:#fff3cd} tr.missing td{background:#f8d7da}"
               "pre{background:#f6f8fa;padding:8px;overflow-x:auto}"
               "p.warn{color:#a00;font-weight:bold} th{text-align:left}")


def _plain(value: Any) -> Any:
    """JSON-compatible copy of a value (what provenance.json can hold)."""
    return json.loads(json.dumps(value, default=str))


def _seed_settings(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every ``seed``/``random_state``-like key of a nested config, as (dotted key, value)."""
    out: list[tuple[str, Any]] = []
    if isinstance(config, Mapping):
        for key in sorted(config, key=str):
            dotted = f"{prefix}{key}"
            value = config[key]
            if _SEED_KEY.search(str(key)) and not isinstance(value, Mapping):
                out.append((dotted, value))
            else:
                out.extend(_seed_settings(value, dotted + "."))
    elif isinstance(config, list):
        for i, value in enumerate(config):
            out.extend(_seed_settings(value, f"{prefix}{i}."))
    return out


def _ordered_steps(steps: Iterable[str], order: Sequence[str]) -> list[str]:
    """Steps in workflow order (``order``) first, any others alphabetically after them."""
    steps = set(steps)
    return [s for s in order if s in steps] + sorted(steps - set(order))


def software_table(
    software: Mapping[str, Mapping[str, str | None]],
    *,
    step_order: Sequence[str] = (),
) -> tuple[list[str], list[list[str]], list[str | None]]:
    """Package × step table of the versions recorded in each step's environment.

    Parameters
    ----------
    software
        Step → {package: version}; ``None`` = pinned but not installed.
    step_order
        Workflow order of the steps (columns); unknown steps follow alphabetically.

    Returns
    -------
    header, rows, row_classes
        ``header`` is ``package, <steps…>, note``; a cell is the version,
        :data:`NOT_PINNED` when the step's env does not pin the package, or
        :data:`NOT_INSTALLED`. ``row_classes`` is ``"differs"`` for packages whose
        installed version differs between steps, ``"missing"`` for packages pinned
        but not installed in some step, else ``None``.
    """
    steps = _ordered_steps(software, step_order)
    packages = sorted({p for s in steps for p in software[s]}, key=lambda p: (p.lower(), p))
    rows: list[list[str]] = []
    classes: list[str | None] = []
    for pkg in packages:
        present = {s: software[s][pkg] for s in steps if pkg in software[s]}
        versions = sorted({str(v) for v in present.values() if v is not None})
        absent = [s for s, v in present.items() if v is None]
        notes, cls = [], None
        if absent:
            notes.append(f"not installed in: {', '.join(absent)}")
            cls = "missing"
        if len(versions) > 1:
            notes.append(f"differs between steps: {', '.join(versions)}")
            cls = cls or "differs"
        cells = [NOT_PINNED if s not in present
                 else NOT_INSTALLED if present[s] is None else str(present[s]) for s in steps]
        rows.append([pkg, *cells, "; ".join(notes)])
        classes.append(cls)
    return ["package", *steps, "note"], rows, classes


def render_provenance_html(record: Mapping[str, Any], *, step_order: Sequence[str] = ()) -> str:
    """Render a provenance record (``results/provenance.json``) as the report's page.

    The page shows the workflow's git commit (and whether the tree was modified), the
    run date when the record has one, the config hash (checked against the config it
    holds), every seed setting, a package × step table of the software versions
    recorded inside each step's environment (packages whose version differs between
    steps are highlighted and named in a note column), a table of every input file
    with its size and SHA-256, and the full resolved config as YAML. Every text is
    HTML-escaped; the output depends on the record only (same record → same bytes).

    Parameters
    ----------
    record
        The provenance record written by :func:`build_provenance`; must hold
        ``config``, ``config_sha256``, ``inputs`` and ``software``.
    step_order
        Workflow order of the steps, for the columns of the software table.

    Returns
    -------
    str
        A complete, self-contained HTML document.

    Raises
    ------
    CartCohortError
        When the record lacks a required field or a field has the wrong shape.
    """
    missing = [k for k in REQUIRED_RECORD_KEYS if k not in record]
    if missing:
        raise CartCohortError(
            f"provenance record lacks {', '.join(missing)}. Fix: rebuild "
            "results/provenance.json with rule provenance (delete it and rerun snakemake).")
    for key in ("config", "inputs", "software"):
        if not isinstance(record[key], Mapping):
            raise CartCohortError(
                f"provenance record: '{key}' is a {type(record[key]).__name__}, expected a "
                "mapping. Fix: rebuild results/provenance.json with rule provenance.")
    for step, versions in record["software"].items():
        if not isinstance(versions, Mapping):
            raise CartCohortError(
                f"provenance record: software['{step}'] is not a package → version mapping. "
                "Fix: rebuild results/provenance/versions_{step}.json and provenance.json.")
    for label, entry in record["inputs"].items():
        if not isinstance(entry, Mapping) or "path" not in entry or "sha256" not in entry:
            raise CartCohortError(
                f"provenance record: inputs['{label}'] lacks path/sha256. Fix: rebuild "
                "results/provenance.json with rule provenance.")

    esc = html.escape
    config = _plain(record["config"])

    # summary
    commit = record.get("git_commit")
    dirty = bool(record.get("git_dirty"))
    if isinstance(commit, str) and commit.endswith("-dirty"):
        commit, dirty = commit[: -len("-dirty")], True
    summary: list[list[str]] = [["workflow", str(record.get("workflow", "NA"))]]
    if commit:
        summary.append(["git commit", str(commit)])
        summary.append(["uncommitted changes", "yes (dirty working tree)" if dirty else "no"])
    else:
        summary.append(["git commit", "not recorded (the workflow is not in a git repository)"])
    for key in ("run_date", "date"):
        if record.get(key) is not None:
            summary.append(["run date", str(record[key])])
            break
    summary.append(["config SHA-256", str(record["config_sha256"])])
    if "seed" in record:
        summary.append(["master seed", "NA" if record["seed"] is None else str(record["seed"])])
    hash_ok = config_hash(config) == record["config_sha256"]

    parts = [
        "<h2>Provenance</h2>",
        "<p>What produced these results: workflow version, configuration, random seeds, "
        "software recorded inside each step's environment and checksums of every input "
        "file. Same commit + same config hash + same input checksums reproduce the run.</p>",
        "<h3>Run</h3>",
        html_table(summary, header=["field", "value"], column_classes=[None, "mono"]),
        "<p>The config hash matches the resolved config shown below.</p>" if hash_ok else
        "<p class='warn'>The config hash does NOT match the config shown below: the record "
        "was edited or written by another version. Do not trust it for reproduction.</p>",
    ]

    # seeds
    seeds = _seed_settings(config)
    parts.append("<h3>Random seeds</h3>")
    parts.append(html_table([[k, json.dumps(v)] for k, v in seeds], header=["config key", "value"],
                            column_classes=["mono", "mono"]) if seeds
                 else "<p>The config sets no seed.</p>")

    # software
    header, rows, classes = software_table(record["software"], step_order=step_order)
    n_diff = sum(c is not None for c in classes)
    parts.append("<h3>Software versions per step</h3>")
    parts.append(
        f"<p>Recorded from inside each step's environment ({len(header) - 2} steps, "
        f"{len(rows)} packages). {esc(NOT_PINNED)} = not in that step's environment. "
        + (f"<b>{n_diff}</b> package{'s' if n_diff != 1 else ''} differ between steps or "
           "are missing (highlighted)." if n_diff else "Every package has the same version "
           "in every step that uses it.") + "</p>")
    parts.append(html_table(rows, header=header, row_classes=classes,
                            column_classes=[None, *["mono"] * (len(header) - 2), None]))

    # inputs
    inputs = record["inputs"]
    labels = sorted(inputs, key=str)
    with_size = any("size_bytes" in inputs[k] for k in labels)
    in_rows = []
    for k in labels:
        e = inputs[k]
        row = [str(k), str(e["path"])]
        if with_size:
            size = e.get("size_bytes")
            row.append("NA" if size is None else f"{int(size):,}")
        row.append(str(e["sha256"]))
        in_rows.append(row)
    in_header = ["input", "path", *(["size (bytes)"] if with_size else []), "sha256"]
    parts.append("<h3>Input files</h3>")
    parts.append(f"<p>{len(labels)} input files; a folder's SHA-256 covers the sorted relative "
                 "names and contents of every file in it.</p>")
    parts.append(html_table(in_rows, header=in_header,
                            column_classes=[None, "mono", *([None] if with_size else []), "mono"])
                 if in_rows else "<p>No input file was recorded.</p>")

    # config
    parts.append("<h3>Resolved config</h3>")
    dumped = yaml.safe_dump(config, sort_keys=True, default_flow_style=False,
                            allow_unicode=True, width=100)
    parts.append(f"<pre>{esc(dumped)}</pre>")

    # anything else the record holds
    shown = set(REQUIRED_RECORD_KEYS) | set(_SUMMARY_KEYS)
    other = {str(k): _plain(v) for k, v in record.items() if k not in shown}
    if other:
        parts.append("<h3>Other recorded fields</h3>")
        parts.append(f"<pre>{esc(json.dumps(other, indent=1, sort_keys=True))}</pre>")

    return html_page("cart-cohort provenance", parts, extra_style=_PAGE_STYLE)
