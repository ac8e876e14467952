"""Checks of the sample sheet's rows: ids, paths, and the files of each library.

A row's paths are resolved against the sheet's folder; its GEX and TCR files
are located, sniffed (:mod:`.sniff`, :mod:`.sniff_vdj`) and checked to share
cell barcodes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import Problem
from .barcodes import match_barcodes
from .cache import is_fresh, stamps
from .locate import GexSource, LocateError, VdjKind, locate_gex, locate_vdj
from .messages import RowCtx, describe_unsafe_id, file_problems, id_problems
from .sniff import inspect_gex
from .sniff_vdj import VDJ_CHECK_ROWS, inspect_vdj
from .tsv import SheetTable

logger = logging.getLogger(__name__)


def resolve_path(value: str, folder: Path) -> Path:
    """``value`` (``~`` and ``$VARS`` expanded) as an absolute path, relative to ``folder``."""
    p = Path(os.path.expandvars(os.path.expanduser(value)))
    if not p.is_absolute():
        p = folder / p
    return Path(os.path.normpath(os.path.abspath(p)))


# --------------------------------------------------------------------------- ids and paths of a row


def _check_sample_id(
    sample: str, lineno: int, fname: str, first_line: dict[str, int], problems: list[Problem]
) -> None:
    """Report an unsafe, missing-like or repeated sample id."""
    why = describe_unsafe_id(sample)
    if why:
        problems.append(
            Problem(
                fname,
                f"line {lineno}, column 'sample'",
                f"sample id '{sample}' {why}",
                "use only letters, digits, '_', '.' and '-', starting with a "
                "letter or digit (ids become file names and shell arguments)",
            )
        )
    problems += id_problems(
        sample,
        "sample",
        lineno,
        fname,
        first_line,
        repeated="sample id '{value}' is also used on line {line}",
        fix="give every library its own sample id",
    )


def _resolve_row_paths(
    row: Mapping[str, str],
    lineno: int,
    sheet: SheetTable,
    first_path: dict[tuple[str, str], tuple[str, int]],
    problems: list[Problem],
) -> dict[str, Any]:
    """The row with absolute ``gex``/``vdj`` paths; a path used twice is reported."""
    rec = dict(row)
    sample = row.get("sample", "")
    for col in ("gex", "vdj"):
        value = row.get(col, "")
        if not value:
            rec[col] = ""
            continue
        resolved = resolve_path(value, sheet.path.parent)
        rec[col] = str(resolved)
        key = (col, str(resolved))
        if key in first_path:
            other, oline = first_path[key]
            problems.append(
                Problem(
                    str(sheet.path),
                    f"line {lineno}, column '{col}'",
                    f"path '{value}' is also used by sample '{other}' on line {oline}",
                    "every library needs its own files; correct the copied path",
                )
            )
        else:
            first_path[key] = (sample, lineno)
    return rec


def _check_row(
    sheet: SheetTable,
    row: Mapping[str, str],
    rec: dict[str, Any],
    lineno: int,
    *,
    check_files: bool,
    cache: dict[str, Any] | None,
) -> list[Problem]:
    """Locate (and with ``check_files``, check) the files of one row, through the cache.

    ``rec['gex']`` becomes the concrete GEX file or folder, ``rec['vdj']`` the
    TCR file of a cellranger multi folder when the sheet leaves it empty.
    """
    sample_problems: list[Problem] = []
    key = f"{rec['gex']}\t{rec['vdj']}"
    hit = cache.get(key) if cache is not None else None
    if check_files and hit and is_fresh(hit):
        rec["gex"], rec["vdj"] = hit["gex"], hit["vdj"]
    elif check_files and row.get("gex", ""):
        given = Path(rec["gex"])
        sample_problems = check_row_files(sheet, row, rec, lineno)
        if cache is not None and not sample_problems:
            cache[key] = {
                "gex": rec["gex"],
                "vdj": rec["vdj"],
                "stamps": stamps(given, Path(rec["gex"]), rec["vdj"]),
            }
    elif rec["gex"] and not check_files:
        p = Path(rec["gex"])
        if p.is_dir():
            try:
                src = locate_gex(p)
                rec["gex"] = str(src.path)
                if not rec["vdj"] and src.default_vdj is not None:
                    rec["vdj"] = str(src.default_vdj)
            except LocateError:
                pass
    return sample_problems


def _samples_frame(sheet: SheetTable, records: list[dict[str, Any]]) -> pd.DataFrame | None:
    """The checked rows as the ``samples`` table of :func:`~.prepare.prepare_inputs`."""
    # unique names: a duplicated header column is already reported by read_tsv
    cols = list(dict.fromkeys(sheet.columns))
    for c in ("timepoint_day", "vdj"):
        if c not in cols:
            cols.append(c)
    df = pd.DataFrame.from_records(records, columns=cols)
    if "timepoint_day" in df:
        df["timepoint_day"] = pd.to_numeric(
            df["timepoint_day"].replace("", np.nan), errors="coerce"
        ).astype(float)
    df["vdj"] = df["vdj"].fillna("").astype(str)
    for c in df.columns:
        if c != "timepoint_day":
            df[c] = df[c].fillna("").astype(str)
    if "sample" not in df:
        return None
    df = df.set_index("sample", drop=True)
    df.index.name = "sample"
    return df


def check_samples(
    sheet: SheetTable,
    problems: list[Problem],
    *,
    check_files: bool,
    excluded: set[str],
    cache: dict[str, Any] | None = None,
) -> pd.DataFrame | None:
    """Check every row of the sample sheet; return the resolved sheet.

    Problems of the files of an ``excluded`` sample are logged as warnings
    instead of reported, so that a corrupt library can be left out.
    """
    fname = str(sheet.path)
    first_line: dict[str, int] = {}
    first_path: dict[tuple[str, str], tuple[str, int]] = {}
    records = []
    for row, lineno in zip(sheet.rows, sheet.lines):
        sample = row.get("sample", "")
        if sample:
            _check_sample_id(sample, lineno, fname, first_line, problems)
        rec = _resolve_row_paths(row, lineno, sheet, first_path, problems)
        sample_problems = _check_row(sheet, row, rec, lineno, check_files=check_files, cache=cache)
        if sample in excluded:
            for p in sample_problems:
                logger.warning("excluded sample %s: %s", sample, p)
        else:
            problems.extend(sample_problems)
        records.append(rec)
    if not records:
        return None
    return _samples_frame(sheet, records)


# --------------------------------------------------------------------------- one row's files


def _locate_row_path(
    sheet: SheetTable,
    lineno: int,
    column: str,
    given: str,
    resolved: Path,
    fix_missing: str,
    locate: Callable[[Path], Any],
    out: list[Problem],
) -> Any:
    """``locate(resolved)`` for a row's ``column`` (``given`` as the sheet spells it);
    ``None`` (problem appended to ``out``) when the path does not exist or its layout
    is not recognised."""
    where = f"line {lineno}, column '{column}'"
    if not resolved.exists():
        out.append(
            Problem(
                str(sheet.path),
                where,
                f"'{given}' does not exist (resolved to {resolved})",
                fix_missing,
            )
        )
        return None
    try:
        return locate(resolved)
    except LocateError as err:
        out.append(Problem(str(sheet.path), where, err.what, err.fix))
        return None


def _gex_source(
    sheet: SheetTable, row: Mapping[str, str], rec: dict[str, Any], lineno: int, out: list[Problem]
) -> GexSource | None:
    """The located GEX input of a row (problems appended to ``out`` when not found)."""
    fix = (
        f"correct the path; relative paths are relative to the sheet's folder "
        f"{sheet.path.parent}"
    )
    gex = Path(rec["gex"])
    source = _locate_row_path(sheet, lineno, "gex", row["gex"], gex, fix, locate_gex, out)
    if source is None:
        return None
    rec["gex"] = str(source.path)
    if not rec["vdj"] and source.default_vdj is not None:
        rec["vdj"] = str(source.default_vdj)
        logger.info(
            "sample %s: TCR contigs from the cellranger multi folder: %s",
            row.get("sample", ""),
            source.default_vdj,
        )
    return source


def _vdj_source(
    sheet: SheetTable, row: Mapping[str, str], rec: dict[str, Any], lineno: int, out: list[Problem]
) -> tuple[VdjKind, Path] | None:
    """The located TCR input of a row (``None`` when there is none or it is not found)."""
    if not rec["vdj"]:
        return None
    fix = (
        f"correct the path (relative paths are relative to "
        f"{sheet.path.parent}), or leave 'vdj' empty for a library without TCR"
    )
    vdj = Path(rec["vdj"])
    return _locate_row_path(sheet, lineno, "vdj", row.get("vdj", ""), vdj, fix, locate_vdj, out)


def _overlap_problem(
    gex_barcodes: list[str],
    gex_file: Path,
    vdj_file: Path,
    tcr_barcodes: set[str],
    ctx: RowCtx,
) -> Problem | None:
    """The problem of a TCR file that shares no cell barcode with its GEX file."""
    matched = match_barcodes(tcr_barcodes, gex_barcodes)
    if matched:
        logger.debug(
            "sample %s: %d of %d TCR barcodes have a GEX cell",
            ctx.sample,
            len(matched),
            len(tcr_barcodes),
        )
        return None
    ex_t = sorted(tcr_barcodes)[0]
    ex_g = gex_barcodes[0]
    return Problem(
        str(ctx.sheet),
        f"line {ctx.line}, column 'vdj'",
        f"the TCR file {vdj_file} shares no cell barcode with the GEX "
        f"file {gex_file} (e.g. TCR '{ex_t}' vs "
        f"GEX '{ex_g}')",
        "pair the TCR and GEX files of the same library (same sample " "row), or leave 'vdj' empty",
    )


def check_row_files(
    sheet: SheetTable, row: Mapping[str, str], rec: dict[str, Any], lineno: int
) -> list[Problem]:
    """Locate and sniff the GEX and TCR files of one row; check they pair up.

    Returns
    -------
    list of Problem
        Problems of the row's paths (naming the sheet) and of its files
        (naming the file, tagged with the row).
    """
    sample = row.get("sample", "")
    out: list[Problem] = []
    source = _gex_source(sheet, row, rec, lineno, out)
    vdj_src = _vdj_source(sheet, row, rec, lineno, out)
    facts = None
    if source is not None:
        try:
            facts, issues, gfile = inspect_gex(source, want_barcodes=vdj_src is not None)
        except LocateError as err:
            issues, gfile = [("", err.what, err.fix)], source.path
        out.extend(file_problems(gfile, issues, RowCtx(sheet.path, sample, lineno, "gex")))
    if vdj_src is not None:
        vctx = RowCtx(sheet.path, sample, lineno, "vdj")
        tcr_barcodes, vissues = inspect_vdj(*vdj_src, max_rows=VDJ_CHECK_ROWS)
        out.extend(file_problems(vdj_src[1], vissues, vctx))
        if facts is not None and facts.barcodes is not None and tcr_barcodes and not vissues:
            assert source is not None  # facts come from it
            problem = _overlap_problem(facts.barcodes, source.path, vdj_src[1], tcr_barcodes, vctx)
            if problem is not None:
                out.append(problem)
    return out
