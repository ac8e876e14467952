"""Checks of the sample sheet's rows: ids, paths, and the files of each library.

A row's paths are resolved against the sheet's folder; its GEX and TCR files
are located, sniffed (:mod:`.sniff`, :mod:`.sniff_vdj`) and checked to share
cell barcodes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import Problem
from .barcodes import match_barcodes
from .cache import is_fresh, stamps
from .contig_findings import FIX_NO_TCR
from .duplicates import same_content_problems
from .features import CAR_EXPECTED_COLUMN, car_expected, car_feature_issues
from .locate import GexSource, LocateError, VdjKind, locate_gex, locate_vdj, resolve_path
from .messages import RowCtx, file_problems, id_problems, missing_like_id, unsafe_id_problem
from .sniff import Issue, inspect_gex
from .sniff_vdj import inspect_vdj
from .tsv import SheetTable

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- ids and paths of a row


def _check_ids(
    row: Mapping[str, str],
    lineno: int,
    fname: str,
    first_line: dict[str, int],
    problems: list[Problem],
) -> None:
    """Report unsafe or missing-like sample, patient and timepoint ids, and repeated
    sample ids."""
    for column in ("sample", "patient", "timepoint"):
        value = row.get(column, "")
        if not value:
            continue
        unsafe = unsafe_id_problem(value, column, lineno, fname)
        if unsafe is not None:
            problems.append(unsafe)
        if column == "sample":
            problems += id_problems(
                value,
                "sample",
                lineno,
                fname,
                first_line,
                repeated="sample id '{value}' is also used on line {line}",
                fix="give every library its own sample id",
            )
            continue
        na_like = missing_like_id(value, column)
        if na_like:
            problems.append(Problem(fname, f"line {lineno}, column '{column}'", *na_like))


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
    warnings: list[dict[str, Any]],
    car_features: Sequence[str] = (),
    min_tcr_gex_overlap: float = 0.1,
) -> list[Problem]:
    """Locate (and with ``check_files``, check) the files of one row, through the cache.

    ``rec['gex']`` becomes the concrete GEX file or folder, ``rec['vdj']`` the
    TCR file of a cellranger multi folder when the sheet leaves it empty. Warning
    rows of the row's files are appended to ``warnings`` (replayed from the cache).
    """
    sample_problems: list[Problem] = []
    key = f"{rec['gex']}\t{rec['vdj']}"
    hit = cache.get(key) if cache is not None else None
    # the CAR features the row's library must hold (checked in its file)
    need = list(car_features) if car_expected(row.get(CAR_EXPECTED_COLUMN)) else []
    if (
        check_files
        and hit
        and is_fresh(hit)
        and set(need) <= set(hit.get("car_checked", []))
        and hit.get("tcr_gex_overlap", 1.0) >= min_tcr_gex_overlap
    ):
        rec["gex"], rec["vdj"] = hit["gex"], hit["vdj"]
        warnings.extend(dict(w) for w in hit.get("warnings", []))
    elif check_files and row.get("gex", ""):
        given = Path(rec["gex"])
        row_warnings: list[dict[str, Any]] = []
        overlap: dict[str, float] = {}
        sample_problems = check_row_files(
            sheet,
            row,
            rec,
            lineno,
            warnings=row_warnings,
            car_features=need,
            min_tcr_gex_overlap=min_tcr_gex_overlap,
            overlap=overlap,
        )
        warnings.extend(row_warnings)
        if cache is not None and not sample_problems:
            cache[key] = {
                "gex": rec["gex"],
                "vdj": rec["vdj"],
                "stamps": stamps(given, Path(rec["gex"]), rec["vdj"]),
                "warnings": row_warnings,
                "car_checked": need,
                **overlap,
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
    # optional column, true when absent or empty (samples.schema.yaml)
    df[CAR_EXPECTED_COLUMN] = [car_expected(v) for v in df.get(CAR_EXPECTED_COLUMN, [""] * len(df))]
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
    warnings: list[dict[str, Any]] | None = None,
    car_features: Sequence[str] = (),
    min_tcr_gex_overlap: float = 0.1,
) -> pd.DataFrame | None:
    """Check every row of the sample sheet; return the resolved sheet.

    Problems of the files of an ``excluded`` sample are logged as warnings
    instead of reported, so that a corrupt library can be left out. Warning rows
    of the rows' files are appended to ``warnings``. With ``check_files``, every
    library whose ``car_expected`` is true (the default) must hold every entry of
    ``car_features`` (config ``car_features``), and at least ``min_tcr_gex_overlap``
    of the TCR cells of a library must have a GEX cell (config ``load.min_tcr_gex_overlap``).
    """
    fname = str(sheet.path)
    first_line: dict[str, int] = {}
    first_path: dict[tuple[str, str], tuple[str, int]] = {}
    records = []
    row_warnings: list[dict[str, Any]] = [] if warnings is None else warnings
    for row, lineno in zip(sheet.rows, sheet.lines):
        sample = row.get("sample", "")
        _check_ids(row, lineno, fname, first_line, problems)
        rec = _resolve_row_paths(row, lineno, sheet, first_path, problems)
        sample_problems = _check_row(
            sheet,
            row,
            rec,
            lineno,
            check_files=check_files,
            cache=cache,
            warnings=row_warnings,
            car_features=car_features,
            min_tcr_gex_overlap=min_tcr_gex_overlap,
        )
        if sample in excluded:
            for p in sample_problems:
                logger.warning("excluded sample %s: %s", sample, p)
        else:
            problems.extend(sample_problems)
        records.append(rec)
    if not records:
        return None
    if check_files:
        problems += same_content_problems(sheet, records, excluded, cache)
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
    min_fraction: float,
) -> tuple[float, Problem | None]:
    """The fraction of the TCR cells that have a GEX cell, and the problem when it is
    zero or below ``min_fraction`` (the files of two libraries paired)."""
    matched = match_barcodes(tcr_barcodes, gex_barcodes)
    fraction = len(matched) / len(tcr_barcodes)
    logger.debug(
        "sample %s: %d of %d TCR cells have a GEX cell", ctx.sample, len(matched), len(tcr_barcodes)
    )
    if matched and fraction >= min_fraction:
        return fraction, None
    ex_t = next(b for b in sorted(tcr_barcodes) if b not in matched)
    ex_g = gex_barcodes[0]
    fix = "pair the TCR and GEX files of the same library (same sample row), or leave 'vdj' empty"
    if not matched:
        what = (
            f"the TCR file {vdj_file} shares no cell barcode with the GEX file {gex_file} "
            f"(e.g. TCR '{ex_t}' vs GEX '{ex_g}')"
        )
    else:
        what = (
            f"only {len(matched)} of the {len(tcr_barcodes)} TCR cells of {vdj_file} "
            f"({fraction:.1%}) have a barcode among the {len(gex_barcodes)} cells of the GEX "
            f"file {gex_file}, below load.min_tcr_gex_overlap = {min_fraction:g}: the files "
            f"of two different libraries look paired (e.g. TCR '{ex_t}' has no GEX cell)"
        )
        fix += "; if they do belong together, lower load.min_tcr_gex_overlap in the config"
    return fraction, Problem(str(ctx.sheet), f"line {ctx.line}, column 'vdj'", what, fix)


def _multi_vdj_fix(issues: list[Issue], multi_folder: bool) -> list[Issue]:
    """``issues`` of a contig file; when the file came from a cellranger multi folder
    (the sheet's ``vdj`` is empty), "no TCR" is said by pointing ``gex`` at the count matrix."""
    if not multi_folder:
        return issues
    fix = (
        "if this library has no TCR data, point 'gex' at its "
        "per_sample_outs/<id>/count/sample_filtered_feature_bc_matrix.h5 so that vdj_t/ "
        "is not used; otherwise check the Cell Ranger run"
    )
    return [(w, what, fix if f == FIX_NO_TCR else f) for w, what, f in issues]


def check_row_files(
    sheet: SheetTable,
    row: Mapping[str, str],
    rec: dict[str, Any],
    lineno: int,
    *,
    warnings: list[dict[str, Any]] | None = None,
    car_features: Sequence[str] = (),
    min_tcr_gex_overlap: float = 0.1,
    overlap: dict[str, float] | None = None,
) -> list[Problem]:
    """Locate and sniff the GEX and TCR files of one row; check they pair up, and that
    the GEX file holds every entry of ``car_features`` (by feature name or id).

    The TCR file is checked in full (streaming); at least ``min_tcr_gex_overlap`` of
    its TCR cells must have a GEX cell. ``overlap`` (when given) receives that
    fraction as ``tcr_gex_overlap``, for the cache.

    ``warnings`` (when given) receives the warning rows
    (:func:`~.messages.warning_row`) of inputs carried through; they are cached
    with the row by the caller.

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
            facts, issues, gfile = inspect_gex(
                source, want_barcodes=vdj_src is not None, want_features=bool(car_features)
            )
        except LocateError as err:
            issues, gfile = [("", err.what, err.fix)], source.path
        if car_features and not issues and facts.feature_names is not None:
            names, ids = facts.feature_names, facts.feature_ids or []
            issues = car_feature_issues(car_features, names, ids, where=facts.features_where)
        out.extend(file_problems(gfile, issues, RowCtx(sheet.path, sample, lineno, "gex")))
    if vdj_src is not None:
        vctx = RowCtx(sheet.path, sample, lineno, "vdj")
        tcr_barcodes, vissues = inspect_vdj(*vdj_src)
        vissues = _multi_vdj_fix(vissues, multi_folder=not row.get("vdj", ""))
        out.extend(file_problems(vdj_src[1], vissues, vctx))
        if facts is not None and facts.barcodes is not None and tcr_barcodes and not vissues:
            assert source is not None  # facts come from it
            fraction, problem = _overlap_problem(
                facts.barcodes, source.path, vdj_src[1], tcr_barcodes, vctx, min_tcr_gex_overlap
            )
            if overlap is not None:
                overlap["tcr_gex_overlap"] = fraction
            if problem is not None:
                out.append(problem)
    return out
