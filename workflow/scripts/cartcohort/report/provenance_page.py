"""The report's provenance page, rendered from a provenance record."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from ..errors import CartCohortError
from ._html import html_page, html_table
from .provenance import config_hash

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


def render_provenance_html(record: Mapping[str, Any], *, step_order: Sequence[str]) -> str:
    """Render a provenance record (``results/provenance.json``) as the report's page.

    Step function of rule ``provenance_page``. The page shows the workflow's git commit
    (and whether the tree was modified), the run date when the record has one, the
    config hash (checked against the config it holds), every seed setting, a package ×
    step table of the software versions recorded inside each step's environment
    (packages whose version differs between steps are highlighted and named in a note
    column), a table of every input file with its size and SHA-256, and the full
    resolved config as YAML. Every text is HTML-escaped; the output depends on the
    record only (same record → same bytes).

    Parameters
    ----------
    record
        The provenance record written by :func:`build_provenance`; must hold
        ``config``, ``config_sha256``, ``inputs`` and ``software``.
    step_order
        Workflow order of the steps, for the columns of the software table (steps of
        the record not in it follow alphabetically; ``()``: all alphabetically).

    Returns
    -------
    str
        A complete, self-contained HTML document.

    Raises
    ------
    CartCohortError
        When the record lacks a required field or a field has the wrong shape.
    """
    _check_record(record)
    config = _plain(record["config"])
    parts = [
        *_run_section(record, config),
        *_seeds_section(config),
        *_software_section(record["software"], step_order),
        *_inputs_section(record["inputs"]),
        *_config_section(config),
        *_other_section(record),
    ]
    return html_page("cart-cohort provenance", parts, extra_style=_PAGE_STYLE)


def _check_record(record: Mapping[str, Any]) -> None:
    """Raise :class:`CartCohortError` when a record lacks a field or has a wrong shape."""
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


def _run_section(record: Mapping[str, Any], config: Any) -> list[str]:
    """Summary: workflow, commit and dirty tree, run date, config hash and master seed."""
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
    return [
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


def _seeds_section(config: Any) -> list[str]:
    """Every seed setting of the config."""
    seeds = _seed_settings(config)
    return [
        "<h3>Random seeds</h3>",
        html_table([[k, json.dumps(v)] for k, v in seeds], header=["config key", "value"],
                   column_classes=["mono", "mono"]) if seeds
        else "<p>The config sets no seed.</p>",
    ]


def _software_section(
    software: Mapping[str, Mapping[str, str | None]], step_order: Sequence[str]
) -> list[str]:
    """The package × step table of versions, differing packages highlighted."""
    header, rows, classes = software_table(software, step_order=step_order)
    n_diff = sum(c is not None for c in classes)
    return [
        "<h3>Software versions per step</h3>",
        f"<p>Recorded from inside each step's environment ({len(header) - 2} steps, "
        f"{len(rows)} packages). {html.escape(NOT_PINNED)} = not in that step's environment. "
        + (f"<b>{n_diff}</b> package{'s' if n_diff != 1 else ''} differ between steps or "
           "are missing (highlighted)." if n_diff else "Every package has the same version "
           "in every step that uses it.") + "</p>",
        html_table(rows, header=header, row_classes=classes,
                   column_classes=[None, *["mono"] * (len(header) - 2), None]),
    ]


def _inputs_section(inputs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every input file with its path, size (when recorded) and SHA-256."""
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
    return [
        "<h3>Input files</h3>",
        f"<p>{len(labels)} input files; a folder's SHA-256 covers the sorted relative "
        "names and contents of every file in it.</p>",
        html_table(in_rows, header=in_header,
                   column_classes=[None, "mono", *([None] if with_size else []), "mono"])
        if in_rows else "<p>No input file was recorded.</p>",
    ]


def _config_section(config: Any) -> list[str]:
    """The full resolved config as YAML."""
    dumped = yaml.safe_dump(config, sort_keys=True, default_flow_style=False,
                            allow_unicode=True, width=100)
    return ["<h3>Resolved config</h3>", f"<pre>{html.escape(dumped)}</pre>"]


def _other_section(record: Mapping[str, Any]) -> list[str]:
    """Any field of the record that the other sections do not show."""
    shown = set(REQUIRED_RECORD_KEYS) | set(_SUMMARY_KEYS)
    other = {str(k): _plain(v) for k, v in record.items() if k not in shown}
    if not other:
        return []
    return ["<h3>Other recorded fields</h3>",
            f"<pre>{html.escape(json.dumps(other, indent=1, sort_keys=True))}</pre>"]
