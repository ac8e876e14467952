"""The report's overview page (landing page): the warnings, the cohort at a glance
(patients by response x timepoint, cells per library and QC pass rates), the key findings
in one sentence each, and every skipped analysis."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..dictionary import FeatureDictionary
from ..vocab import ENTRY_CELL_RANGER
from ._html import frame_html, html_page
from .findings import key_findings
from .warnings_table import warnings_html


def overview_page(
    qc_samples: pd.DataFrame,
    association: pd.DataFrame,
    clinical: pd.DataFrame,
    warnings: pd.DataFrame,
    annotate_warnings: pd.DataFrame | None = None,
    *,
    sample_features: pd.DataFrame,
    dictionary: FeatureDictionary,
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
    sample_features
        ``results/tables/sample_features.tsv`` (``sample, patient, timepoint``): the
        patients by response x timepoint.
    dictionary
        The feature dictionary: the key findings name features by their labels.
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
        by_timepoint=patients_by_timepoint(sample_features, clinical),
        findings=key_findings(association, dictionary=dictionary),
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

    A labelled ``association`` names features as ``label (id)``, in ``what`` and in
    the reasons.

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
        labels = _labels(association)
        for (_, r), note in zip(association.iterrows(), notes.fillna("")):
            if r.get("test") == "skipped" or (note and r.get("test") == "skipped"):
                feature = str(r.get("feature", ""))
                rows.append({"what": f"association: {labels.get(feature, feature)}",
                             "reason": _named(str(note), labels)})
    for what, reason in (extra_notes or {}).items():
        rows.append({"what": what, "reason": reason})
    return pd.DataFrame(rows, columns=["what", "reason"])


def _labels(association: pd.DataFrame) -> dict[str, str]:
    """Feature id -> ``label (id)`` of a labelled association table (none unlabelled)."""
    if "label" not in association:
        return {}
    pairs = association[["feature", "label"]].dropna().drop_duplicates("feature")
    return {str(f): f"{lab} ({f})" for f, lab in pairs.itertuples(index=False) if lab}


def _named(text: str, labels: Mapping[str, str]) -> str:
    """``text`` with every feature id of ``labels`` (as a whole word) given its label."""
    if not labels:
        return text
    ids = sorted(labels, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w@])(" + "|".join(map(re.escape, ids)) + r")(?![\w@])")
    return pattern.sub(lambda m: labels[m.group(1)], text)


def patients_by_timepoint(sample_features: pd.DataFrame, clinical: pd.DataFrame) -> pd.DataFrame:
    """Patients with an analysed library per response (rows) and timepoint (columns,
    by median day), and every patient of the clinical table per response (``all``).

    Parameters
    ----------
    sample_features
        ``sample_features.tsv`` (``patient``, ``timepoint``, ``timepoint_day``).
    clinical
        The clinical table (``patient``, ``response``; a missing response shows as
        ``not known``).
    """
    resp = clinical.drop_duplicates("patient").set_index("patient")["response"]
    resp = resp.astype(object).where(resp.notna(), "not known").astype(str)
    libs = sample_features[["patient", "timepoint"]].drop_duplicates()
    libs = libs.assign(response=libs["patient"].map(resp).fillna("not in clinical table"))
    days = sample_features.groupby("timepoint")["timepoint_day"].median() \
        if "timepoint_day" in sample_features else pd.Series(dtype=float)
    order = sorted(libs["timepoint"].unique(), key=lambda t: (days.get(t, np.inf), str(t)))
    tab = pd.crosstab(libs["response"], libs["timepoint"]).reindex(columns=order, fill_value=0)
    tab = tab.reindex(sorted(set(tab.index) | set(resp)), fill_value=0)
    tab["all patients"] = resp.value_counts().reindex(tab.index, fill_value=0)
    tab.loc["total"] = tab.sum()
    return tab.rename_axis(index="response", columns=None).reset_index()


def library_cells(qc_samples: pd.DataFrame) -> pd.DataFrame:
    """Cells per library: loaded, kept after QC and the pass rate (%)."""
    cols = [c for c in ["sample", "compartment", "n_cells_in", "n_cells_out", "sample_excluded"]
            if c in qc_samples]
    out = qc_samples[cols].copy()
    if {"n_cells_in", "n_cells_out"} <= set(out):
        n_in = pd.to_numeric(out["n_cells_in"], errors="coerce")
        rate = 100 * pd.to_numeric(out["n_cells_out"], errors="coerce") / n_in.where(n_in > 0)
        out.insert(cols.index("n_cells_out") + 1, "QC pass %", rate.round(1))
    return out


def overview_html(
    *,
    qc_samples: pd.DataFrame,
    clinical: pd.DataFrame,
    skipped: pd.DataFrame,
    warnings: pd.DataFrame,
    entry_point: str = "",
    unit_label: str = "",
    by_timepoint: pd.DataFrame | None = None,
    findings: Sequence[str] = (),
) -> str:
    """Render the overview page: the warnings (:func:`warnings_html`) first, then the
    entry point and unit of analysis (when given; :func:`overview_page`), the patients
    (by response x timepoint: :func:`patients_by_timepoint`), the key findings
    (:func:`~cartcohort.report.findings.key_findings`), the cells per library with their
    QC pass rate and the skipped analyses."""
    n_patients = clinical["patient"].nunique() if "patient" in clinical else len(clinical)
    cells_in = int(qc_samples["n_cells_in"].sum()) if "n_cells_in" in qc_samples else 0
    cells_out = int(qc_samples["n_cells_out"].sum()) if "n_cells_out" in qc_samples else 0
    rate = f" ({100 * cells_out / cells_in:.1f} % pass QC)" if cells_in else ""
    if by_timepoint is None:
        by_timepoint = clinical.groupby("response").size().rename("patients").reset_index() \
            if "response" in clinical else pd.DataFrame()
    parts = [
        *warnings_html(warnings),
        "<h2>Cohort overview</h2>",
        *_entry_lines(entry_point, unit_label),
        (f"<p><b>{n_patients}</b> patients, <b>{len(qc_samples)}</b> libraries, "
         f"<b>{cells_in}</b> cells loaded, <b>{cells_out}</b> cells kept after QC{rate}.</p>"),
        "<h3>Patients by response and timepoint</h3>",
        ("<p>Patients with an analysed library at each timepoint; <i>all patients</i>: "
         "every patient of the clinical table.</p>"), frame_html(by_timepoint),
        "<h3>Key findings</h3>",
        ("<p>Patient-level Mann&ndash;Whitney tests of product features against response: "
         "the primary panel first, then the exploratory features, each ranked by the q-value "
         "within its family of hypotheses (the panel, or the feature's family); the q-value "
         "across all features is given beside it.</p>"),
        *_findings_html(findings),
        "<h3>Cells per library and QC pass rate</h3>", frame_html(library_cells(qc_samples)),
        "<h3>Skipped analyses and samples</h3>",
        frame_html(skipped) if len(skipped) else "<p>None: every analysis ran.</p>",
    ]
    return html_page("cart-cohort overview", parts)


def _findings_html(findings: Sequence[str]) -> list[str]:
    if not findings:
        return ["<p>No association results (see the skipped analyses below).</p>"]
    return ["<ul>", *(f"<li>{html.escape(f)}</li>" for f in findings), "</ul>"]


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
