"""Provenance: software versions, config hash, input checksums, git commit, seeds."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import platform
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

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


def provenance_record(
    version_files: Sequence[str | os.PathLike],
    *,
    steps: Sequence[str],
    config: Mapping[str, Any],
    input_files: Mapping[str, str],
    workflow_dir: str | os.PathLike,
) -> dict[str, Any]:
    """The provenance record of a run (step function of rule ``provenance``).

    Parameters
    ----------
    version_files
        The ``versions_<step>.json`` files written by :func:`record_versions`, one per
        entry of ``steps`` and in the same order.
    steps
        The workflow's steps (one conda environment each).
    config
        The fully resolved workflow config.
    input_files
        Label → path of every input file (sheets, GEX, TCR, signatures).
    workflow_dir
        The workflow's folder (for the git commit).

    Returns
    -------
    dict
        :func:`build_provenance` of the step versions read from ``version_files``.
    """
    step_versions = {}
    for step, path in zip(steps, version_files):
        step_versions[step] = read_json(path)
    return build_provenance(
        config=config,
        input_files=input_files,
        step_versions=step_versions,
        workflow_dir=workflow_dir,
    )


def record_versions(env_file: str | os.PathLike) -> dict[str, str | None]:
    """Versions, in this interpreter, of the packages a step's conda env pins.

    Step function of the ``versions_<step>`` rules, run inside each step's environment.

    Parameters
    ----------
    env_file
        The step's ``envs/<step>.yaml``.

    Returns
    -------
    dict
        Package → installed version (``None``: pinned but not installed), plus
        ``python`` → the interpreter's version.
    """
    versions = installed_versions(env_packages(env_file))
    versions["python"] = platform.python_version()
    return versions


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file (a provenance record or a step's versions)."""
    with open(path) as fh:
        return json.load(fh)


def write_json(record: Any, path: str | os.PathLike) -> None:
    """Write a record as JSON with sorted keys (byte-stable)."""
    with open(path, "w") as fh:
        json.dump(record, fh, indent=1, sort_keys=True)
