"""Checks of the clinical table, and of the sample sheet's patients against it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import Problem
from .messages import id_problems, unsafe_id_problem, warning_row
from .tsv import SheetTable

logger = logging.getLogger(__name__)

#: The response written for a patient whose response is not known: the patient is
#: kept out of the association and listed in the warnings.
UNKNOWN_RESPONSE = "NA"
#: Spellings of an unknown response that are not :data:`UNKNOWN_RESPONSE` itself.
_NA_LIKE = frozenset({"n/a", "nan", "na", "none", "null", "missing", "unknown", "?", "-", "."})


@dataclass(frozen=True)
class ResponseCodes:
    """The response codes of the config: ``responders``, ``non_responders`` and
    ``associate.exclude_responses`` (known codes left out of the tests)."""

    responders: tuple[str, ...]
    non_responders: tuple[str, ...]
    excluded: tuple[str, ...]

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> ResponseCodes:
        """The codes of a (validated) workflow config."""
        return cls(
            tuple(str(c) for c in config["responders"]),
            tuple(str(c) for c in config["non_responders"]),
            tuple(str(c) for c in config["associate"]["exclude_responses"]),
        )

    @property
    def known(self) -> tuple[str, ...]:
        """Every code the clinical table may use (``NA`` aside), in config order."""
        return tuple(dict.fromkeys(self.responders + self.non_responders + self.excluded))

    def words(self) -> str:
        """The codes of each key, for messages."""
        return (
            f"responders {', '.join(self.responders)}; non_responders "
            f"{', '.join(self.non_responders) or '(none)'}; associate.exclude_responses "
            f"{', '.join(self.excluded) or '(none)'}"
        )


def check_response_codes(codes: ResponseCodes, problems: list[Problem]) -> None:
    """Report config response codes listed both as responder and non-responder, or
    spelled ``NA`` (which marks an unknown response in the clinical table)."""
    both = sorted(set(codes.responders) & set(codes.non_responders))
    if both:
        problems.append(
            Problem(
                "config",
                "keys 'responders' and 'non_responders'",
                f"code(s) {', '.join(both)} are listed in both",
                "list each response code in one of them",
            )
        )
    if UNKNOWN_RESPONSE in codes.known:
        problems.append(
            Problem(
                "config",
                "keys 'responders', 'non_responders', 'associate.exclude_responses'",
                f"'{UNKNOWN_RESPONSE}' is listed as a response code, but in the clinical table "
                "it marks a patient whose response is not known",
                f"remove '{UNKNOWN_RESPONSE}' from the code lists (NA patients are always "
                "left out of the association, and listed in results/tables/warnings.tsv)",
            )
        )


def _response_fix(value: str, codes: ResponseCodes) -> str:
    """How to correct the response ``value`` that is no known code."""
    na_fix = (
        f"write {UNKNOWN_RESPONSE} when the response is not known (the patient is then left "
        "out of the association and listed in results/tables/warnings.tsv)"
    )
    if value.lower() in _NA_LIKE:
        return na_fix
    same = [c for c in codes.known if c.lower() == value.lower()]
    if same:
        return f"write '{same[0]}'"
    return (
        f"write one of {', '.join(codes.known)}, add '{value}' to responders, non_responders "
        f"or associate.exclude_responses in the config, or {na_fix}"
    )


def check_responses(table: SheetTable, codes: ResponseCodes, problems: list[Problem]) -> None:
    """Report patients without a response label, or with a code the config does not
    list (``NA``, an unknown response, is allowed)."""
    if "response" not in table.columns:
        return
    for row, lineno in zip(table.rows, table.lines):
        value = row.get("response", "")
        where = f"line {lineno}, column 'response'"
        pid = row.get("patient", "")
        if not value:
            what = f"patient '{pid}' has no response label"
            problems.append(Problem(str(table.path), where, what, _response_fix("na", codes)))
        elif value != UNKNOWN_RESPONSE and value not in codes.known:
            what = (
                f"response '{value}' of patient '{pid}' is none of the codes of the config "
                f"({codes.words()})"
            )
            problems.append(Problem(str(table.path), where, what, _response_fix(value, codes)))


def check_response_override(
    table: SheetTable, column: str, codes: ResponseCodes, problems: list[Problem]
) -> None:
    """Report an override column (config ``response_override``) absent from the clinical
    table, or a value in it that is no response code of the config (empty or ``NA``: no
    override; a code of ``associate.exclude_responses`` leaves the patient out)."""
    if not column:
        return
    if column not in table.columns:
        problems.append(Problem(
            str(table.path), f"column '{column}'", "the column named by config "
            "response_override is missing", "add the per-patient override column (empty "
            "where the response code stands), or set response_override to ''"))
        return
    for row, lineno in zip(table.rows, table.lines):
        value = row.get(column, "")
        if value and value != UNKNOWN_RESPONSE and value not in codes.known:
            problems.append(Problem(
                str(table.path), f"line {lineno}, column '{column}'",
                f"override '{value}' of patient '{row.get('patient', '')}' is none of the "
                f"codes of the config ({codes.words()})", _response_fix(value, codes)))


def response_na_warnings(
    clinical: pd.DataFrame, samples: pd.DataFrame, excluded: set[str], clinical_path: Path
) -> list[dict[str, Any]]:
    """The warning row of the cohort's patients whose response is ``NA`` (none when
    there are none)."""
    if "patient" not in samples.columns or "response" not in clinical.columns:
        return []
    cohort = set(samples.loc[[s not in excluded for s in samples.index], "patient"])
    na = sorted(p for p in clinical.index[clinical["response"] == UNKNOWN_RESPONSE] if p in cohort)
    if not na:
        return []
    shown = ", ".join(na[:20]) + (f" and {len(na) - 20} more" if len(na) > 20 else "")
    return [
        warning_row(
            step="clinical",
            check="response_na",
            count=len(na),
            detail=(
                f"{len(na)} patient(s) have response NA in {clinical_path.name} ({shown}): "
                "they are left out of the association with response, the pseudobulk DE and "
                "the scorecards' responder reference"
            ),
            action=(
                f"fill in their response in {clinical_path.name} when it is known; "
                "nothing to do otherwise"
            ),
        )
    ]


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
        unsafe = unsafe_id_problem(pid, "patient", lineno, fname)
        if unsafe is not None:
            problems.append(unsafe)
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
