"""The wording of sheet problems: unsafe ids, schema errors, file problems of a row.

Messages say what is wrong and how to fix it in the user's words (columns,
line numbers, "a whole number"), not in JSON-schema terms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Problem
from ..vocab import ID_RULE, MAX_ID_LENGTH, SAMPLE_ID_PATTERN, SAMPLE_ID_RE  # noqa: F401
from .sniff import Issue

#: Ids the workflow's tables cannot hold: ``write_table`` writes missing values as
#: ``NA`` and ``read_table`` reads ``NA`` back as missing, so an id spelled ``NA``
#: would become a missing value in every table.
MISSING_LIKE_IDS = ("NA",)

_CHAR_NAMES = {
    " ": "space",
    "\t": "tab",
    "/": "slash '/'",
    "\\": "backslash '\\'",
    ";": "semicolon ';'",
    "|": "pipe '|'",
    "&": "ampersand '&'",
    "$": "dollar '$'",
    "`": "backtick '`'",
    "*": "asterisk '*'",
    "?": "question mark '?'",
    "(": "parenthesis '('",
    ")": "parenthesis ')'",
    "<": "'<'",
    ">": "'>'",
    '"': "double quote",
    "'": "single quote",
    "!": "'!'",
    "{": "brace '{'",
    "}": "brace '}'",
    "[": "bracket '['",
    "]": "bracket ']'",
    "~": "tilde '~'",
    "#": "hash '#'",
    "%": "percent '%'",
    ",": "comma ','",
    ":": "colon ':'",
    "=": "'='",
    "+": "plus '+'",
    "@": "'@'",
    "^": "caret '^'",
}


#: Columns of a warning row (``results/tables/warnings.tsv``), in order.
WARNING_COLUMNS = ("sample", "step", "check", "count", "detail", "action")


def warning_row(
    *, sample: str = "", step: str, check: str, count: int, detail: str, action: str
) -> dict[str, Any]:
    """One row of ``warnings.tsv``: an input carried through that the user should know of.

    Parameters
    ----------
    sample
        The library the warning is about; ``""`` for a cohort-wide warning.
    step
        Where it was found (``sheets``, ``clinical``, ``load``, ``qc``, ``merge``...).
    check
        Short snake_case id of the check (e.g. ``response_na``).
    count
        How many genes, cells, patients... are affected.
    detail
        One sentence: what was found.
    action
        What to do about it.

    Returns
    -------
    dict
        The six :data:`WARNING_COLUMNS`, in order.
    """
    return dict(
        zip(WARNING_COLUMNS, (str(sample), step, check, int(count), detail, action), strict=True)
    )


def describe_unsafe_id(value: str) -> str:
    """Say what makes ``value`` an unsafe sample id ('' if it is safe)."""
    if SAMPLE_ID_RE.match(value):
        return ""
    parts = []
    if value and not (value[0].isascii() and value[0].isalnum()):
        parts.append(f"starts with '{value[0]}'")
    bad = []
    for ch in dict.fromkeys(value):
        if ch.isascii() and (ch.isalnum() or ch in "_.-"):
            continue
        bad.append(
            _CHAR_NAMES.get(ch, f"non-ASCII character '{ch}'" if not ch.isascii() else f"'{ch}'")
        )
    if bad:
        parts.append("contains " + ", ".join(bad))
    if len(value) > MAX_ID_LENGTH:
        parts.append(f"is {len(value)} characters long")
    if not value:
        parts.append("is empty")
    return "; ".join(parts)


def unsafe_id_problem(value: str, column: str, lineno: int, fname: str) -> Problem | None:
    """The problem of an id on line ``lineno`` of ``fname`` that breaks :data:`ID_RULE`."""
    why = describe_unsafe_id(value)
    if not why:
        return None
    return Problem(
        fname, f"line {lineno}, column '{column}'", f"{column} id '{value}' {why}", ID_RULE
    )


def missing_like_id(value: str, column: str) -> tuple[str, str] | None:
    """``(what, fix)`` when ``value`` of id column ``column`` reads as missing in the
    workflow's tables (``NA``); ``None`` otherwise."""
    if value not in MISSING_LIKE_IDS:
        return None
    return (
        f"{column} id '{value}' is how the workflow's tables write a missing value, so "
        "it would be read back as missing",
        f"rename the {column} (e.g. '{value}1' or '{value.lower()}')",
    )


def id_problems(
    value: str,
    column: str,
    lineno: int,
    fname: str,
    first: dict[str, int],
    *,
    repeated: str,
    fix: str,
) -> list[Problem]:
    """Problems of an id on line ``lineno`` that reads as missing (``NA``) or was
    already used (``first``: id -> first line, updated); ``repeated`` is formatted
    with ``value`` and ``line``."""
    where = f"line {lineno}, column '{column}'"
    out = []
    na_like = missing_like_id(value, column)
    if na_like:
        out.append(Problem(fname, where, *na_like))
    if value in first:
        out.append(Problem(fname, where, repeated.format(value=value, line=first[value]), fix))
    else:
        first[value] = lineno
    return out


def type_words(t: Any) -> str:
    """A JSON-schema type (or list of types) in words: ``a whole number``, ``text``."""
    words = {
        "number": "a number",
        "integer": "a whole number",
        "string": "text",
        "boolean": "true/false",
    }
    ts = [t] if isinstance(t, str) else list(t)
    return " or ".join(words.get(x, x) for x in ts)


def schema_error_words(err: Any, col: str, raw: str, prop: Mapping[str, Any]) -> tuple[str, str]:
    """``(what, fix)`` of one jsonschema ``ValidationError`` about the text ``raw``
    in column ``col``, whose schema is ``prop``."""
    desc = prop.get("description", "")
    if err.validator == "type":
        what = f"'{raw}' is not {type_words(err.validator_value)}"
        fix = (
            f"write {type_words(err.validator_value)} ({desc})"
            if desc
            else f"write {type_words(err.validator_value)}"
        )
    elif err.validator == "enum":
        allowed = "/".join(str(x) for x in err.validator_value)
        what = f"'{raw}' is not one of {allowed}"
        upper = [x for x in err.validator_value if str(x).lower() == raw.lower()]
        fix = f"write '{upper[0]}'" if upper else f"use one of {allowed}"
        if desc:
            fix += f" ({desc})"
    elif err.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        what = f"'{raw}' is out of range ({err.message})"
        fix = f"correct the value ({desc})" if desc else "correct the value"
    elif err.validator == "minLength":
        what = "value is empty but the column is required"
        fix = f"fill in '{col}' on this line"
    elif err.validator == "pattern":
        what = f"'{raw}' does not match the pattern {err.validator_value}"
        fix = f"correct the value ({desc})" if desc else "correct the value"
    else:
        what, fix = err.message, f"correct the value ({desc})" if desc else "correct it"
    return what, fix


@dataclass
class RowCtx:
    """The sheet row a file problem comes from (sample, line and column)."""

    sheet: Path
    sample: str
    line: int
    column: str

    def tag(self) -> str:
        return f"sample '{self.sample}', {self.sheet.name} line {self.line}, column '{self.column}'"


def file_problems(file: Path, issues: Iterable[Issue], ctx: RowCtx) -> list[Problem]:
    """Problems naming ``file``, each tagged with the sheet row it comes from."""
    return [Problem(str(file), where, f"{what} ({ctx.tag()})", fix) for where, what, fix in issues]
