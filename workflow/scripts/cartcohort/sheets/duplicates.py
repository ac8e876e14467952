"""Two sample rows whose files have the same content (same checksum) are one library twice.

A copied row with a different path (a symlink, a copy of the folder, a cellranger
multi folder and the h5 inside it) passes the check of repeated paths; its data would
enter the cohort twice and count as two libraries. Files are first grouped by size
(free), so only files of equal size are read and hashed: with real libraries that is
almost never the case, and the check costs nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import Problem
from .cache import is_fresh, stamp
from .locate import LocateError, locate_mtx, resolve_path
from .tsv import SheetTable

_CHUNK = 1 << 20
_KIND = {"gex": "GEX", "vdj": "TCR"}


def content_files(path: Path) -> list[Path]:
    """The files whose bytes are a library's data: the file itself, or the matrix and
    barcodes of an mtx folder (``[]`` when they cannot be found)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        try:
            mtx = locate_mtx(path)
        except LocateError:
            return []
        return [mtx.matrix, mtx.barcodes]
    return []


def checksum(files: Iterable[Path]) -> str:
    """SHA-256 of the concatenated bytes of ``files``, read in chunks."""
    digest = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def cached_checksum(files: list[Path], cache: dict[str, Any] | None) -> str:
    """:func:`checksum` of ``files``, remembered in the parse-time ``cache`` (keyed on
    the paths, valid while their sizes and modification times are unchanged)."""
    key = "sha256\t" + "\t".join(map(str, files))
    hit = cache.get(key) if cache is not None else None
    if hit and is_fresh(hit):
        return str(hit["digest"])
    digest = checksum(files)
    if cache is not None:
        cache[key] = {"digest": digest, "stamps": {str(f): stamp(f) for f in files}}
    return digest


def _entries(
    sheet: SheetTable, records: list[Mapping[str, Any]], column: str, excluded: set[str]
) -> dict[tuple[int, ...], list[tuple[int, list[Path]]]]:
    """``sizes -> [(row index, files)]`` of the included rows with a ``column`` file."""
    by_size: dict[tuple[int, ...], list[tuple[int, list[Path]]]] = {}
    for i, rec in enumerate(records):
        if not rec.get(column) or rec.get("sample", "") in excluded:
            continue
        files = content_files(Path(rec[column]))
        if not files:
            continue
        try:
            sizes = tuple(f.stat().st_size for f in files)
        except OSError:
            continue
        by_size.setdefault(sizes, []).append((i, files))
    return by_size


def same_content_problems(
    sheet: SheetTable,
    records: list[Mapping[str, Any]],
    excluded: set[str],
    cache: dict[str, Any] | None = None,
) -> list[Problem]:
    """Problems of included rows whose GEX (or TCR) data have the same checksum as an
    earlier row's.

    Parameters
    ----------
    sheet
        The parsed sample sheet; ``records[i]`` is the resolved ``sheet.rows[i]``.
    records
        The rows with ``sample`` and absolute, located ``gex``/``vdj`` paths.
    excluded
        Samples of ``exclude_samples``, not checked.
    cache
        The parse-time cache (:mod:`.cache`), remembering the checksums of files
        of equal size, so that a re-parse does not read them again.

    Returns
    -------
    list of Problem
        One per repeated row, naming the sheet line, the column, both samples and
        files, and the fix. Rows with the very same path are left to the check of
        repeated paths.
    """
    out: list[Problem] = []
    for column in ("gex", "vdj"):
        for group in _entries(sheet, records, column, excluded).values():
            if len(group) < 2:
                continue
            first: dict[str, tuple[int, Path]] = {}
            for i, files in group:
                try:
                    digest = cached_checksum(files, cache)
                except OSError:
                    continue
                if digest not in first:
                    first[digest] = (i, files[0])
                    continue
                j, other = first[digest]
                if _given(sheet, records, i, column) == _given(sheet, records, j, column):
                    continue  # the same path: reported as a repeated path
                out.append(_problem(sheet, records, column, (j, other), (i, files[0]), digest))
    return out


def _given(sheet: SheetTable, records: list[Mapping[str, Any]], i: int, column: str) -> Path:
    """The path row ``i`` gives in ``column``, resolved as the check of repeated paths
    does (the located path when the sheet leaves it empty: cellranger multi TCR)."""
    raw = sheet.rows[i].get(column, "")
    return resolve_path(raw, sheet.path.parent) if raw else Path(records[i][column])


def _problem(
    sheet: SheetTable,
    records: list[Mapping[str, Any]],
    column: str,
    first: tuple[int, Path],
    again: tuple[int, Path],
    digest: str,
) -> Problem:
    (j, f_first), (i, f_again) = first, again
    sample, other = records[i].get("sample", ""), records[j].get("sample", "")
    return Problem(
        str(sheet.path),
        f"line {sheet.lines[i]}, column '{column}'",
        f"sample '{sample}' has the same {_KIND[column]} data as sample '{other}' "
        f"(line {sheet.lines[j]}): {f_again} and {f_first} have the same content "
        f"(SHA-256 {digest[:12]}...)",
        "every library needs its own files: correct the path of one of the two rows, "
        "or remove the repeated row if it is the same library",
    )
