"""Per-sample feature table: the unit of every cohort-level statistic.

One row per sample, computed from the per-cell table written by ``annotate``
(``results/tables/cells.tsv.gz``) and, when available, the per-sample
repertoire table written by ``repertoire``
(``results/tables/repertoire_samples.tsv``).

Feature naming
--------------
``n_cells``
    QC-passing cells of the sample (descriptive; not tested).
``cd4_cd8_ratio``, ``log2_cd4_cd8_ratio``
    CD4 cells / CD8 cells (NA when there are no CD8 cells) and
    ``log2((n_CD4 + 0.5) / (n_CD8 + 0.5))`` (Haldane–Anscombe pseudocount of
    0.5, so the log ratio is finite for every sample). ``cd4_cd8`` may be NA (lineage
    unknown, e.g. a published label that gives none): such cells count in no lineage,
    and a sample without a cell of known lineage has NA ratios.
``frac_<state>``, ``frac_<state>_cd4``, ``frac_<state>_cd8``, ``frac_<state>_car``
    Fraction of cells in a state, overall and within CD4, CD8 and CAR+ cells
    (NA when the subset is empty or, for CAR+, when CAR status is unknown).
``memory_like_fraction[_cd4|_cd8|_car]``
    ``naive_tscm + tcm`` fraction (DESIGN.md vocabulary).
``exhausted_fraction``
    Same values as ``frac_exhausted``, named for reports; the association
    step tests identical columns once (under the first name, this one).
``pd1_pos_fraction``, ``tim3_pos_fraction``, ``lag3_pos_fraction``, ``triple_pos_fraction``
    Checkpoint-receptor positive fractions, overall and ``_cd8`` / ``_car``.
``mean_score_<state>``, ``mean_score_memory_like``
    Mean per-cell signature score (memory-like = mean of the naive/Tscm and
    Tcm scores of each cell).
``car_positive_fraction``
    CAR+ cells / cells with a known CAR status (NA when none is known).
``tcr_fraction``, ``clonal_diversity_gini_simpson``, ``top_clone_fraction``,
``expanded_clone_fraction``
    From ``clone_id``: fraction of cells with a clone; unbiased Gini–Simpson
    diversity ``1 - sum n_i (n_i - 1) / (N (N - 1))`` (its expectation does
    not depend on sequencing depth); largest clone / TCR+ cells; fraction of
    TCR+ cells in clones seen at least twice in the sample.
``rep_<column>``
    Every numeric column of the repertoire table except identifiers
    (rarefied diversity, top-clone fraction, persistence, …), prefixed so the
    source is clear. Persistence metrics are NA for pre-infusion samples as
    written by ``repertoire``. Depth-dependent counts (``rep_n_*``,
    ``rep_max_clone_size``), CI bounds and the rarefaction depth are kept
    but descriptive (:func:`is_descriptive`): not tested for association.
``kin_<column>``
    The patient's clone-kinetics features (:data:`KINETICS_FEATURES` of
    ``kinetics_patients.tsv``) on its product rows: in vivo, never product features.
``prot_cd4_cd8_ratio`` (descriptive), ``log2_prot_cd4_cd8_ratio``, ``prot_tscm_fraction``, ``prot_pd1_pos_fraction``
    Surface-protein features where the library has an ADT panel
    (:mod:`cartcohort.tl.protein_features`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from .. import vocab
from ..errors import InputError, Problem

logger = logging.getLogger(__name__)

#: Cell states of DESIGN.md, in report order.
STATES: tuple[str, ...] = (*vocab.STATES, *vocab.OPTIONAL_STATES, vocab.UNASSIGNED)
#: States that are always reported (gd/mait only when present in the data).
CORE_STATES: tuple[str, ...] = (*vocab.STATES, vocab.UNASSIGNED)
MEMORY_LIKE: tuple[str, ...] = vocab.MEMORY_LIKE
LINEAGES: tuple[str, ...] = vocab.LINEAGES
MARKERS: tuple[str, ...] = ("pd1_pos", "tim3_pos", "lag3_pos", "triple_pos")
#: Pseudocount added to CD4 and CD8 counts before the log2 ratio.
RATIO_PSEUDOCOUNT = 0.5

#: Identifier / metadata columns (never features).
ID_COLUMNS: tuple[str, ...] = (
    "sample",
    "patient",
    "timepoint",
    "timepoint_day",
    "compartment",
    "batch",
    "sort",
)
#: Feature-table columns that are descriptive only (not tested for association):
#: the cell count (technical) and the untransformed CD4:CD8 ratio (same ranks as
#: its log2 version, which is the one tested).
DESCRIPTIVE_COLUMNS: tuple[str, ...] = ("n_cells", "cd4_cd8_ratio", "prot_cd4_cd8_ratio")

#: Suffixes/prefixes of descriptive columns: CI bounds of repertoire estimates,
#: depth-dependent repertoire counts and the rarefaction depth itself.
DESCRIPTIVE_SUFFIXES: tuple[str, ...] = ("_ci_low", "_ci_high")
DESCRIPTIVE_PREFIXES: tuple[str, ...] = ("rep_n_",)
DESCRIPTIVE_EXTRA: tuple[str, ...] = ("rep_max_clone_size", "rep_rarefaction_depth")


def is_descriptive(name: str) -> bool:
    """Whether a feature-table column is descriptive only (kept, never tested).

    Descriptive: :data:`DESCRIPTIVE_COLUMNS`, confidence-interval bounds
    (``*_ci_low``/``*_ci_high``), the depth-dependent repertoire counts
    (``rep_n_*``, ``rep_max_clone_size``) and ``rep_rarefaction_depth``.
    """
    return (
        name in DESCRIPTIVE_COLUMNS
        or name in DESCRIPTIVE_EXTRA
        or name.endswith(DESCRIPTIVE_SUFFIXES)
        or name.startswith(DESCRIPTIVE_PREFIXES)
    )


#: Repertoire columns measured after infusion. On a product row they summarise the
#: patient's post-infusion samples (persistence of product clones); on a post-infusion
#: row they compare that sample with the product. Either way they are in vivo, not
#: product, features: outcome correlates, never predictors (immortal-time bias).
IN_VIVO_REPERTOIRE: tuple[str, ...] = tuple(
    f"rep_{c}"
    for c in (
        "jaccard_product",
        "morisita_horn_product",
        "n_product_clones_detected",
        "frac_cells_from_product_clones",
        "frac_car_cells_from_product_clones",
        "n_post_samples",
        "n_product_clones_detected_later",
        "frac_product_clones_detected_later",
        "frac_post_cells_from_product_clones",
        "frac_post_car_cells_from_product_clones",
    )
)
#: Prefix of the clone-kinetics features (``kinetics_patients.tsv``, rule kinetics), put
#: on each patient's product row: all in vivo (outcome correlates, not predictors).
KINETICS_PREFIX = "kin_"
#: The ``kinetics_patients.tsv`` columns taken as features (``kin_<column>``).
KINETICS_FEATURES: tuple[str, ...] = (
    "car_auc_blood", "car_mean_fraction_blood", "car_fraction_last_blood",
    "last_car_detection_day", "expanded_log2_retention",
    "post_car_share_top_product_clones", "n_expanded", "frac_tested_expanded",
)
#: The two scopes of a feature (``scope`` column of the association tables).
SCOPES: tuple[str, ...] = ("product", "in_vivo")


def feature_scope(name: str) -> str:
    """Whether a feature-table column is a product or an in vivo feature.

    A *product* feature is measured on the infusion-product library alone; it may
    predict response and enter the response association, the scorecards and the
    baseline survival models. An *in vivo* feature uses cells taken after infusion
    (:data:`IN_VIVO_REPERTOIRE`: overlap with and persistence of product clones; every
    ``kin_`` clone-kinetics feature); it is
    an outcome correlate and enters survival only in a landmark analysis. Any feature
    read on a post-infusion library is in vivo as well; that is a property of the row
    (its timepoint), not of the name, and is decided by the caller.

    Parameters
    ----------
    name
        A feature column of ``sample_features.tsv``.

    Returns
    -------
    str
        ``"in_vivo"`` or ``"product"``.
    """
    if name in IN_VIVO_REPERTOIRE or name.startswith(KINETICS_PREFIX):
        return "in_vivo"
    return "product"


REQUIRED_CELL_COLUMNS: tuple[str, ...] = (
    "cell",
    "sample",
    "patient",
    "timepoint",
    "compartment",
    "cd4_cd8",
    "state",
)


_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def as_boolean(values: pd.Series, *, source: str, column: str) -> pd.Series:
    """Parse a boolean column that may hold strings, numbers and missing values.

    Parameters
    ----------
    values
        Column as read from a TSV (``True``/``False``/``1``/``0``/``NA``…).
    source, column
        File and column name, for the error message.

    Returns
    -------
    pandas.Series
        Nullable ``boolean`` dtype; missing stays ``<NA>``.

    Raises
    ------
    InputError
        When a value is not a recognised boolean.
    """
    if pd.api.types.is_bool_dtype(values):
        return values.astype("boolean")
    out = pd.Series(pd.NA, index=values.index, dtype="boolean")
    missing = values.isna()
    text = values[~missing].astype(str).str.strip().str.lower()
    is_true = text.isin(_TRUE)
    is_false = text.isin(_FALSE)
    bad = text[~(is_true | is_false)]
    if len(bad):
        first = bad.index[0]
        raise InputError(
            [
                Problem(
                    file=source,
                    where=f"row {first}, column '{column}'",
                    what=f"{len(bad)} value(s) are not booleans, e.g. {values.loc[first]!r}",
                    fix="use True/False (or NA when unknown)",
                )
            ]
        )
    out.loc[is_true[is_true].index] = True
    out.loc[is_false[is_false].index] = False
    return out


def _check_cells(cells: pd.DataFrame, *, source: str) -> None:
    problems: list[Problem] = []
    for col in REQUIRED_CELL_COLUMNS:
        if col not in cells.columns:
            problems.append(
                Problem(
                    file=source,
                    where=f"column '{col}'",
                    what="required column is missing",
                    fix="re-run rule annotate, which writes every column listed in DESIGN.md",
                )
            )
    if problems:
        raise InputError(problems)
    if cells.empty:
        raise InputError(
            [
                Problem(
                    file=source,
                    where="",
                    what="the table has no cells",
                    fix="check QC thresholds: no cell passed QC in any included sample",
                )
            ]
        )
    # cd4_cd8 may be missing (lineage not known, e.g. a published label that gives none)
    for col in ("sample", "patient", "state"):
        n_missing = int(cells[col].isna().sum())
        if n_missing:
            first = cells.index[cells[col].isna()][0]
            problems.append(
                Problem(
                    file=source,
                    where=f"row {first}, column '{col}'",
                    what=f"{n_missing} cell(s) have no value",
                    fix=f"every QC-passing cell needs a '{col}' (use 'unassigned' for states)",
                )
            )
    bad_lineage = sorted(set(cells["cd4_cd8"].dropna().astype(str)) - set(LINEAGES))
    if bad_lineage:
        problems.append(
            Problem(
                file=source,
                where="column 'cd4_cd8'",
                what=f"unknown lineage value(s) {bad_lineage}",
                fix=f"use one of {list(LINEAGES)}",
            )
        )
    # Sample-level metadata must be constant within a sample.
    for col in ("patient", "timepoint", "timepoint_day", "compartment"):
        if col not in cells.columns:
            continue
        n_values = cells.groupby("sample", sort=True)[col].nunique(dropna=False)
        bad = n_values[n_values > 1]
        if len(bad):
            problems.append(
                Problem(
                    file=source,
                    where=f"column '{col}'",
                    what=f"sample(s) {list(bad.index[:5])} have more than one value",
                    fix="sample metadata comes from the sample sheet; it is constant per sample",
                )
            )
    if problems:
        raise InputError(problems)


def _fraction(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    num = numerator.astype(float)
    den = denominator.astype(float)
    return (num / den).where(den > 0)


def state_list(cells: pd.DataFrame) -> list[str]:
    """States reported for a cell table: the core vocabulary plus any other state seen.

    ``gd`` and ``mait`` (optional in the signature file) and any state outside
    the DESIGN.md vocabulary are added, in vocabulary then alphabetical order,
    when at least one cell has them.
    """
    seen = set(cells["state"].dropna().astype(str))
    states = list(CORE_STATES)
    states += [s for s in STATES if s not in states and s in seen]
    states += sorted(seen - set(states))
    return states


def _state_fractions(
    cells: pd.DataFrame, *, states: Sequence[str], mask: pd.Series | None, suffix: str
) -> pd.DataFrame:
    sub = cells if mask is None else cells[mask.fillna(False).to_numpy(dtype=bool)]
    samples = cells["sample"].unique()
    counts = (
        pd.crosstab(sub["sample"], sub["state"])
        .reindex(index=samples, columns=list(states), fill_value=0)
        .astype(float)
    )
    total = sub.groupby("sample", sort=False).size().reindex(samples, fill_value=0)
    out = pd.DataFrame(index=samples)
    for s in states:
        out[f"frac_{s}{suffix}"] = _fraction(counts[s], total)
    mem = counts[[s for s in MEMORY_LIKE if s in counts.columns]].sum(axis=1)
    out[f"memory_like_fraction{suffix}"] = _fraction(mem, total)
    return out


def _marker_fractions(
    cells: pd.DataFrame, *, markers: Sequence[str], mask: pd.Series | None, suffix: str
) -> pd.DataFrame:
    samples = cells["sample"].unique()
    keep = np.ones(len(cells), dtype=bool) if mask is None else mask.fillna(False).to_numpy(bool)
    out = pd.DataFrame(index=samples)
    for m in markers:
        flag = cells[f"_{m}"]
        known = keep & flag.notna().to_numpy()
        pos = known & flag.fillna(False).to_numpy(dtype=bool)
        n_known = pd.Series(known, index=cells.index).groupby(cells["sample"], sort=False).sum()
        n_pos = pd.Series(pos, index=cells.index).groupby(cells["sample"], sort=False).sum()
        out[f"{m}_fraction{suffix}"] = _fraction(
            n_pos.reindex(samples, fill_value=0), n_known.reindex(samples, fill_value=0)
        )
    return out


def _clonal_features(cells: pd.DataFrame) -> pd.DataFrame:
    samples = cells["sample"].unique()
    out = pd.DataFrame(index=samples)
    clone = cells["clone_id"]
    has = clone.notna() & (clone.astype(str).str.strip() != "")
    n_cells = cells.groupby("sample", sort=False).size()
    n_tcr = has.groupby(cells["sample"], sort=False).sum().reindex(samples, fill_value=0)
    out["tcr_fraction"] = _fraction(n_tcr, n_cells.reindex(samples))
    tcr = cells.loc[has, ["sample", "clone_id"]]
    sizes = tcr.groupby(["sample", "clone_id"], sort=True).size()
    gini, top, expanded = {}, {}, {}
    for sample in samples:
        if sample not in sizes.index.get_level_values(0):
            continue
        n_i = sizes.loc[sample].to_numpy(dtype=float)
        total = n_i.sum()
        top[sample] = n_i.max() / total
        expanded[sample] = n_i[n_i >= 2].sum() / total
        if total >= 2:
            gini[sample] = 1.0 - float((n_i * (n_i - 1)).sum() / (total * (total - 1)))
    out["clonal_diversity_gini_simpson"] = pd.Series(gini, dtype=float)
    out["top_clone_fraction"] = pd.Series(top, dtype=float)
    out["expanded_clone_fraction"] = pd.Series(expanded, dtype=float)
    return out


def repertoire_features(
    repertoire: pd.DataFrame, *, prefix: str = "rep_", source: str = "repertoire_samples.tsv"
) -> pd.DataFrame:
    """Numeric per-sample columns of the repertoire table, prefixed.

    The repertoire table is written by another step whose exact columns may
    change, so it is read defensively: every column that is numeric (or
    boolean) and not an identifier (:data:`ID_COLUMNS`) is taken.

    Parameters
    ----------
    repertoire
        One row per sample with a ``sample`` column.
    prefix
        Prefix added to every taken column (not doubled when already there).
    source
        File name for error messages.

    Returns
    -------
    pandas.DataFrame
        Indexed by sample; float columns.
    """
    if "sample" not in repertoire.columns:
        raise InputError(
            [
                Problem(
                    file=source,
                    where="column 'sample'",
                    what="required column is missing",
                    fix="re-run rule repertoire; the table needs one row per sample",
                )
            ]
        )
    dup = repertoire["sample"][repertoire["sample"].duplicated()]
    if len(dup):
        raise InputError(
            [
                Problem(
                    file=source,
                    where="column 'sample'",
                    what=f"sample(s) {sorted(map(str, dup.unique()))[:5]} appear on several rows",
                    fix="the repertoire table must be wide: one row per sample",
                )
            ]
        )
    rep = repertoire.set_index(repertoire["sample"].astype(str))
    out = pd.DataFrame(index=rep.index)
    for col in rep.columns:
        if col in ID_COLUMNS or col.startswith("is_") or col.endswith("_note"):
            continue  # identifiers, sample-role flags (is_product, …) and free-text notes
        values = rep[col]
        if values.isna().all():
            continue  # e.g. a text column with no value, read back as float
        if pd.api.types.is_bool_dtype(values):
            values = values.astype(float)
        elif not pd.api.types.is_numeric_dtype(values):
            continue
        name = col if col.startswith(prefix) else f"{prefix}{col}"
        out[name] = values.astype(float)
    logger.info("took %d numeric repertoire column(s) from %s", out.shape[1], source)
    return out


def _prepare_cells(cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.Index, pd.DataFrame]:
    """Cells with text ids sorted by sample, the sample index and per-sample metadata."""
    cells = cells.reset_index(drop=True).copy()
    for col in ("sample", "patient", "timepoint", "compartment", "state"):
        cells[col] = cells[col].astype(str)
    cells["cd4_cd8"] = cells["cd4_cd8"].astype("string")  # NA: lineage not known
    cells = cells.sort_values("sample", kind="mergesort")
    samples = pd.Index(cells["sample"].unique(), name="sample")
    meta_cols = ["patient", "timepoint", "timepoint_day", "compartment"]
    if "timepoint_day" not in cells.columns:
        cells["timepoint_day"] = np.nan
    cells["timepoint_day"] = pd.to_numeric(cells["timepoint_day"], errors="coerce")
    meta = cells.groupby("sample", sort=False)[meta_cols].first().reindex(samples)
    return cells, samples, meta


def _lineage_features(cells: pd.DataFrame, samples: pd.Index) -> pd.DataFrame:
    """``n_cells`` and the CD4:CD8 ratio and its log2 (pseudocount) version."""
    n_cells = cells.groupby("sample", sort=False).size().reindex(samples)
    lineage = pd.crosstab(cells["sample"], cells["cd4_cd8"]).reindex(
        index=samples, columns=list(LINEAGES), fill_value=0
    )
    base = pd.DataFrame(index=samples)
    base["n_cells"] = n_cells.astype(int)
    base["cd4_cd8_ratio"] = _fraction(lineage["CD4"], lineage["CD8"])
    base["log2_cd4_cd8_ratio"] = np.log2(
        (lineage["CD4"] + RATIO_PSEUDOCOUNT) / (lineage["CD8"] + RATIO_PSEUDOCOUNT)
    ).where(lineage.sum(axis=1) > 0)  # NA without a cell of known lineage
    return base


def _car_status(cells: pd.DataFrame, *, source: str) -> pd.Series | None:
    """Per-cell CAR status (nullable boolean), or None when it is unknown for every cell."""
    if "car_positive" not in cells.columns:
        return None
    car = as_boolean(cells["car_positive"], source=source, column="car_positive")
    return None if car.isna().all() else car


def _score_means(cells: pd.DataFrame, samples: pd.Index) -> pd.DataFrame | None:
    """Mean per-cell signature scores (``mean_score_*``), or None without score columns."""
    score_cols = [c for c in cells.columns if c.startswith("score_")]
    if not score_cols:
        return None
    scores = cells[score_cols].apply(pd.to_numeric, errors="coerce")
    means = scores.groupby(cells["sample"], sort=False).mean().reindex(samples)
    means.columns = [f"mean_{c}" for c in score_cols]
    mem_cols = [f"score_{s}" for s in MEMORY_LIKE]
    if all(c in scores.columns for c in mem_cols):
        means["mean_score_memory_like"] = (
            scores[mem_cols].mean(axis=1).groupby(cells["sample"], sort=False).mean()
        )
    return means


def _car_fraction(cells: pd.DataFrame, car: pd.Series, samples: pd.Index) -> pd.DataFrame:
    """``car_positive_fraction``: CAR+ cells / cells with a known CAR status."""
    known = car.notna()
    pos = car.fillna(False).astype(bool)
    return pd.DataFrame(
        {
            "car_positive_fraction": _fraction(
                pos.groupby(cells["sample"], sort=False).sum().reindex(samples),
                known.groupby(cells["sample"], sort=False).sum().reindex(samples),
            )
        },
        index=samples,
    )


def _subset_features(
    cells: pd.DataFrame, *, states: Sequence[str], car: pd.Series | None, source: str
) -> list[pd.DataFrame]:
    """State and marker fractions overall and within the CD4, CD8 and CAR+ subsets."""
    samples = pd.Index(cells["sample"].unique(), name="sample")
    subsets: list[tuple[str, pd.Series | None]] = [
        ("", None),
        ("_cd4", cells["cd4_cd8"] == "CD4"),
        ("_cd8", cells["cd4_cd8"] == "CD8"),
    ]
    if car is not None:
        subsets.append(("_car", car))
    parts = [
        _state_fractions(cells, states=states, mask=mask, suffix=suffix)
        for suffix, mask in subsets
    ]
    parts.append(
        pd.DataFrame({"exhausted_fraction": parts[0]["frac_exhausted"]}, index=samples)
    )
    markers = [m for m in MARKERS if m in cells.columns]
    for m in markers:
        cells[f"_{m}"] = as_boolean(cells[m], source=source, column=m)
    if markers:
        for suffix, mask in [s for s in subsets if s[0] != "_cd4"]:
            parts.append(_marker_fractions(cells, markers=markers, mask=mask, suffix=suffix))
    return parts


def _repertoire_part(
    repertoire: pd.DataFrame, samples: pd.Index, *, source: str, repertoire_source: str
) -> pd.DataFrame:
    """Repertoire features reindexed to the cell table's samples (extra samples logged)."""
    rep = repertoire_features(repertoire, source=repertoire_source)
    unknown = sorted(set(rep.index) - set(samples))
    if unknown:
        logger.warning(
            "%s has %d sample(s) absent from %s (ignored): %s",
            repertoire_source,
            len(unknown),
            source,
            unknown[:5],
        )
    return rep.reindex(samples)


def kinetics_part(
    kinetics: pd.DataFrame, repertoire: pd.DataFrame, samples: pd.Index, *, source: str
) -> pd.DataFrame:
    """``kin_<column>`` of each patient (:data:`KINETICS_FEATURES`) on its product rows.

    The product rows are the repertoire table's ``is_product`` samples; other rows get NA.
    """
    out = pd.DataFrame(index=samples, columns=[f"{KINETICS_PREFIX}{c}"
                                               for c in KINETICS_FEATURES], dtype=float)
    if "is_product" not in repertoire.columns or "patient" not in kinetics.columns:
        logger.warning("%s or the repertoire table lacks patient / is_product: no kin_ "
                       "features", source)
        return out
    prod = repertoire[as_boolean(repertoire["is_product"], source="repertoire_samples.tsv",
                                 column="is_product").fillna(False).astype(bool)]
    kin = kinetics.set_index(kinetics["patient"].astype(str))
    for _, row in prod.iterrows():
        s, patient = str(row["sample"]), str(row["patient"])
        if s in out.index and patient in kin.index:
            for c in KINETICS_FEATURES:
                if c in kin.columns:
                    out.loc[s, f"{KINETICS_PREFIX}{c}"] = pd.to_numeric(
                        kin.loc[patient, c], errors="coerce")
    return out


def _without_tcr(part: pd.DataFrame, tcr_samples: Collection[str] | None) -> pd.DataFrame:
    """``part`` with the rows of the libraries outside ``tcr_samples`` NA (None: as is)."""
    if tcr_samples is None:
        return part
    keep = pd.Series(part.index.isin(list(tcr_samples)), index=part.index)
    return part.where(keep, axis=0)


def sample_features(
    cells: pd.DataFrame,
    *,
    repertoire: pd.DataFrame | None = None,
    kinetics: pd.DataFrame | None = None,
    source: str = "results/tables/cells.tsv.gz",
    repertoire_source: str = "results/tables/repertoire_samples.tsv",
    kinetics_source: str = "results/tables/kinetics_patients.tsv",
    protein: pd.DataFrame | None = None,
    tcr_samples: Collection[str] | None = None,
) -> pd.DataFrame:
    """Build the per-sample feature table from the per-cell table.

    Parameters
    ----------
    cells
        One row per QC-passing cell with the DESIGN.md ``cells.tsv.gz`` columns.
        ``car_positive``, the marker flags, ``clone_id`` and ``score_*`` are
        optional; features needing an absent column are not produced.
    repertoire
        Per-sample repertoire table (optional); see :func:`repertoire_features`.
    kinetics
        Per-patient clone-kinetics table (optional, needs ``repertoire``); see
        :func:`kinetics_part`.
    source, repertoire_source, kinetics_source
        File names for error messages.
    protein
        ``protein_cells.tsv.gz`` (optional): the protein product features of
        :mod:`cartcohort.tl.protein_features` (NA for libraries without a panel).
    tcr_samples
        The libraries with TCR data (None: all); the clonal and repertoire features of
        the others are NA, not 0 (the published entry point's libraries without contigs).

    Returns
    -------
    pandas.DataFrame
        One row per sample, sorted by sample; the metadata columns ``sample,
        patient, timepoint, timepoint_day, compartment`` first, then
        ``n_cells`` and the features described in the module docstring.
    """
    _check_cells(cells, source=source)
    cells, samples, meta = _prepare_cells(cells)
    states = state_list(cells)
    car = _car_status(cells, source=source)
    parts = [_lineage_features(cells, samples)]
    parts += _subset_features(cells, states=states, car=car, source=source)
    means = _score_means(cells, samples)
    if means is not None:
        parts.append(means)
    if car is not None:
        parts.append(_car_fraction(cells, car, samples))
    if "clone_id" in cells.columns:
        parts.append(_without_tcr(_clonal_features(cells).reindex(samples), tcr_samples))
    if repertoire is not None and len(repertoire):
        parts.append(_without_tcr(
            _repertoire_part(
                repertoire, samples, source=source, repertoire_source=repertoire_source
            ), tcr_samples))
        if kinetics is not None and len(kinetics):
            parts.append(kinetics_part(kinetics, repertoire, samples, source=kinetics_source))
    if protein is not None:
        from .protein_features import protein_features

        parts.append(protein_features(protein, samples=samples))
    feats = pd.concat(parts, axis=1)
    # Headline features first (an identical later column is the one left out of tests).
    lead = ["n_cells", "cd4_cd8_ratio", "log2_cd4_cd8_ratio", "memory_like_fraction",
            "exhausted_fraction"]
    feats = feats[lead + [c for c in feats.columns if c not in lead]]
    out = pd.concat([meta, feats], axis=1)
    out.insert(0, "sample", out.index.astype(str))
    out = out.reset_index(drop=True)
    logger.info("%d samples x %d features", len(out), feats.shape[1] - 1)
    return out
