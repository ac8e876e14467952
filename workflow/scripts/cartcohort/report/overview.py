"""The report's overview page: the warnings, the cohort at a glance and every skipped analysis."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import pandas as pd

from ..vocab import ENTRY_CELL_RANGER
from ._html import frame_html, html_page
from .warnings_table import warnings_html


def overview_page(
    qc_samples: pd.DataFrame,
    association: pd.DataFrame,
    clinical: pd.DataFrame,
    warnings: pd.DataFrame,
    annotate_warnings: pd.DataFrame | None = None,
    *,
    excluded_by_config: Sequence[str],
    extra_notes: Mapping[str, str],
    entry_point: str = ENTRY_CELL_RANGER,
    unit_label: str = "",
    published_agreement: pd.DataFrame | None = None,
) -> str:
    """The overview page of a run (step function of rule ``overview``).

    Parameters
    ----------
    qc_samples
        ``results/tables/qc_samples.tsv``.
    association
        ``results/tables/association.tsv``.
    clinical
        The clinical table.
    warnings
        ``results/tables/warnings.tsv``: shown at the top of the page.
    annotate_warnings
        ``results/annotate/warnings.tsv`` (same columns; e.g. a CAR-sorted library without
        CAR UMIs): shown with ``warnings``.
    excluded_by_config
        Samples left out through the config's ``exclude_samples``.
    extra_notes
        Analyses skipped for reasons known from the config alone (``what -> reason``).
    entry_point
        Which input the run started from, in words (Cell Ranger outputs or a published
        cell table); shown at the top of the cohort overview.
    unit_label
        ``associate.unit: library``: the label of the test with libraries as replicates
        (shown with the association); empty with the patient as the unit.
    published_agreement
        ``results/tables/published_agreement.tsv`` (published entry point with
        ``published.annotate``): its overall agreement is shown under the entry point.

    Returns
    -------
    str
        The complete HTML page (:func:`overview_html` of :func:`skipped_analyses`).
    """
    skipped = skipped_analyses(
        qc_samples=qc_samples,
        association=association,
        excluded_by_config=excluded_by_config,
        extra_notes=extra_notes,
    )
    if annotate_warnings is not None and len(annotate_warnings):
        warnings = pd.concat([warnings, annotate_warnings], ignore_index=True)
    if published_agreement is not None:
        from ..published_agreement import agreement_summary

        entry_point += (". Our annotation of the authors' counts vs their mapped labels "
                        "(results/tables/published_agreement.tsv): "
                        + agreement_summary(published_agreement))
    return overview_html(
        qc_samples=qc_samples, clinical=clinical, skipped=skipped, warnings=warnings,
        entry_point=entry_point, unit_label=unit_label,
    )


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

    Returns
    -------
    pandas.DataFrame
        Columns ``what`` and ``reason``: config exclusions, QC exclusions, skipped
        association tests, then the extra notes.
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


def overview_html(
    *,
    qc_samples: pd.DataFrame,
    clinical: pd.DataFrame,
    skipped: pd.DataFrame,
    warnings: pd.DataFrame,
    entry_point: str = "",
    unit_label: str = "",
) -> str:
    """Render the overview page: the warnings (:func:`warnings_html`) first, then the
    entry point and unit of analysis (when given; :func:`overview_page`), the patients,
    samples, cells in/kept and skipped analyses."""
    n_patients = clinical["patient"].nunique() if "patient" in clinical else len(clinical)
    cells_in = int(qc_samples["n_cells_in"].sum()) if "n_cells_in" in qc_samples else 0
    cells_out = int(qc_samples["n_cells_out"].sum()) if "n_cells_out" in qc_samples else 0
    cols = [c for c in ["sample", "compartment", "n_cells_in", "n_cells_out", "sample_excluded"]
            if c in qc_samples]
    resp = clinical.groupby("response").size().rename("patients").reset_index() \
        if "response" in clinical else pd.DataFrame()
    parts = [
        *warnings_html(warnings),
        "<h2>Cohort overview</h2>",
        *_entry_lines(entry_point, unit_label),
        f"<p><b>{n_patients}</b> patients, <b>{len(qc_samples)}</b> libraries, "
        f"<b>{cells_in}</b> cells loaded, <b>{cells_out}</b> cells kept after QC.</p>",
        "<h3>Patients by response</h3>", frame_html(resp),
        "<h3>Libraries</h3>", frame_html(qc_samples[cols]),
        "<h3>Skipped analyses and samples</h3>",
        frame_html(skipped) if len(skipped) else "<p>None: every analysis ran.</p>",
    ]
    return html_page("cart-cohort overview", parts)


def _entry_lines(entry_point: str, unit_label: str) -> list[str]:
    """The entry point of the run and, with libraries as units, the label of that test."""
    lines = []
    if entry_point:
        lines.append(f"<p><b>Entry point:</b> {html.escape(entry_point)}.</p>")
    if unit_label:
        lines.append(
            f"<p class='warnings'><b>Unit of analysis: {html.escape(unit_label)}</b>: "
            "results/tables/association_libraries.tsv tests libraries as replicates; the "
            "patient-level association (association.tsv) stands beside it.</p>"
        )
    return lines
