"""``results/tables/warnings.tsv``: every input carried through rather than refused.

An input that would make the results differ from what the user asked for is either
refused before any job runs, or carried through and listed here, one row per finding:
the library (empty: cohort-wide), the step and check that found it, how many genes,
cells or patients it concerns, what was found and what to do. The rows come from

- the sheets, read at parse time (:func:`cartcohort.sheets.prepare_inputs`: e.g. a
  patient whose response is ``NA``), passed to rule ``warnings`` as a param;
- the per-step warnings files of the jobs (``results/load/{sample}.warnings.tsv``,
  ``results/integrate/merge_warnings.tsv``: same columns);
- ``results/tables/qc_samples.tsv``, read here (:func:`qc_warnings`): libraries left out
  for too few cells, libraries whose doublets could not be called, references without
  mitochondrial genes.

The report's overview page shows the table at its top (:func:`warnings_html`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from ..errors import CartCohortError, exclude_line
from ..tables import TABLES, WARNING_COLUMNS, read_table
from ._html import frame_html

#: Sort order of ``warnings.tsv``.
SORT_BY: tuple[str, ...] = ("step", "sample", "check")
#: Start of ``qc_samples.tsv`` ``doublet_note`` when Scrublet was asked for but called no
#: doublet (too few cells, or no automatic threshold): see
#: :func:`cartcohort.pp.doublets.score_doublets`.
SCRUBLET_SKIPPED = "Scrublet "


def collect_warnings(
    paths: Sequence[str | os.PathLike],
    qc_samples: pd.DataFrame | None,
    *,
    parse_warnings: Sequence[Mapping[str, Any]],
) -> pd.DataFrame:
    """Gather every warning of a run into one table (step function of rule ``warnings``).

    Parameters
    ----------
    paths
        Warnings files written by the jobs (columns :data:`~cartcohort.tables.WARNING_COLUMNS`;
        a header alone when a job found nothing).
    qc_samples
        ``results/tables/qc_samples.tsv`` (rows derived by :func:`qc_warnings`);
        ``None`` on the published entry point (no QC step).
    parse_warnings
        The rows found when the sheets were read (dicts with the six columns).

    Returns
    -------
    pandas.DataFrame
        The :data:`~cartcohort.tables.WARNING_COLUMNS`, one row per warning (``count``
        an integer), sorted by step, sample and check (stably: rows of one check keep
        their order).

    Raises
    ------
    CartCohortError
        A file or parse-time row whose columns are not the warnings columns.
    """
    parts = [_frame(parse_warnings, what="the parse-time warnings (rule warnings' param)")]
    for path in paths:
        parts.append(_checked(read_table(path, table="warnings"), what=str(path)))
    if qc_samples is not None:
        parts.append(_frame(qc_warnings(qc_samples), what="the QC warnings"))
    out = pd.concat(parts, ignore_index=True)
    out["sample"] = out["sample"].fillna("").astype(str)
    out["count"] = out["count"].astype("int64")
    return out.sort_values(list(SORT_BY), kind="mergesort").reset_index(drop=True)


def _frame(rows: Iterable[Mapping[str, Any]], *, what: str) -> pd.DataFrame:
    rows = [dict(r) for r in rows]
    for row in rows:
        if set(row) != set(WARNING_COLUMNS):
            raise CartCohortError(
                f"{what}: a row has the keys {sorted(row)}, expected {list(WARNING_COLUMNS)}. "
                "Fix: build the rows with cartcohort.sheets.warning_row"
            )
    return pd.DataFrame(rows, columns=list(WARNING_COLUMNS))


def _checked(df: pd.DataFrame, *, what: str) -> pd.DataFrame:
    if tuple(df.columns) != WARNING_COLUMNS:
        raise CartCohortError(
            f"{what}: columns {list(df.columns)}, expected {list(WARNING_COLUMNS)}. "
            "Fix: re-run the rule that writes it"
        )
    return df


def _is_true(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def _text(value: Any) -> str:
    return "" if pd.isna(value) else str(value)


def qc_warnings(qc_samples: pd.DataFrame) -> list[dict[str, Any]]:
    """The warning rows of ``qc_samples.tsv``, in its row order.

    - ``too_few_cells``: the library has fewer cells passing QC than
      ``qc.min_cells_per_sample`` and is left out of the cohort analyses (``count``:
      its cells passing QC);
    - for the libraries kept: ``doublets_not_called``, Scrublet was asked for but
      called no doublet (too few cells for it, or no automatic threshold; ``count``:
      the library's cells kept), and ``no_mito_genes``, no gene matches
      ``qc.mito_prefix`` so no cell was removed for mitochondrial content (``count``:
      the library's cells).

    Parameters
    ----------
    qc_samples
        ``results/tables/qc_samples.tsv``.

    Returns
    -------
    list of dict
        Rows with the six :data:`~cartcohort.tables.WARNING_COLUMNS`.
    """
    rows = []
    for _, r in qc_samples.iterrows():
        sample = str(r["sample"])
        if _is_true(r["sample_excluded"]):
            rows.append(_row(
                sample, "too_few_cells", r["n_cells_out"],
                f"{_text(r['exclusion_reason'])}: the library is left out of integration, "
                "clonotypes, annotation and association",
                f"Look at its QC (results/qc/{sample}.tsv, the QC figures); if its cells are "
                "usable, lower qc.min_cells_per_sample for it in qc.per_sample; to leave it "
                f"out on purpose (which ends this warning), add {exclude_line(sample)} to the "
                "config",
            ))
            continue
        note = _text(r["doublet_note"])
        if note.startswith(SCRUBLET_SKIPPED):
            rows.append(_row(
                sample, "doublets_not_called", r["n_cells_out"],
                f"{note}: no expression doublet was removed from this library (the TCR "
                "chain evidence still was)",
                "Set qc.doublets.min_cells (at least 31) or a numeric qc.doublets.threshold "
                "for it in qc.per_sample, or accept the library without doublet calls",
            ))
        if int(r["n_mito_genes"]) == 0 and int(r["n_cells_in"]) > 0:
            rows.append(_row(
                sample, "no_mito_genes", r["n_cells_in"],
                "no gene matches qc.mito_prefix: % mito is 0 for every cell, so no cell was "
                "removed for mitochondrial content",
                "Set qc.mito_prefix to the prefix of this reference's mitochondrial genes "
                "(e.g. 'mt-' for mouse)",
            ))
    return rows


def _row(sample: str, check: str, count: Any, detail: str, action: str) -> dict[str, Any]:
    values = (sample, "qc", check, int(count), detail, action)
    return dict(zip(WARNING_COLUMNS, values, strict=True))


def warnings_html(warnings: pd.DataFrame) -> list[str]:
    """The warnings section of the overview page (its top).

    Parameters
    ----------
    warnings
        ``results/tables/warnings.tsv``.

    Returns
    -------
    list of str
        HTML fragments: a heading with the number of warnings, one sentence, the table.
    """
    path = TABLES["warnings"].path
    n = len(warnings)
    if not n:
        return ["<h2 id='warnings'>Warnings: none</h2>",
                "<p>Every input was used as given: nothing was carried through with a "
                f"warning (<code>{path}</code> is empty).</p>"]
    return [
        f"<h2 id='warnings'>Warnings: {n}</h2>",
        f"<p class='warnings'><b>{n}</b> input{'s were' if n != 1 else ' was'} carried "
        "through rather than refused: the results differ from what the sample sheet, the "
        "clinical table and the config ask for, as each row says, with what to do. Also in "
        f"<code>{path}</code>.</p>",
        frame_html(warnings[list(WARNING_COLUMNS)]),
    ]
