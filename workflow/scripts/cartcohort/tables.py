"""The contract tables: every TSV the workflow writes, its columns and its dtypes.

Every table is written with :func:`write_table` (stable row order, ``%.6g``
floats, ``NA`` for missing), so that two runs on the same inputs give
byte-identical files, and read back with :func:`read_table`.

Identifiers are always text: a sample id ``001`` must never become ``1``, nor
``1e5`` a float or ``TRUE`` a boolean. :func:`read_table` reads the columns
named in :data:`ID_COLUMNS` as strings in any table, plus the text columns the
registry :data:`TABLES` declares for the table the file is (recognised by its
path, or named with ``table=``). Everything else is left to pandas' type
inference, and ``NA`` is a missing value in every column, ids included: the
writer writes a missing value as ``NA``, so an id spelled ``NA`` could not be
told apart from a missing one. The sheet validation
(:func:`cartcohort.sheets.prepare_inputs`) therefore refuses sample, patient and
timepoint ids spelled ``NA`` (a response ``NA`` is a response not known).

This module is imported while Snakemake parses the workflow: it imports pandas
only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import pandas as pd

from .errors import CartCohortError

FLOAT_FORMAT = "%.6g"
#: How a missing value is written, and the only text read back as missing.
NA_REP = "NA"

#: Identifier columns, read as text in every table.
ID_COLUMNS: tuple[str, ...] = (
    "sample",
    "patient",
    "timepoint",
    "compartment",
    "batch",
    "sort",
    "cell",
    "barcode",
    "clone_id",
    "response",
)


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: Columns of ``association.tsv`` and ``in_vivo_correlates.tsv`` (see
#: :data:`cartcohort.stats.ASSOCIATION_COLUMNS`) and their text columns.
_ASSOCIATION_COLUMNS: tuple[str, ...] = (
    _names("feature label feature_family test effect ci_low ci_high pvalue qvalue")
    + _names("qvalue_family n_responders n_nonresponders")
    + _names("effect_type direction median_responders median_nonresponders scope family")
    + _names("panel_version twins or_per_unit or_unit_ci_low or_unit_ci_high unit note")
)
_ASSOCIATION_TEXT: tuple[str, ...] = ("panel_version", "twins", "label", "feature_family")
#: Readable name and dictionary family beside ``feature`` (:mod:`cartcohort.dictionary`).
_LABELS: tuple[str, ...] = ("label", "feature_family")
#: Columns of every warnings table (``results/tables/warnings.tsv`` and the per-step
#: files it gathers): the library (empty: cohort-wide), the step and check that found
#: it, how many genes/cells/patients... it concerns, what was found and what to do.
WARNING_COLUMNS: tuple[str, ...] = _names("sample step check count detail action")
#: The text columns of a warnings table besides ``sample``.
WARNING_TEXT: tuple[str, ...] = _names("step check detail action")


@dataclass(frozen=True)
class Table:
    """One contract table.

    Attributes
    ----------
    name
        Registry key (the file name without extension for ``results/tables/``).
    path
        Path pattern relative to the project, ``{sample}`` for per-library tables.
    rule
        The rule that writes it.
    columns
        The columns the table starts with, in order (more may follow, e.g. one
        ``size_<sample>`` per sample in ``clonotypes``).
    text
        Further columns read as text besides :data:`ID_COLUMNS` (ids of other
        kinds, comma-joined id lists).
    also_by
        Rules that write it on another entry point (``cells``: ``import_cells``).
    """

    name: str
    path: str
    rule: str
    columns: tuple[str, ...]
    text: tuple[str, ...] = ()
    also_by: tuple[str, ...] = ()

    @property
    def dtypes(self) -> dict[str, type]:
        """``column -> str`` for every column of this table read as text."""
        return {c: str for c in (*ID_COLUMNS, *self.text)}

    def read(self, path: str | os.PathLike) -> pd.DataFrame:
        """Read a file of this table (:func:`read_table` with ``table=self.name``)."""
        return read_table(path, table=self.name)

    def write(
        self, df: pd.DataFrame, path: str | os.PathLike, *, sort_by: Sequence[str] | None = None
    ) -> None:
        """Write ``df`` as this table (:func:`write_table`) after checking that it
        starts with :attr:`columns`.

        Raises
        ------
        CartCohortError
            When the columns of ``df`` do not start with :attr:`columns`.
        """
        head = tuple(df.columns[: len(self.columns)])
        if head != self.columns:
            raise CartCohortError(
                f"table {self.name}: columns start with {list(head)}, expected "
                f"{list(self.columns)}. Fix: select the table's columns in this order."
            )
        write_table(df, path, sort_by=sort_by)


_REGISTRY = (
    Table(
        "load_summary",
        "results/load/{sample}.summary.tsv",
        "load_sample",
        _names("sample n_gex_cells n_tcr_barcodes n_gex_with_tcr n_tcr_without_gex")
        + ("n_bcr_contigs_dropped",),
    ),
    Table(
        "load_samples",
        "results/tables/load_samples.tsv",
        "load_summary",
        _names("sample n_gex_cells n_tcr_barcodes n_gex_with_tcr n_tcr_without_gex")
        + ("n_bcr_contigs_dropped",),
    ),
    Table(
        "load_warnings",
        "results/load/{sample}.warnings.tsv",
        "load_sample",
        WARNING_COLUMNS,
        text=WARNING_TEXT,
    ),
    Table(
        "merge_warnings",
        "results/integrate/merge_warnings.tsv",
        "merge_samples",
        WARNING_COLUMNS,
        text=WARNING_TEXT,
    ),
    Table(
        "qc_summary",
        "results/qc/{sample}.tsv",
        "qc_sample",
        _names("sample compartment n_cells_in n_cells_out n_removed_total"),
    ),
    Table(
        "qc_samples",
        "results/tables/qc_samples.tsv",
        "qc_summary",
        _names("sample compartment n_cells_in n_cells_out n_removed_total"),
    ),
    Table(
        "integration_metrics_pre_annotation",
        "results/integrate/metrics_pre_annotation.tsv",
        "integration_metrics",
        _names("method metric value direction label"),
    ),
    Table(
        "integration_metrics",
        "results/tables/integration_metrics.tsv",
        "integration_metrics_states",
        _names("method metric value direction label pass lead"),
    ),
    Table(
        "clonotypes",
        "results/tables/clonotypes.tsv",
        "clonotypes",
        _names("clone_id patient clone_cluster_id is_public receptor_subtype"),
        text=("clone_cluster_id",),
    ),
    Table(
        "public_clonotypes",
        "results/tables/public_clonotypes.tsv",
        "clonotypes",
        _names("cdr3_aa_vj cdr3_aa_vdj n_patients n_cells patients clone_ids"),
        text=("patients", "clone_ids"),
    ),
    Table(
        "cells",
        "results/tables/cells.tsv.gz",
        "annotate",
        _names("cell sample patient timepoint timepoint_day compartment batch sort"),
        also_by=("import_cells",),
    ),
    Table(
        "annotation_agreement",
        "results/tables/annotation_agreement.tsv",
        "annotate",
        _names("sample call cell_call final_call n_cells"),
    ),
    Table(
        "annotation_signature_genes",
        "results/tables/annotation_signature_genes.tsv",
        "annotate",
        _names("state n_up n_up_present n_down n_down_present missing used"),
    ),
    Table(
        "annotation_car_models",
        "results/tables/annotation_car_models.tsv",
        "annotate",
        _names("sample sorted car_status ambient_rate ambient_source positive_rate size")
        + _names("positive_fraction n_cells n_called expected_false_positives expected_fdr")
        + _names("expected_fpr reason clone_dropout"),
        text=_names("car_status ambient_source reason"),
    ),
    Table(
        "annotation_libraries",
        "results/tables/annotation_libraries.tsv",
        "annotate",
        _names("sample sort n_cells cd4_fraction cd8_fraction dn_fraction dp_fraction")
        + _names("gd_fraction naive_cd4_fraction naive_cd8_fraction naive_dn_fraction")
        + _names("naive_dp_fraction lineage_from_own lineage_from_neighbours")
        + _names("lineage_from_clone car_positive_fraction naive_car_positive_fraction")
        + _names("car_status car_expected_fdr car_expected_fpr"),
        text=_names("car_status"),
    ),
    Table(
        "protein_cells",
        "results/tables/protein_cells.tsv.gz",
        "protein",
        _names("cell sample adt_total_counts adt_n_detected adt_isotype_counts")
        + _names("adt_isotype_fraction adt_usable prot_t_cell"),
    ),
    Table(
        "protein_libraries",
        "results/tables/protein_libraries.tsv",
        "protein",
        _names("sample method n_cells n_usable n_antibodies n_mapped n_isotype unmapped notes"),
        text=_names("method unmapped notes"),
    ),
    Table(
        "protein_fits",
        "results/tables/protein_fits.tsv",
        "protein",
        _names("library marker n_fit mean_neg mean_pos sd_neg sd_pos fraction_pos")
        + _names("separation bimodal separated"),
        text=_names("library marker"),
    ),
    Table(
        "protein_agreement",
        "results/tables/protein_agreement.tsv",
        "protein",
        _names("library call n_both agreement"),
        text=_names("library call"),
    ),
    Table(
        "protein_warnings",
        "results/protein/warnings.tsv",
        "protein",
        WARNING_COLUMNS,
        text=WARNING_TEXT,
    ),
    Table(
        "annotate_warnings",
        "results/annotate/warnings.tsv",
        "annotate",
        WARNING_COLUMNS,
        text=WARNING_TEXT,
    ),
    Table(
        "repertoire_samples",
        "results/tables/repertoire_samples.tsv",
        "repertoire",
        _names("sample patient timepoint timepoint_day compartment"),
        text=("product_samples",),
    ),
    Table(
        "clone_tracking",
        "results/tables/clone_tracking.tsv",
        "repertoire",
        _names("patient clone_id sample timepoint timepoint_day compartment"),
    ),
    Table(
        "clone_kinetics",
        "results/tables/clone_kinetics.tsv",
        "kinetics",
        _names("patient clone_id sample timepoint timepoint_day compartment sort")
        + _names("product_depth depth product_n_cells n_cells"),
        text=_names("fc_basis kinetic_class class_note"),
    ),
    Table(
        "kinetics_samples",
        "results/tables/kinetics_samples.tsv",
        "kinetics",
        _names("patient sample timepoint timepoint_day compartment sort"),
        text=("previous_sample",),
    ),
    Table(
        "kinetics_patients",
        "results/tables/kinetics_patients.tsv",
        "kinetics",
        ("patient",),
        text=_names("blood_days car_fraction_blood note"),
    ),
    Table(
        "clone_fate",
        "results/tables/clone_fate.tsv",
        "kinetics",
        _names("scope product_state in_vivo_state n_clones"),
        text=_names("scope product_state in_vivo_state"),
    ),
    Table(
        "epitope_clones",
        "results/tables/epitope_clones.tsv",
        "epitopes",
        _names("patient clone_id n_cells n_matched_cells antigen_species epitope")
        + ("epitope_gene",),
        text=_names("antigen_species epitope epitope_gene"),
    ),
    Table(
        "epitope_products",
        "results/tables/epitope_products.tsv",
        "epitopes",
        _names("patient sample antigen_species n_clones n_cells share_tcr_cells"),
        text=("antigen_species",),
    ),
    Table(
        "kinetics_warnings",
        "results/kinetics/warnings.tsv",
        "kinetics",
        WARNING_COLUMNS,
        text=WARNING_TEXT,
    ),
    Table(
        "clone_states",
        "results/tables/clone_states.tsv",
        "repertoire",
        _names("patient clone_id clone_size n_samples frac_car_positive state n_cells")
        + _names("fraction dominant_state"),
    ),
    Table(
        "clinical",
        "results/tables/clinical.tsv",
        "response_groups",
        _names("patient response"),
    ),
    Table(
        "import_samples",
        "results/tables/import_samples.tsv",
        "import_cells",
        _names("sample patient compartment n_cells_in n_cells_out sample_excluded n_labels tcr"),
    ),
    Table(
        "published_own_cells",
        "results/tables/published_own_cells.tsv.gz",
        "published_annotation",
        _names("cell sample patient timepoint timepoint_day compartment batch sort"),
        text=_names("author_label"),
    ),
    Table(
        "published_agreement",
        "results/tables/published_agreement.tsv",
        "published_annotation",
        _names("call author_label mapped n_cells n_agree agreement our_calls cohen_kappa")
        + _names("adjusted_rand"),
        text=_names("call author_label mapped our_calls"),
    ),
    Table(
        "import_warnings",
        "results/import/warnings.tsv",
        "import_cells",
        WARNING_COLUMNS,
        text=WARNING_TEXT,
    ),
    Table(
        "sample_features",
        "results/tables/sample_features.tsv",
        "sample_features",
        _names("sample patient timepoint timepoint_day compartment"),
    ),
    Table(
        "association",
        "results/tables/association.tsv",
        "associate",
        _ASSOCIATION_COLUMNS,
        text=_ASSOCIATION_TEXT,
    ),
    Table(
        "in_vivo_correlates",
        "results/tables/in_vivo_correlates.tsv",
        "associate",
        _ASSOCIATION_COLUMNS,
        text=_ASSOCIATION_TEXT,
    ),
    Table(
        "association_libraries",
        "results/tables/association_libraries.tsv",
        "associate",
        _names("feature label feature_family test unit effect effect_type pvalue method")
        + _names("qvalue caveat"),
        text=(*_LABELS, "caveat"),
    ),
    Table(
        "association_notes",
        "results/tables/association_notes.tsv",
        "associate",
        _names("scope item note"),
        text=("item",),  # patient ids, feature and covariate names
    ),
    Table(
        "longitudinal",
        "results/tables/longitudinal.tsv",
        "associate",
        _names("feature label feature_family family test contrast comparison timepoint")
        + _names("reference effect ci_low ci_high pvalue qvalue n_responders")
        + _names("n_nonresponders n_samples note"),
        text=_LABELS,
    ),
    Table(
        "survival",
        "results/tables/survival.tsv",
        "associate",
        _names("endpoint analysis feature label feature_family scope test effect ci_low")
        + _names("ci_high pvalue qvalue n_patients n_events events_per_variable note"),
        text=_LABELS,
    ),
    Table(
        "pseudobulk_de",
        "results/tables/pseudobulk_de.tsv",
        "pseudobulk_de",
        _names("state gene base_mean log2fc lfc_se stat pvalue padj n_responders")
        + _names("n_nonresponders note"),
    ),
    Table(
        "reference_features",
        "results/tables/reference_features.tsv",
        "scorecards",
        _names("patient response responder"),
    ),
    Table(
        "scorecard",
        "results/scorecards/{sample}.tsv",
        "scorecards",
        _names("sample feature label feature_family primary value cohort_percentile cohort_n")
        + _names("cohort_median")
        + _names("responder_min responder_median responder_max interval_low interval_high")
        + _names("nonresponder_median n_responders flag direction qvalue"),
    ),
    Table(
        "new_product_card",
        "results/new_products/{sample}.tsv",
        "score_product",
        _names("sample feature label feature_family primary value cohort_percentile cohort_n")
        + _names("cohort_median")
        + _names("responder_min responder_median responder_max interval_low interval_high")
        + _names("nonresponder_median n_responders flag direction qvalue"),
    ),
    Table(
        "new_product_cells",
        "results/new_products/{sample}/cells.tsv.gz",
        "score_product",
        _names("cell sample patient state state_confidence cd4_cd8 car_positive state_own")
        + _names("state_transfer state_transfer_confidence cd4_cd8_transfer")
        + _names("cd4_cd8_transfer_confidence mapping_distance"),
    ),
    Table(
        "new_product_features",
        "results/new_products/{sample}/features.tsv",
        "score_product",
        _names("sample patient timepoint n_cells"),
    ),
    Table(
        "new_products",
        "results/tables/new_products.tsv",
        "score_products",
        _names("sample feature value cohort_percentile interval_low interval_high flag"),
    ),
    Table(
        "scorecard_calibration",
        "results/tables/scorecard_calibration.tsv",
        "scorecards",
        _names("row patient response n_features n_flagged flag_rate nominal_coverage")
        + _names("expected_flag_rate"),
    ),
    Table(
        "warnings",
        "results/tables/warnings.tsv",
        "warnings",
        WARNING_COLUMNS,
        text=WARNING_TEXT,
    ),
)
#: The contract tables by name.
TABLES: dict[str, Table] = {t.name: t for t in _REGISTRY}


def table_for(path: str | os.PathLike) -> Table | None:
    """The registered table ``path`` is a file of (by its path pattern), if any."""
    p = PurePath(path)
    for table in _REGISTRY:
        if p.match(table.path.replace("{sample}", "*")):
            return table
    return None


def write_table(
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    sort_by: Sequence[str] | None = None,
    float_format: str = FLOAT_FORMAT,
) -> None:
    """Write ``df`` as a tab-separated file, deterministically.

    Parameters
    ----------
    df
        Table to write; the index is not written (move it into a column first).
    path
        Output path; ``.gz`` compresses with a fixed mtime so bytes are stable.
    sort_by
        Columns to sort by (stable mergesort) before writing.
    float_format
        printf-style format for floats.
    """
    out = df
    if sort_by:
        out = df.sort_values(list(sort_by), kind="mergesort")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        import gzip

        with (
            open(path, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,
        ):
            gz.write(
                out.to_csv(sep="\t", index=False, float_format=float_format, na_rep=NA_REP).encode()
            )
    else:
        out.to_csv(path, sep="\t", index=False, float_format=float_format, na_rep=NA_REP)


def read_table(path: str | os.PathLike, *, table: str | None = None) -> pd.DataFrame:
    """Read a TSV written by :func:`write_table`.

    Parameters
    ----------
    path
        The file (``.gz`` decompressed).
    table
        Name of its table in :data:`TABLES`; by default recognised from
        ``path`` (:func:`table_for`), none for other files.

    Returns
    -------
    pandas.DataFrame
        :data:`ID_COLUMNS` and the table's text columns as strings (``001``
        stays ``001``), other columns as pandas infers them; ``NA`` is missing
        everywhere, no other text is.
    """
    spec = TABLES[table] if table is not None else table_for(path)
    dtypes = spec.dtypes if spec is not None else {c: str for c in ID_COLUMNS}
    return pd.read_csv(
        path,
        sep="\t",
        na_values=[NA_REP],
        keep_default_na=False,
        dtype=dtypes,
        low_memory=False,
    )


def twin_names(cell: object) -> list[str]:
    """The feature ids of a ``twins`` cell of ``association.tsv`` (``a (rho=0.97); b
    (rho=-0.93)``, written by :class:`cartcohort.stats.twins.Twins`); ``[]`` when the
    cell is empty or NA."""
    if not isinstance(cell, str):
        return []
    return [t.strip().split(" (rho=")[0] for t in cell.split(";") if t.strip()]
