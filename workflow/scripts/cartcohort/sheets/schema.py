"""Row-by-row validation of the sheets against ``config/schemas/*.schema.yaml``.

Cells are text; each is coerced to the type its column's schema asks for
before validation, and every error is reported with its line and column.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..errors import Problem
from .messages import schema_error_words
from .tsv import SheetTable

#: Response codes of the clinical table.
RESPONSE_CODES = ("CR", "PR", "SD", "PD", "NE")
#: Columns of the sample sheet that become cell metadata (DESIGN.md).
META_COLUMNS = ("patient", "timepoint", "timepoint_day", "compartment", "batch", "sort")
#: Folder holding ``samples.schema.yaml`` and ``clinical.schema.yaml``.
SCHEMA_DIR = Path(__file__).resolve().parents[4] / "config" / "schemas"

Error = tuple[str, str, str]


def load_schema(name: str, schema_dir: str | os.PathLike | None = None) -> dict:
    """Load ``<name>.schema.yaml`` from the schema folder."""
    folder = Path(schema_dir) if schema_dir is not None else SCHEMA_DIR
    with open(folder / f"{name}.schema.yaml") as fh:
        return yaml.safe_load(fh)


def coerce(value: str, prop: Mapping[str, Any]) -> Any:
    """A cell's text as the type its column's schema ``prop`` asks for (unchanged when
    it does not parse, so that validation reports it)."""
    types = prop.get("type", "string")
    types = [types] if isinstance(types, str) else list(types)
    if "string" in types:
        return value
    if "integer" in types or "number" in types:
        try:
            num = float(value)
        except ValueError:
            return value
        if "integer" in types and num.is_integer():
            return int(num)
        return num
    if "boolean" in types:
        low = value.lower()
        if low in ("true", "yes", "1"):
            return True
        if low in ("false", "no", "0"):
            return False
    return value


def _missing_columns(
    table: SheetTable, props: Mapping[str, Any], required: list[str], problems: list[Problem]
) -> list[str]:
    """Required columns absent from the header (reported, with a close name if any)."""
    missing_cols = [c for c in required if c not in table.columns]
    for col in missing_cols:
        close = difflib.get_close_matches(col, table.columns, n=1, cutoff=0.6)
        close = close or [c for c in table.columns if c.lower() == col.lower()]
        fix = (
            f"rename column '{close[0]}' to '{col}'"
            if close
            else f"add a column '{col}' ({props.get(col, {}).get('description', '')})"
        )
        problems.append(
            Problem(
                str(table.path),
                f"line {table.header_line} (header)",
                f"required column '{col}' is missing",
                fix,
            )
        )
    return missing_cols


def _row_errors(
    errors: Iterable[Any],
    inst: Mapping[str, Any],
    row: Mapping[str, str],
    props: Mapping[str, Any],
    missing_cols: list[str],
    skip: set[tuple[str, str]],
) -> list[Error]:
    """``(column, what, fix)`` of the validation errors of one row."""
    errs: list[Error] = []
    for err in errors:
        if err.validator == "required":
            for col in err.validator_value:
                if col not in inst and col not in missing_cols and (col, "required") not in skip:
                    errs.append(
                        (
                            col,
                            "value is empty but the column is required",
                            f"fill in '{col}' on this line",
                        )
                    )
            continue
        if not err.absolute_path:
            errs.append(("", err.message, "correct the row"))
            continue
        col = str(err.absolute_path[0])
        if (col, err.validator) in skip:
            continue
        what, fix = schema_error_words(err, col, row.get(col, ""), props.get(col, {}))
        errs.append((col, what, fix))
    return errs


def validate_table(
    table: SheetTable,
    schema: Mapping[str, Any],
    problems: list[Problem],
    *,
    skip: Iterable[tuple[str, str]] = (),
) -> None:
    """Validate each row against ``schema`` (an object schema for one row).

    Parameters
    ----------
    table
        The parsed sheet.
    schema
        JSON schema of one row (``properties``, ``required``).
    problems
        Where problems are appended, one per missing column and per bad cell.
    skip
        ``(column, validator)`` pairs not to report (checked elsewhere).
    """
    fname = str(table.path)
    props: Mapping[str, Any] = schema.get("properties", {})
    skip = set(skip)
    missing_cols = _missing_columns(table, props, list(schema.get("required", [])), problems)
    validator = jsonschema.Draft202012Validator(schema)
    order = {c: i for i, c in enumerate(table.columns)}
    for row, lineno in zip(table.rows, table.lines):
        inst = {k: coerce(v, props.get(k, {})) for k, v in row.items() if v != ""}
        errs = _row_errors(validator.iter_errors(inst), inst, row, props, missing_cols, skip)
        for col, what, fix in sorted(errs, key=lambda e: order.get(e[0], -1)):
            where = f"line {lineno}, column '{col}'" if col else f"line {lineno}"
            problems.append(Problem(fname, where, what, fix))
