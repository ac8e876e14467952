"""Published entry point: start from the authors' per-cell annotation (rule ``import_cells``).

A paper's released cell table (TSV/CSV, gzip allowed) or annotated object (``.h5ad``
obs, or the obs of the ``gex`` modality of an ``.h5mu``) is checked against the
sample sheet and turned into the per-cell table of rule ``annotate``
(``results/tables/cells.tsv.gz``), so that ``sample_features``, ``associate``, the
scorecards and the report run unchanged on it.

The label map
-------------
A YAML mapping from each of the authors' labels to our calls::

    "4.6a-Treg": {state: treg, cd4_cd8: CD4}
    "8.2-Tem":   {state: tem, cd4_cd8: CD8}
    "3.1-MT":    {}          # no counterpart: stays a state of its own

``state`` must be a state of the vocabulary (:data:`cartcohort.vocab.STATES`,
optional states, ``unassigned``), ``cd4_cd8`` a lineage (:data:`~cartcohort.vocab.LINEAGES`)
and ``car_positive`` a boolean; each is optional. A label without ``state`` stays a
state of its own, named after the label (lower case, runs of other characters than
letters and digits as ``_``: ``3.1-MT`` -> ``3_1_mt``), so its fractions are features
too. Cells whose label gives no lineage have ``cd4_cd8`` NA (the CD4:CD8 features use
the cells with a known lineage). Every label of the table must be in the map.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import vocab
from .errors import InputError, Problem
from .yaml_file import read_yaml_file

logger = logging.getLogger(__name__)

#: Our calls a label may map to.
MAP_KEYS: tuple[str, ...] = ("state", "cd4_cd8", "car_positive")
#: States a label may map to.
MAP_STATES: tuple[str, ...] = (*vocab.STATES, *vocab.OPTIONAL_STATES, vocab.UNASSIGNED)
#: Sheet columns copied onto every cell of a library.
SHEET_COLUMNS: tuple[str, ...] = (
    "patient", "timepoint", "timepoint_day", "compartment", "batch", "sort",
)
#: Columns of the per-library import summary (``results/tables/import_samples.tsv``).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "sample", "patient", "compartment", "n_cells_in", "n_cells_out", "sample_excluded",
    "n_labels", "tcr",
)
#: Rows listed in an error message.
MAX_ROWS_SHOWN = 5
_TABLE_SUFFIXES = (".tsv", ".txt", ".csv")


@dataclass(frozen=True)
class LabelCall:
    """Our calls for one of the authors' labels (``None``: not known from the label)."""

    state: str
    cd4_cd8: str | None
    car_positive: bool | None


@dataclass
class ImportedCells:
    """What :func:`import_cells` returns.

    Attributes
    ----------
    cells
        The per-cell table (``cells.tsv.gz`` layout: ``cell, sample``, the sheet's
        library columns, ``cd4_cd8, state``, ``car_positive`` when the map gives it,
        ``clone_id`` with a clonotype column, and ``author_label``).
    summary
        One row per library of the cohort (:data:`SUMMARY_COLUMNS`; ``tcr``: the library
        has clonotypes, from the table's clonotype column or its contigs).
    warnings
        Rows of ``warnings.tsv`` (step ``import``): features skipped for want of
        data, labels kept as their own states.
    """

    cells: pd.DataFrame
    summary: pd.DataFrame
    warnings: pd.DataFrame


def own_state(label: str) -> str:
    """The state name of a label without a counterpart (``3.1-MT`` -> ``3_1_mt``)."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def parse_label_map(content: Any, *, source: str) -> dict[str, LabelCall]:
    """Check a label map (the parsed YAML) and return label -> :class:`LabelCall`.

    Parameters
    ----------
    content
        The parsed YAML: a mapping from label to a mapping of :data:`MAP_KEYS`
        (or empty / null: the label stays a state of its own).
    source
        The file, for messages.

    Returns
    -------
    dict
        One :class:`LabelCall` per label (labels as text, stripped).

    Raises
    ------
    InputError
        Not a mapping, an unknown key, a state or lineage outside the vocabulary, a
        non-boolean ``car_positive``, or two labels whose own-state names collide.
    """
    if not isinstance(content, Mapping) or not content:
        raise InputError([Problem(source, "", "is not a mapping of labels",
                                  "write one line per label: '<label>: {state: ..., "
                                  "cd4_cd8: ...}' (see the README)")])
    problems: list[Problem] = []
    calls: dict[str, LabelCall] = {}
    own: dict[str, str] = {}
    for key, spec in content.items():
        label = str(key).strip()
        where = f"label {label!r}"
        spec = {} if spec is None else spec
        if not isinstance(spec, Mapping):
            problems.append(Problem(source, where, f"value {spec!r} is not a mapping",
                                    "give {state: ..., cd4_cd8: ...} or {} (own state)"))
            continue
        unknown = sorted(set(map(str, spec)) - set(MAP_KEYS))
        if unknown:
            problems.append(Problem(source, where, f"unknown key(s) {unknown}",
                                    f"use only {list(MAP_KEYS)}"))
        state = spec.get("state")
        if state is not None and str(state) not in MAP_STATES:
            problems.append(Problem(source, where, f"state {state!r} is not in the vocabulary",
                                    f"use one of {list(MAP_STATES)}, or leave 'state' out so "
                                    "the label stays a state of its own"))
        lineage = spec.get("cd4_cd8")
        if lineage is not None and str(lineage) not in vocab.LINEAGES:
            problems.append(Problem(source, where, f"cd4_cd8 {lineage!r} is not a lineage",
                                    f"use one of {list(vocab.LINEAGES)} or leave it out"))
        car = spec.get("car_positive")
        if car is not None and not isinstance(car, bool):
            problems.append(Problem(source, where, f"car_positive {car!r} is not a boolean",
                                    "write true or false, or leave it out when unknown"))
        if state is None:
            name = own_state(label)
            if not name or (name in own and own[name] != label):
                problems.append(Problem(
                    source, where, f"its own-state name {name!r} is empty or also that of "
                    f"label {own.get(name)!r}", "map one of them to a state"))
            own[name] = label
        calls[label] = LabelCall(
            state=str(state) if state is not None else own_state(label),
            cd4_cd8=str(lineage) if lineage is not None else None,
            car_positive=car if isinstance(car, bool) else None,
        )
    if problems:
        raise InputError(problems)
    return calls


def read_cell_table(path: str | os.PathLike, *, cell_column: str) -> pd.DataFrame:
    """The authors' cell table as text columns, the cell id in column ``cell``.

    Parameters
    ----------
    path
        TSV/TXT (tab) or CSV (comma), ``.gz`` allowed; or ``.h5ad`` (its obs) or
        ``.h5mu`` (the obs of its ``gex`` modality).
    cell_column
        Column holding the cell ids; ``""``: the first column of a text table, the
        obs names of an h5ad/h5mu. Ids are unique within each library; the cells table
        writes them as ``<sample>_<id>`` (:func:`cell_ids`).

    Raises
    ------
    InputError
        Unknown file type, missing file, or ``cell_column`` absent.
    """
    p = Path(path)
    src = str(p)
    if not p.is_file():
        raise InputError([Problem(src, "", "file not found",
                                  "set published.cells to the authors' cell table")])
    name = p.name.lower().removesuffix(".gz")
    if name.endswith((".h5ad", ".h5mu")):
        obs = _read_obs(p, mudata=name.endswith(".h5mu"))
        table = obs.reset_index(names="_obs_name").astype("string")
        first = "_obs_name"
    elif name.endswith(_TABLE_SUFFIXES):
        sep = "," if name.endswith(".csv") else "\t"
        table = pd.read_csv(p, sep=sep, dtype="string", keep_default_na=False,
                            na_values=["", "NA", "NaN", "nan"])
        first = str(table.columns[0])
    else:
        raise InputError([Problem(src, "", "unknown file type",
                                  "give a .tsv/.txt/.csv (gzip allowed), .h5ad or .h5mu")])
    column = cell_column or first
    if column not in table.columns:
        raise InputError([Problem(src, f"column '{column}'", "not found (published.cell_column)",
                                  f"name one of {list(table.columns)[:10]}")])
    table = table.rename(columns={column: "cell"})
    return table.drop(columns=[c for c in ("_obs_name",) if c in table.columns])


def _read_obs(path: Path, *, mudata: bool) -> pd.DataFrame:
    """The obs of an h5ad, or of the ``gex`` modality of an h5mu (no matrix read)."""
    if not mudata:
        import anndata

        return anndata.read_h5ad(path, backed="r").obs.copy()
    import mudata as md

    data = md.read_h5mu(path, backed=True)  # matrices stay on disk
    if "gex" not in data.mod:
        raise InputError([Problem(str(path), "", f"no 'gex' modality (has {list(data.mod)})",
                                  "write the annotated cells as an h5ad or a table")])
    return data.mod["gex"].obs.copy()


def _rows(index: pd.Index, table: pd.DataFrame, cols: Sequence[str]) -> str:
    """The first failing rows (1-based data rows) with their values, for a message."""
    shown = [f"row {i + 1} " + str({c: table.at[i, c] for c in cols})
             for i in index[:MAX_ROWS_SHOWN]]
    more = f" and {len(index) - MAX_ROWS_SHOWN} more" if len(index) > MAX_ROWS_SHOWN else ""
    return "; ".join(shown) + more


def _check_columns(table: pd.DataFrame, columns: Mapping[str, str], source: str) -> None:
    missing = [(key, col) for key, col in columns.items() if col and col not in table.columns]
    if missing:
        raise InputError([Problem(source, f"column '{col}'", "not found",
                                  f"set published.{key} to one of {list(table.columns)[:10]}")
                          for key, col in missing])


def _check_ids(table: pd.DataFrame, *, source: str, problems: list[Problem]) -> None:
    """Every cell has a unique id, a library and a label."""
    for col, what in (("cell", "cell id"), ("_sample", "library"), ("_label", "label")):
        bad = table.index[table[col].isna()]
        if len(bad):
            problems.append(Problem(source, _rows(bad, table, ["cell"]),
                                    f"{len(bad)} cell(s) have no {what}",
                                    f"give every cell a {what}, or remove those cells"))
    ids = cell_ids(table["cell"], table["_sample"])
    dup = table.index[ids.duplicated(keep=False) & ids.notna()]
    if len(dup):
        problems.append(Problem(source, _rows(dup, table, ["cell", "_sample"]),
                                f"{len(dup)} rows share a cell id within a library",
                                "cell ids must be unique within each library"))


def cell_ids(cell: pd.Series, sample: pd.Series) -> pd.Series:
    """Cell ids as ``<sample>_<id>`` (DESIGN.md), the library prefixed where the table's id
    does not already start with it (tables often give bare barcodes)."""
    prefix = sample.astype("string") + "_"
    has = pd.Series([bool(c.startswith(p)) if isinstance(c, str) and isinstance(p, str)
                     else False for c, p in zip(cell, prefix)], index=cell.index)
    return cell.where(has, prefix + cell)


def _check_sheet(
    table: pd.DataFrame, samples: Mapping[str, Mapping[str, Any]], excluded: set[str],
    *, source: str, problems: list[Problem],
) -> None:
    """Libraries and patients of the table against the sample sheet."""
    known = set(samples) | excluded
    bad = table.index[table["_sample"].notna() & ~table["_sample"].isin(known)]
    if len(bad):
        problems.append(Problem(source, _rows(bad, table, ["cell", "_sample"]),
                                f"{table.loc[bad, '_sample'].nunique()} library id(s) are not in "
                                "the sample sheet",
                                "add a sheet row per library (gex/vdj may be empty), or "
                                "correct the ids"))
    absent = sorted(set(samples) - set(table["_sample"].dropna()))
    if absent:
        problems.append(Problem(source, "libraries of the sample sheet",
                                f"sheet libraries {absent[:MAX_ROWS_SHOWN]} have no cell",
                                "remove them from the sheet or list them in exclude_samples"))
    if "_patient" in table:
        sheet = table["_sample"].map({s: str(m["patient"]) for s, m in samples.items()})
        differs = (table["_patient"] != sheet).fillna(True)  # a missing patient differs
        bad = table.index[sheet.notna() & differs]
        if len(bad):
            problems.append(Problem(source, _rows(bad, table, ["cell", "_sample", "_patient"]),
                                    f"{len(bad)} cell(s) have another patient than their "
                                    "library's sheet row",
                                    "correct the patient of the sheet row or of the table"))


def _check_labels(table: pd.DataFrame, calls: Mapping[str, LabelCall], *, source: str,
                  label_map_source: str, problems: list[Problem]) -> None:
    bad = table.index[table["_label"].notna() & ~table["_label"].isin(list(calls))]
    if len(bad):
        labels = sorted(table.loc[bad, "_label"].unique())
        problems.append(Problem(source, _rows(bad, table, ["cell", "_label"]),
                                f"label(s) {labels[:MAX_ROWS_SHOWN]} are not in the label map "
                                f"{label_map_source}",
                                "add each to the map (an empty {} keeps it as its own state)"))


def _warning(check: str, count: int, detail: str, action: str) -> dict[str, Any]:
    return {"sample": "", "step": "import", "check": check, "count": int(count),
            "detail": detail, "action": action}


def _import_warnings(cells: pd.DataFrame, calls: Mapping[str, LabelCall],
                     *, clone_column: str) -> pd.DataFrame:
    """What the published input lacks, and what the features do without it."""
    rows = []
    if not clone_column:
        rows.append(_warning(
            "no_tcr", len(cells), "the published cell table gives no clonotypes "
            "(published.clone_column is empty): the clonal and repertoire features "
            "(tcr_fraction, clonal diversity, top and expanded clone fractions, rep_*) are "
            "skipped", "name the table's clonotype column in published.clone_column"))
    unknown = int(cells["cd4_cd8"].isna().sum())
    if unknown:
        rows.append(_warning(
            "lineage_unknown", unknown, f"{unknown} cell(s) have a label that gives no "
            "cd4_cd8 lineage: the CD4:CD8 ratio and the CD4/CD8 subset fractions use the "
            "cells with a known lineage only", "give cd4_cd8 in the label map where the "
            "authors' label implies it"))
    if "car_positive" not in cells:
        rows.append(_warning(
            "no_car", len(cells), "no label of the map gives car_positive: the CAR+ "
            "fraction and the CAR+ subset features are skipped",
            "give car_positive in the label map where the authors' labels say it"))
    own = sorted(lab for lab, c in calls.items() if c.state == own_state(lab)
                 and c.state not in MAP_STATES and lab in set(cells["author_label"]))
    if own:
        rows.append(_warning(
            "own_states", len(own), f"label(s) {own} have no counterpart in our states and "
            "stay states of their own (frac_<label> features)",
            "map a label to one of our states in the label map where it has one"))
    return pd.DataFrame(rows, columns=["sample", "step", "check", "count", "detail", "action"])


def import_cells(
    table: pd.DataFrame,
    *,
    label_map: Mapping[str, LabelCall],
    samples: Mapping[str, Mapping[str, Any]],
    excluded: Sequence[str],
    sample_column: str,
    patient_column: str,
    label_column: str,
    clone_column: str,
    source: str = "published cell table",
    label_map_source: str = "label map",
) -> ImportedCells:
    """Check the authors' cell table against the sheet and map its labels to our calls.

    Parameters
    ----------
    table
        The cell table (:func:`read_cell_table`: text columns, cell ids in ``cell``).
    label_map
        Label -> :class:`LabelCall` (:func:`parse_label_map`).
    samples
        The cohort's libraries (sheet rows, excluded ones left out): sample ->
        :data:`SHEET_COLUMNS` values.
    excluded
        Libraries of the sheet left out (config ``exclude_samples``): their cells are
        dropped.
    sample_column, patient_column, label_column, clone_column
        Columns of ``table``: the library, the patient (``""``: none, taken from the
        sheet), the authors' label and the clonotype (``""``: none).
    source, label_map_source
        File names for messages.

    Returns
    -------
    ImportedCells
        The per-cell table, the per-library summary and the warning rows.

    Raises
    ------
    InputError
        A column is missing; cell ids missing or duplicated; libraries not in the sheet
        or sheet libraries without cells; a patient other than the sheet's; a label
        absent from the map. Each lists the first failing rows and the fix; nothing
        is written.
    """
    cols = {"sample_column": sample_column, "patient_column": patient_column,
            "label_column": label_column, "clone_column": clone_column}
    if not label_column:
        raise InputError([Problem("config", "key 'published.label_column'", "is empty",
                                  "name the column of the authors' cell labels")])
    _check_columns(table, cols, source)
    t = table.reset_index(drop=True).copy()
    t["_sample"] = t[sample_column].str.strip()
    t["_label"] = t[label_column].str.strip()
    if patient_column:
        t["_patient"] = t[patient_column].str.strip()
    problems: list[Problem] = []
    _check_ids(t, source=source, problems=problems)
    _check_sheet(t, samples, set(excluded), source=source, problems=problems)
    _check_labels(t, label_map, source=source, label_map_source=label_map_source,
                  problems=problems)
    if problems:
        raise InputError(problems)
    n_in = t.groupby("_sample").size()
    t = t[t["_sample"].isin(list(samples))]
    cells = _cells_table(t, label_map, samples, clone_column=clone_column)
    summary = _summary(cells, samples, n_in)
    logger.info("%d cells of %d libraries imported from %s (%d labels)", len(cells),
                len(samples), source, cells["author_label"].nunique())
    return ImportedCells(cells, summary,
                         _import_warnings(cells, label_map, clone_column=clone_column))


def _summary(cells: pd.DataFrame, samples: Mapping[str, Mapping[str, Any]],
             n_in: pd.Series) -> pd.DataFrame:
    """One row per library (:data:`SUMMARY_COLUMNS`)."""
    return pd.DataFrame({
        "sample": list(samples),
        "patient": [str(samples[s]["patient"]) for s in samples],
        "compartment": [str(samples[s]["compartment"]) for s in samples],
        "n_cells_in": [int(n_in.get(s, 0)) for s in samples],
        "n_cells_out": [int((cells["sample"] == s).sum()) for s in samples],
        "sample_excluded": False,
        "n_labels": [int(cells.loc[cells["sample"] == s, "author_label"].nunique())
                     for s in samples],
        "tcr": "clone_id" in cells.columns,
    }, columns=list(SUMMARY_COLUMNS))


def _cells_table(t: pd.DataFrame, calls: Mapping[str, LabelCall],
                 samples: Mapping[str, Mapping[str, Any]], *, clone_column: str) -> pd.DataFrame:
    """The ``cells.tsv.gz`` layout of the checked table."""
    out = pd.DataFrame({"cell": cell_ids(t["cell"], t["_sample"]).astype(str).to_numpy(),
                        "sample": t["_sample"].astype(str).to_numpy()})
    for col in SHEET_COLUMNS:
        out[col] = [samples[s].get(col) for s in out["sample"]]
    out["timepoint_day"] = pd.to_numeric(out["timepoint_day"], errors="coerce")
    labels = t["_label"].astype(str).to_numpy()
    out["cd4_cd8"] = pd.array([calls[lab].cd4_cd8 for lab in labels], dtype="string")
    out["state"] = [calls[lab].state for lab in labels]
    if any(c.car_positive is not None for c in calls.values()):
        out["car_positive"] = pd.array([calls[lab].car_positive for lab in labels],
                                       dtype="boolean")
    if clone_column:
        clone = t[clone_column].str.strip()
        out["clone_id"] = clone.mask(clone == "").to_numpy()
    out["author_label"] = labels
    return out.sort_values(["sample", "cell"], kind="mergesort").reset_index(drop=True)


def import_published(
    cells_path: str | os.PathLike,
    label_map_path: str | os.PathLike,
    vdj_paths: Sequence[str | os.PathLike] = (),
    *,
    vdj_samples: Sequence[str],
    clonotypes: Mapping[str, Any],
    samples: Mapping[str, Mapping[str, Any]],
    excluded: Sequence[str],
    cell_column: str,
    sample_column: str,
    patient_column: str,
    label_column: str,
    clone_column: str,
) -> ImportedCells:
    """Read the authors' cell table and label map and import them (rule ``import_cells``).

    Parameters
    ----------
    cells_path, label_map_path
        Config ``published.cells`` and ``published.label_map``.
    vdj_paths, vdj_samples
        The sheet's ``vdj`` files and their libraries (same order): their contigs give
        the clonotypes of those libraries (:mod:`cartcohort.published_tcr`).
    clonotypes
        The clonotype definition (config ``clonotypes``, keys
        :data:`~cartcohort.published_tcr.CLONOTYPE_KEYS`).
    samples, excluded
        As in :func:`import_cells`.
    cell_column
        As in :func:`read_cell_table`.
    sample_column, patient_column, label_column, clone_column
        As in :func:`import_cells` (config ``published.*``).

    Returns
    -------
    ImportedCells
        See :func:`import_cells`; with contigs, the cells have ``clone_id`` and
        ``clone_size`` and the summary's ``tcr`` says which libraries.

    Raises
    ------
    InputError
        As :func:`import_cells`; contigs given beside ``clone_column``; contigs of which
        no barcode is a cell of their library
        (:func:`~cartcohort.published_tcr.library_airr`).
    """
    if len(vdj_paths) != len(vdj_samples):
        raise ValueError("vdj_paths and vdj_samples differ in length")
    vdj = {s: p for s, p in zip(vdj_samples, vdj_paths) if s in samples}
    if vdj and clone_column:
        raise InputError([Problem(
            "config", "key 'published.clone_column'", f"is {clone_column!r} while the sample "
            f"sheet gives TCR contigs (vdj) for {sorted(vdj)[:MAX_ROWS_SHOWN]}",
            "use one source of clonotypes: empty published.clone_column, or the sheet's "
            "vdj column")])
    content, map_source = read_yaml_file(label_map_path, setting="published.label_map")
    calls = parse_label_map(content, source=map_source)
    table = read_cell_table(cells_path, cell_column=cell_column)
    imported = import_cells(
        table, label_map=calls, samples=samples, excluded=excluded,
        sample_column=sample_column, patient_column=patient_column,
        label_column=label_column, clone_column=clone_column,
        source=str(cells_path), label_map_source=map_source,
    )
    if not vdj:
        return imported
    from .published_tcr import published_clonotypes

    clones = published_clonotypes(imported.cells, vdj=vdj, clonotypes=clonotypes)
    warnings = imported.warnings[imported.warnings["check"] != "no_tcr"]
    imported.warnings = pd.concat(
        [warnings, pd.DataFrame(clones.warnings, columns=warnings.columns)],
        ignore_index=True)
    imported.cells = clones.cells
    imported.summary["tcr"] = imported.summary["sample"].isin(clones.tcr_samples)
    return imported

