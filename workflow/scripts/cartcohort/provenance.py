"""Provenance: software versions, config hash, input checksums, git commit, seeds."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
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
        "inputs": {k: {"path": str(v), "sha256": sha256_path(v)} for k, v in sorted(input_files.items())},
        "software": {k: dict(v) for k, v in sorted(step_versions.items())},
    }
