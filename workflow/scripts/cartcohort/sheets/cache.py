"""A JSON cache of libraries whose files passed the parse-time checks.

Snakemake parses the workflow on every invocation (and once per job on
clusters); a library whose files have the same paths, sizes and modification
times as when they were checked is not read again.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .locate import LocateError, locate_mtx

logger = logging.getLogger(__name__)

#: 2: rows also hold the warning rows of their files. 3: TCR files checked in full
#: (not their first 5,000 rows), rows hold their TCR-GEX overlap (``tcr_gex_overlap``).
CACHE_VERSION = 3


def load_cache(path: Path) -> dict[str, Any]:
    """The cached rows (``{}`` when the file is absent, unreadable or of another version)."""
    try:
        with open(path) as fh:
            data = json.load(fh)
        if data.get("version") == CACHE_VERSION and isinstance(data.get("rows"), dict):
            return data["rows"]
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def save_cache(path: Path, rows: Mapping[str, Any]) -> None:
    """Write the cache atomically; a failure is logged, not raised."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"version": CACHE_VERSION, "rows": rows}, fh, sort_keys=True)
        os.replace(tmp, path)
    except OSError as err:  # the cache is an optimisation: checks were done anyway
        logger.info("could not write the input-check cache %s: %s", path, err)


def stamp(p: Path) -> list[int] | None:
    """``[size, mtime_ns]`` of ``p`` (``None`` when it does not exist)."""
    try:
        st = p.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def stamps(given: Path, resolved_gex: Path, vdj: str) -> dict[str, list[int] | None]:
    """Size/mtime of every file and folder the checks of one row depended on."""
    paths = [given]
    p = resolved_gex
    while p != given and given in p.parents:  # folders between a run folder and its h5
        paths.append(p)
        p = p.parent
    if resolved_gex.is_dir():
        try:
            m = locate_mtx(resolved_gex)
            paths += [m.matrix, m.features, m.barcodes]
        except LocateError:
            pass
    if vdj:
        paths.append(Path(vdj))
    return {str(x): stamp(x) for x in dict.fromkeys(paths)}


def is_fresh(hit: Mapping[str, Any]) -> bool:
    """Whether every file a cached row depended on is unchanged."""
    return all(
        stamp(Path(f)) == (list(v) if v is not None else None) for f, v in hit["stamps"].items()
    )
