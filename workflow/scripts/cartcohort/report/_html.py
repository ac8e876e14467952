"""The report pages' HTML: one page skeleton and style, escaped tables, page files."""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence

import pandas as pd

PAGE_STYLE = ("body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse}"
              "td,th{padding:2px 8px;border-bottom:1px solid #ddd}")


#: An absolute file path in a page's text: ``/`` and at least two more components, at the
#: start of a word (after a space, quote, bracket, ``=`` or ``>``), so that ``PD-1/TIM-3``
#: or ``CD4/CD8`` are not paths.
_ABS_PATH = re.compile(r"(?<![\w.+-])(?:/[^\s/'\"<>&;:,()]+){2,}/?")


def shown_path(path: str) -> str:
    """A file path as a page shows it: relative paths as they are; an absolute one as
    ``.../<parent>/<name>``, so that no machine's folders (home, project, temporary) are
    printed in the report. The full paths stay in ``provenance.json``."""
    parts = [p for p in str(path).split("/") if p]
    if not str(path).startswith("/") or len(parts) <= 2:
        return str(path)
    return ".../" + "/".join(parts[-2:])


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path shortened by :func:`shown_path`."""
    return _ABS_PATH.sub(lambda m: shown_path(m.group(0)), text)


def html_page(title: str, body: Sequence[str], *, extra_style: str = "") -> str:
    """A self-contained HTML page in the report's style.

    Parameters
    ----------
    title
        Page title (escaped here).
    body
        HTML fragments joined by newlines; the caller escapes their text.
    extra_style
        CSS rules appended to :data:`PAGE_STYLE`.

    Returns
    -------
    str
        The complete document, ``<!DOCTYPE html>`` included; every absolute path in the
        body is shortened (:func:`scrub_paths`): a report page prints no machine path.
    """
    style = f"<style>{PAGE_STYLE}{extra_style}</style>"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title>{style}</head><body>" + scrub_paths("\n".join(body)) + "</body></html>")


def html_table(
    rows: Sequence[Sequence[object]],
    *,
    header: Sequence[str],
    column_classes: Sequence[str | None] | None = None,
    row_classes: Sequence[str | None] | None = None,
) -> str:
    """An HTML table whose every header and cell text is escaped.

    Parameters
    ----------
    rows
        Cell values, one sequence per row (converted with ``str``; ``None`` shows as
        ``NA``).
    header
        Column names.
    column_classes
        CSS class of each column's cells (``None`` = none), e.g. ``"mono"``.
    row_classes
        CSS class of each row (``None`` = none), e.g. to highlight rows.

    Returns
    -------
    str
        ``<table class="table">…</table>``.
    """
    ncol = len(header)
    column_classes = list(column_classes) if column_classes is not None else [None] * ncol
    row_classes = list(row_classes) if row_classes is not None else [None] * len(rows)
    if len(column_classes) != ncol or len(row_classes) != len(rows):
        raise ValueError(f"html_table: {ncol} columns / {len(rows)} rows but "
                         f"{len(column_classes)} column classes / {len(row_classes)} row classes")

    def attr(cls: str | None) -> str:
        return f' class="{html.escape(cls)}"' if cls else ""

    out = ['<table class="table">', "<thead><tr>"
           + "".join(f"<th{attr(c)}>{html.escape(str(h))}</th>"
                     for h, c in zip(header, column_classes))
           + "</tr></thead>", "<tbody>"]
    for row, rcls in zip(rows, row_classes):
        if len(row) != ncol:
            raise ValueError(f"html_table: row {list(row)!r} has {len(row)} cells, "
                             f"expected {ncol}")
        cells = "".join(f"<td{attr(c)}>{html.escape('NA' if v is None else str(v))}</td>"
                        for v, c in zip(row, column_classes))
        out.append(f"<tr{attr(rcls)}>{cells}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def frame_html(df: pd.DataFrame) -> str:
    """A data frame as an escaped HTML table (no index, missing values as ``NA``)."""
    return df.to_html(index=False, border=0, classes="table", na_rep="NA", escape=True)


def write_html(page: str, path: str | os.PathLike) -> None:
    """Write a rendered page (UTF-8 text, as given)."""
    with open(path, "w") as fh:
        fh.write(page)
