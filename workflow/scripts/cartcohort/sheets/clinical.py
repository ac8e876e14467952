"""Checks of the clinical table, and of the sample sheet's patients against it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import Problem
from .messages import id_problems
from .tsv import SheetTable

logger = logging.getLogger(__name__)


def check_clinical(
    table: SheetTable, schema: Mapping[str, Any], problems: list[Problem]
) -> pd.DataFrame | None:
    """Report repeated (or missing-like) patients; return the table indexed by patient,
    numeric columns of ``schema`` as float."""
    fname = str(table.path)
    if "patient" not in table.columns:
        return None
    first: dict[str, int] = {}
    for row, lineno in zip(table.rows, table.lines):
        pid = row.get("patient", "")
        if not pid:
            continue
        problems += id_problems(
            pid,
            "patient",
            lineno,
            fname,
            first,
            repeated="patient '{value}' is also listed on line {line}",
            fix="keep one row per patient",
        )
    if not table.rows:
        return None
    # unique names: a duplicated header column is already reported by read_tsv
    df = pd.DataFrame.from_records(table.rows, columns=list(dict.fromkeys(table.columns)))
    props = schema.get("properties", {})
    for c in df.columns:
        types = props.get(c, {}).get("type", "string")
        types = [types] if isinstance(types, str) else list(types)
        if c in props and ("number" in types or "integer" in types) and "string" not in types:
            df[c] = pd.to_numeric(df[c].replace("", np.nan), errors="coerce").astype(float)
        else:
            df[c] = df[c].astype(str)
    df = df.drop_duplicates("patient", keep="first").set_index("patient", drop=True)
    df.index.name = "patient"
    return df


def cross_check(
    sheet: SheetTable,
    samples: pd.DataFrame,
    clinical: pd.DataFrame,
    excluded: set[str],
    clinical_path: Path,
    problems: list[Problem],
) -> None:
    """Report sheet patients missing from the clinical table; log patients without
    a sample."""
    if "patient" not in samples.columns:
        return
    known = set(clinical.index)
    lines: dict[str, list[int]] = {}
    for row, lineno in zip(sheet.rows, sheet.lines):
        pid = row.get("patient", "")
        if pid and row.get("sample", "") not in excluded and pid not in known:
            lines.setdefault(pid, []).append(lineno)
    for pid, lns in lines.items():
        also = f" (also lines {', '.join(map(str, lns[1:]))})" if len(lns) > 1 else ""
        problems.append(
            Problem(
                str(sheet.path),
                f"line {lns[0]}, column 'patient'",
                f"patient '{pid}' is not in the clinical table {clinical_path}{also}",
                f"add a row for '{pid}' to {clinical_path.name} (response NE if not "
                "evaluable) or correct the patient id",
            )
        )
    used = set(samples["patient"])
    unused = sorted(known - used)
    if unused:
        logger.warning(
            "%s: %d patient(s) have no sample in %s and are ignored: %s",
            clinical_path,
            len(unused),
            sheet.path.name,
            ", ".join(unused),
        )
