"""The sample sheet's own TSV parser: keeps the file's line numbers for messages.

pandas would renumber rows, guess types (``001`` -> ``1``) and stop at the
first layout problem; this parser keeps every value as text, skips blank and
``#`` comment lines, and reports every layout problem of the file at once.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Problem
from .textfiles import GZIP_MAGIC


@dataclass
class SheetTable:
    """A parsed sheet: its columns, its rows as text and their line numbers."""

    path: Path
    header_line: int = 1
    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def strip_value(v: str) -> str:
    """A cell without surrounding blanks and double quotes."""
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] == '"':
        v = v[1:-1].strip()
    return v


def label_key(label: str) -> str:
    """The config key naming the file of ``label`` (``sample sheet``/``clinical table``)."""
    return "samples" if label == "sample sheet" else "clinical"


def _row_word(label: str) -> str:
    return "library" if label == "sample sheet" else "patient"


def _read_text(path: Path, label: str, problems: list[Problem]) -> str | None:
    """The file's text (gunzipped, BOM removed), or ``None`` after reporting why not."""
    fname = str(path)
    if not path.exists():
        problems.append(
            Problem(
                fname,
                "",
                f"the {label} does not exist",
                f"create it or correct the path in config.yaml (key '{label_key(label)}')",
            )
        )
        return None
    if path.is_dir():
        problems.append(
            Problem(
                fname, "", f"the {label} is a folder, not a file", "give the path of the TSV file"
            )
        )
        return None
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        problems.append(
            Problem(
                fname,
                "",
                f"is not UTF-8 text ({err.reason} at byte {err.start})",
                "save the sheet as UTF-8 tab-separated text",
            )
        )
    except (OSError, EOFError, zlib.error) as err:
        problems.append(Problem(fname, "", f"cannot be read ({err})", "check the file"))
    return None


def _parse_header(
    fields: list[str], line: str, lineno: int, fname: str, problems: list[Problem]
) -> list[str] | None:
    """The column names (trailing empty ones dropped); ``None`` for a file that is
    not tab-separated. Unnamed and repeated columns are reported."""
    header = fields
    while header and header[-1] == "":
        header.pop()
    if len(header) == 1 and ("," in line or ";" in line):
        sep = "comma" if "," in line else "semicolon"
        problems.append(
            Problem(
                fname,
                f"line {lineno} (header)",
                f"has a single column: the file looks {sep}-separated",
                "save it as tab-separated values (TSV)",
            )
        )
        return None
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name == "":
            problems.append(
                Problem(
                    fname,
                    f"line {lineno} (header)",
                    f"column {i} has no name",
                    "name every column",
                )
            )
        elif name in seen:
            problems.append(
                Problem(
                    fname,
                    f"line {lineno} (header)",
                    f"column '{name}' appears twice (columns {seen[name]} " f"and {i})",
                    "keep one of them",
                )
            )
        else:
            seen[name] = i
    return header


def _fit_row(
    fields: list[str], header: list[str], lineno: int, fname: str, problems: list[Problem]
) -> list[str] | None:
    """``fields`` padded or trimmed to the header; ``None`` (reported) when the line
    has non-empty fields beyond the header."""
    if len(fields) > len(header):
        extra = fields[len(header) :]
        if any(extra):
            problems.append(
                Problem(
                    fname,
                    f"line {lineno}",
                    f"has {len(fields)} tab-separated fields but the header has " f"{len(header)}",
                    "remove the extra fields, or check for a tab inside a value",
                )
            )
            return None
        return fields[: len(header)]
    if len(fields) < len(header):
        return fields + [""] * (len(header) - len(fields))
    return fields


def read_tsv(path: Path, label: str, problems: list[Problem]) -> SheetTable | None:
    """Parse a TSV keeping the file's line numbers; report layout problems.

    Parameters
    ----------
    path
        The sheet (plain or gzip-compressed UTF-8 text).
    label
        ``sample sheet`` or ``clinical table``, for the messages.
    problems
        Where problems are appended.

    Returns
    -------
    SheetTable or None
        ``None`` when the file cannot be parsed at all (missing, not text,
        not tab-separated, empty).
    """
    fname = str(path)
    text = _read_text(path, label, problems)
    if text is None:
        return None
    table = SheetTable(path)
    header: list[str] | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [strip_value(v) for v in line.split("\t")]
        if header is None:
            table.header_line = lineno
            header = _parse_header(fields, line, lineno, fname, problems)
            if header is None:
                return None
            table.columns = header
            continue
        row = _fit_row(fields, header, lineno, fname, problems)
        if row is not None:
            table.rows.append(dict(zip(header, row)))
            table.lines.append(lineno)
    if header is None:
        problems.append(
            Problem(
                fname,
                "",
                "is empty (no header line)",
                "write a header line with the column names, then one row per "
                f"{_row_word(label)}",
            )
        )
        return None
    if not table.rows:
        problems.append(
            Problem(
                fname,
                "",
                "has a header but no data rows",
                f"add one row per {_row_word(label)}",
            )
        )
    return table
