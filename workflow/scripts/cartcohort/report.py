"""The report's overview page: the cohort at a glance and every skipped analysis."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import pandas as pd


def skipped_analyses(
    *,
    qc_samples: pd.DataFrame,
    association: pd.DataFrame,
    excluded_by_config: Sequence[str] = (),
    extra_notes: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Collect every analysis or sample the run skipped, with its reason.

    Parameters
    ----------
    qc_samples
        ``results/tables/qc_samples.tsv`` (``sample_excluded``, ``exclusion_reason``).
    association
        ``results/tables/association.tsv``; rows whose ``test`` is ``skipped`` or
        that carry a ``note`` are listed.
    excluded_by_config
        Samples left out through ``exclude_samples``.
    extra_notes
        Further ``what -> reason`` entries (e.g. no CAR feature).
    """
    rows: list[dict[str, str]] = []
    for s in excluded_by_config:
        rows.append({"what": f"sample {s}", "reason": "listed in config exclude_samples"})
    if "sample_excluded" in qc_samples:
        excl = qc_samples[qc_samples["sample_excluded"].astype(str).str.lower() == "true"]
        for _, r in excl.iterrows():
            rows.append({"what": f"sample {r['sample']}",
                         "reason": f"excluded at QC: {r.get('exclusion_reason', '')}"})
    if len(association):
        notes = association.get("note", pd.Series([""] * len(association), index=association.index))
        for (_, r), note in zip(association.iterrows(), notes.fillna("")):
            if r.get("test") == "skipped" or (note and r.get("test") == "skipped"):
                rows.append({"what": f"association: {r.get('feature', '')}", "reason": str(note)})
    for what, reason in (extra_notes or {}).items():
        rows.append({"what": what, "reason": reason})
    return pd.DataFrame(rows, columns=["what", "reason"])


def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, classes="table", na_rep="NA", escape=True)


def overview_html(
    *,
    qc_samples: pd.DataFrame,
    clinical: pd.DataFrame,
    skipped: pd.DataFrame,
) -> str:
    """Render the overview page: patients, samples, cells in/kept and skipped analyses."""
    n_patients = clinical["patient"].nunique() if "patient" in clinical else len(clinical)
    cells_in = int(qc_samples["n_cells_in"].sum()) if "n_cells_in" in qc_samples else 0
    cells_out = int(qc_samples["n_cells_out"].sum()) if "n_cells_out" in qc_samples else 0
    cols = [c for c in ["sample", "compartment", "n_cells_in", "n_cells_out", "sample_excluded"]
            if c in qc_samples]
    resp = clinical.groupby("response").size().rename("patients").reset_index() \
        if "response" in clinical else pd.DataFrame()
    parts = [
        "<h2>Cohort overview</h2>",
        f"<p><b>{n_patients}</b> patients, <b>{len(qc_samples)}</b> libraries, "
        f"<b>{cells_in}</b> cells loaded, <b>{cells_out}</b> cells kept after QC.</p>",
        "<h3>Patients by response</h3>", _table_html(resp),
        "<h3>Libraries</h3>", _table_html(qc_samples[cols]),
        "<h3>Skipped analyses and samples</h3>",
        _table_html(skipped) if len(skipped) else "<p>None: every analysis ran.</p>",
    ]
    style = ("<style>body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse}"
             "td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style>")
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape('cart-cohort overview')}</title>{style}</head><body>" + "\n".join(parts) + "</body></html>"


# ------------------------------------------------------------------ shared page helpers

PAGE_STYLE = ("body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse}"
              "td,th{padding:2px 8px;border-bottom:1px solid #ddd}")


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
        The complete document, ``<!DOCTYPE html>`` included.
    """
    style = f"<style>{PAGE_STYLE}{extra_style}</style>"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title>{style}</head><body>" + "\n".join(body) + "</body></html>")


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
