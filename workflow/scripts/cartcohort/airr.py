"""Read TCR contigs into scirpy's AIRR AnnData without importing scirpy.

scirpy 0.22.5's readers (``scirpy.io.read_10x_vdj``, ``scirpy.io.read_airr``)
build one Python ``AirrCell`` per cell, validate every chain against the AIRR
schema, and turn the cells into an awkward Array with ``ak.Array`` (awkward's
``ArrayBuilder``). Importing scirpy also imports scanpy (1.5-2 s per process).
This module builds the *same* AnnData column by column:

* the cells are the groups of the cell-id column (10x CSV: sorted like
  ``DataFrame.groupby``; 10x JSON and AIRR TSV: in order of first appearance),
  chains keep their file order within a cell;
* every value is sanitised like ``AirrCell.add_chain`` (``NaN``/``None`` and the
  strings ``"NaN" "nan" "None" "N/A" ""`` become ``None``), the required AIRR
  fields absent from the input are added as ``None``, and the record fields are
  sorted by name;
* each field gets the type ``ArrayBuilder`` would infer from its values
  (``string``, ``int64``, ``float64``, ``bool``; ``?`` when a value is ``None``;
  ``?unknown`` when all are; anything else goes through ``ak.from_iter``) and
  the same layout (``IndexedOptionArray`` over the non-missing values);
* integer/number/boolean fields of the AIRR schema are validated like
  ``RearrangementSchema.validate_row`` (a ``ValueError`` naming the field);
* ``obs`` has no columns, its index (named ``cell_id``) holds the cell ids as
  strings (``"None"`` for an id scirpy treats as missing), and
  ``uns['scirpy_version']`` is :data:`SCIRPY_VERSION`.

Equivalence with scirpy is proven field by field (values, types, layouts, obs,
uns) by ``tests/test_airr_reader.py``. Only awkward, numpy, pandas and anndata
are imported.

Not reproduced: scirpy passes its cell-attribute list as the string ``"is_cell"``,
so a chain field literally named ``i``, ``s``, ``_``, ``c``, ``e`` or ``l`` would
move to ``obs``; no contig format has such fields. Where scirpy fails an
``assert`` or overflows (malformed JSON, integers beyond 64 bits) this module
raises ``ValueError``, and it returns an AnnData without cells where scirpy
raises ``KeyError`` (no contig left after filtering).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import anndata as ad
import awkward as ak
import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: The scirpy release whose data structure this module reproduces; written to
#: ``uns['scirpy_version']`` (scirpy refuses AIRR AnnData without it).
SCIRPY_VERSION = "0.22.5"

#: Required fields of the AIRR Rearrangement schema (airr 2.0.0), in schema order.
AIRR_REQUIRED = (
    "sequence_id",
    "sequence",
    "rev_comp",
    "productive",
    "v_call",
    "d_call",
    "j_call",
    "sequence_alignment",
    "germline_alignment",
    "junction",
    "junction_aa",
    "v_cigar",
    "d_cigar",
    "j_cigar",
)
#: Fields of type ``boolean`` in the AIRR Rearrangement schema (airr 2.0.0).
AIRR_BOOLEAN = frozenset(
    {
        "complete_vdj",
        "j_frameshift",
        "productive",
        "rev_comp",
        "stop_codon",
        "v_frameshift",
        "vj_in_frame",
    }
)
#: Fields of type ``number`` in the AIRR Rearrangement schema (airr 2.0.0).
AIRR_NUMBER = frozenset(
    f"{seg}_{kind}"
    for seg in ("v", "d", "d2", "j", "c")
    for kind in ("score", "identity", "support")
)
#: Fields of type ``integer`` in the AIRR Rearrangement schema (airr 2.0.0).
AIRR_INTEGER = frozenset(
    [
        f"{seg}_{kind}_{end}"
        for seg in ("v", "d", "d2", "j", "c")
        for kind in ("sequence", "germline", "alignment")
        for end in ("start", "end")
    ]
    + [
        f"{region}_{end}"
        for region in ("cdr1", "cdr2", "cdr3", "fwr1", "fwr2", "fwr3", "fwr4")
        for end in ("start", "end")
    ]
    + [
        "junction_length",
        "junction_aa_length",
        "np1_length",
        "np2_length",
        "np3_length",
        "n1_length",
        "n2_length",
        "n3_length",
        "p3v_length",
        "p5d_length",
        "p3d_length",
        "p5d2_length",
        "p3d2_length",
        "p5j_length",
        "v_frameshift",
        "j_frameshift",
        "d_frame",
        "d2_frame",
        "consensus_count",
        "duplicate_count",
        "umi_count",
    ]
) - AIRR_BOOLEAN

#: Strings scirpy treats as missing (``scirpy.util._is_na2``).
SCIRPY_NA_STRINGS = ("NaN", "nan", "None", "N/A", "")
#: Spellings of "missing" in gene calls, CIGARs and ``locus`` of AIRR TSVs in the wild;
#: blanked before the locus is inferred (cart-cohort's own pre-processing).
AIRR_NA_LIKE = ("NA", "N/A", "None", "nan", "NaN", "null")

_TRUE_VALUES = ("True", "true", "TRUE", "T", "t", "1")
_FALSE_VALUES = ("False", "false", "FALSE", "F", "f", "0")
#: ``airr.schema.Schema._to_bool_map``
_TO_BOOL: dict[Any, bool] = {x: True for x in (*_TRUE_VALUES, 1, True)}
_TO_BOOL.update({x: False for x in (*_FALSE_VALUES, 0, False)})

#: Codons scirpy's ``_translate_dna_to_protein`` reads as C, and as W or F.
_CYS_CODONS = ("TGT", "TGC")
_TRP_PHE_CODONS = ("TGG", "TTT", "TTC")
_CR6_REGIONS = ("fwr1", "fwr2", "fwr3", "fwr4", "cdr1", "cdr2")
_VJ_LOCI = ("TRA", "TRG", "IGK", "IGL")
_VDJ_LOCI = ("TRB", "TRD", "IGH")
_JSON_REGIONS = {
    "L-REGION+V-REGION": "v",
    "D-REGION": "d",
    "J-REGION": "j",
    "C-REGION": "c",
}


def _schema_type(field: str) -> str | None:
    if field in AIRR_BOOLEAN:
        return "boolean"
    if field in AIRR_INTEGER:
        return "integer"
    if field in AIRR_NUMBER:
        return "number"
    return None


# --------------------------------------------------------------------------- scalar rules
# Exact copies of the scalar rules of scirpy/airr, applied once per distinct value.


def _is_na2(x: Any) -> bool:
    """``scirpy.util._is_na2``."""
    return bool(pd.isnull(x) or x in SCIRPY_NA_STRINGS)


def _is_true2(x: Any) -> bool:
    """``scirpy.util._is_true2``: truthy, not ``"False"/"false"/"0"``, not missing."""
    is_false = (x in ("False", "false", "0") or not bool(x)) and not _is_na2(x)
    return not is_false and not _is_na2(x)


def _to_bool(value: Any) -> bool | None:
    """``RearrangementSchema.to_bool(value, validate=False)``."""
    if value == "" or value is None:
        return None
    return _TO_BOOL.get(value, None)


def _to_number(value: Any, cast: type) -> Any:
    """``RearrangementSchema.to_int`` / ``to_float`` (``validate=False``) for
    ``cast`` = ``int`` / ``float``: empty -> ``None``, unparsable -> ``None``."""
    if value == "" or value is None:
        return None
    if isinstance(value, cast):
        return value
    try:
        return cast(value)
    except ValueError:
        return None


def _to_int(value: Any) -> int | None:
    """``RearrangementSchema.to_int(value, validate=False)``."""
    return _to_number(value, int)


def _to_float(value: Any) -> float | None:
    """``RearrangementSchema.to_float(value, validate=False)``."""
    return _to_number(value, float)
    if isinstance(value, float):
        return value
    try:
        return float(value)
    except ValueError:
        return None


def _minus_one(value: Any) -> Any:
    """``RearrangementReader``'s 1-based to 0-based shift of ``*_start`` fields."""
    try:
        return value - 1
    except TypeError:
        return None


def _valid(spec: str, value: Any) -> bool:
    """Whether ``RearrangementSchema.validate_row`` accepts ``value`` for a ``spec`` field."""
    if spec == "boolean":
        return _TO_BOOL.get(value, None) is not None
    if spec == "integer":
        if isinstance(value, int):
            return True
        try:
            int(value)
        except (ValueError, OverflowError):
            return False
        return True
    if isinstance(value, float):
        return True
    try:
        float(value)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- vectorised helpers


def _as_values(column: pd.Series | np.ndarray | Sequence[Any]) -> np.ndarray:
    """A column as a 1-d numpy array (numpy dtypes kept, everything else as objects)."""
    if isinstance(column, pd.Series):
        if isinstance(column.dtype, np.dtype):
            return column.to_numpy()
        return column.to_numpy(dtype=object, na_value=None)
    if isinstance(column, np.ndarray):
        return column
    return np.fromiter(column, dtype=object, count=len(column))


def _map_unique(values: np.ndarray, func: Callable[[Any], Any]) -> np.ndarray:
    """``[func(v) for v in values]`` as an object array, ``func`` called once per distinct value."""
    if len(values) == 0:
        return np.empty(0, dtype=object)
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    mapped = np.empty(len(uniques), dtype=object)
    mapped[:] = [func(u) for u in np.asarray(uniques, dtype=object)]
    return mapped[codes]


def _na_mask(values: np.ndarray) -> np.ndarray:
    """Where scirpy's ``_is_na2`` is true (missing values and the NA strings)."""
    if values.dtype.kind in "biu":
        return np.zeros(len(values), dtype=bool)
    if values.dtype.kind == "f":
        return np.isnan(values)
    mask = pd.isnull(values)
    if values.dtype == object:
        mask |= pd.Series(values, dtype=object).isin(SCIRPY_NA_STRINGS).to_numpy()
    return np.asarray(mask, dtype=bool)


def scirpy_is_true(values: pd.Series | np.ndarray | Sequence[Any]) -> np.ndarray:
    """Vectorised ``scirpy.util._is_true``: ``True``/``"true"``/``1``/any other truthy
    value that is not ``"False"``, ``"false"``, ``"0"`` or missing.

    Parameters
    ----------
    values
        A column (bools, strings, numbers, missing values).

    Returns
    -------
    numpy.ndarray
        Boolean array of the same length.
    """
    return _map_unique(_as_values(values), _is_true2).astype(bool)


def _string_content(values: np.ndarray) -> ak.contents.Content:
    """Strings as ``ArrayBuilder`` stores them (UTF-8 bytes, int64 offsets)."""
    encoded = [s.encode("utf-8") for s in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return ak.contents.ListOffsetArray(
        ak.index.Index64(offsets),
        ak.contents.NumpyArray(data, parameters={"__array__": "char"}),
        parameters={"__array__": "string"},
    )


def _int64(values: np.ndarray | list, field: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.int64)
    except OverflowError:
        raise ValueError(f"field '{field}' holds an integer beyond the 64-bit range") from None


def _classify(types: set[type]) -> str:
    if all(issubclass(t, str) for t in types):
        return "string"
    if all(issubclass(t, (bool, np.bool_)) for t in types):
        return "bool"
    if all(issubclass(t, (int, np.integer)) and not issubclass(t, bool) for t in types):
        return "int"
    if all(
        issubclass(t, (int, np.integer, float, np.floating)) and not issubclass(t, bool)
        for t in types
    ):
        return "float"
    return "other"


def _field_content(values: np.ndarray, field: str) -> ak.contents.Content:
    """One record field as ``ArrayBuilder`` would build it from ``values`` (NA sanitised)."""
    n = len(values)
    if n == 0:
        return ak.contents.EmptyArray()
    if values.dtype.kind not in "biufO":
        values = values.astype(object)
    na = _na_mask(values)
    present = values[~na]
    kind = values.dtype.kind
    if len(present) == 0:
        content: ak.contents.Content = ak.contents.EmptyArray()
    elif kind == "b":
        content = ak.contents.NumpyArray(present.astype(bool))
    elif kind in "iu":
        if kind == "u" and present.max() > np.iinfo(np.int64).max:
            raise ValueError(f"field '{field}' holds an integer beyond the 64-bit range")
        content = ak.contents.NumpyArray(_int64(present, field))
    elif kind == "f":
        content = ak.contents.NumpyArray(present.astype(np.float64))
    else:
        cls = _classify(set(map(type, present)))
        if cls == "string":
            content = _string_content(present)
        elif cls == "bool":
            content = ak.contents.NumpyArray(present.astype(bool))
        elif cls == "int":
            content = ak.contents.NumpyArray(_int64(present.tolist(), field))
        elif cls == "float":
            content = ak.contents.NumpyArray(np.asarray(present.tolist(), dtype=np.float64))
        else:
            # unusual mixtures (e.g. bools and strings): let ArrayBuilder decide
            sanitised = values.copy()
            sanitised[na] = None
            try:
                return ak.from_iter(sanitised.tolist(), highlevel=False)
            except OverflowError:
                raise ValueError(
                    f"field '{field}' holds a number beyond the 64-bit range"
                ) from None
    if not na.any():
        return content
    index = np.where(na, -1, np.cumsum(~na) - 1).astype(np.int64)
    return ak.contents.IndexedOptionArray(ak.index.Index64(index), content)


def _validate(values: np.ndarray, field: str, spec: str) -> None:
    """``RearrangementSchema.validate_row`` for one typed field (missing values pass)."""
    present_at = np.flatnonzero(~_na_mask(values))
    if len(present_at) == 0:
        return
    present = values[present_at]
    if present.dtype.kind in "iu" and spec != "boolean":
        return
    if present.dtype.kind == "f" and spec == "number":
        return
    ok = _map_unique(present, lambda v: _valid(spec, v)).astype(bool)
    if not ok.all():
        first = int(np.argmin(ok))
        raise ValueError(
            f"field '{field}' has invalid {'bool' if spec == 'boolean' else spec} "
            f"{present[first]!r} (contig {int(present_at[first]) + 1})"
        )


def _cdr3_from_junction(
    junction_aa: np.ndarray, junction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised ``scirpy.io._io._cdr3_from_junction``: the junction without its
    conserved C and W/F (``None`` when they are not there)."""
    out = []
    for values, name in ((junction_aa, "junction_aa"), (junction, "junction")):
        values = _as_values(values)
        present = ~_na_mask(values)
        result = np.full(len(values), None, dtype=object)
        if present.any():
            if not all(issubclass(t, str) for t in set(map(type, values[present]))):
                first = next(v for v in values[present] if not isinstance(v, str))
                raise TypeError(f"field '{name}' holds a non-text value {first!r}")
            s = pd.Series(values[present], dtype=object)
            if name == "junction_aa":
                ok = s.str[0].eq("C") & s.str[-1].isin(["W", "F"])
                core = s.str[1:-1]
            else:
                ok = s.str[:3].isin(_CYS_CODONS) & s.str[-3:].isin(_TRP_PHE_CODONS)
                core = s.str[3:-3]
            result[np.flatnonzero(present)[ok.to_numpy()]] = core[ok].to_numpy()
        out.append(result)
    return out[0], out[1]


# --------------------------------------------------------------------------- the builder


def from_contigs(
    contigs: pd.DataFrame,
    *,
    cell_id: str = "cell_id",
    sort_cells: bool = False,
    fields: Sequence[str] | None = None,
) -> ad.AnnData:
    """Build scirpy's AIRR AnnData from a table of chains, one row per chain.

    The result equals ``scirpy.io.from_airr_cells`` applied to ``AirrCell``
    objects holding the same chains (values, awkward types and layout, obs,
    uns), without a Python loop over cells.

    Parameters
    ----------
    contigs
        One row per chain. ``cell_id`` names the cell; every other column is a
        chain field, holding the values scirpy's reader would put in the chain
        dict (before ``AirrCell.add_chain`` sanitises them): ``NaN``/``None`` and
        the strings ``"NaN" "nan" "None" "N/A" ""`` become ``None``.
    cell_id
        Column with the cell ids.
    sort_cells
        ``True``: cells in sorted order of their id and rows with a missing id
        dropped (like ``DataFrame.groupby``, scirpy's 10x CSV reader);
        ``False``: in order of first appearance (scirpy's JSON and AIRR readers).
    fields
        Order of the record fields (must name every chain field and the
        required AIRR fields); default sorted by name, as ``AirrCell.add_chain``
        sorts each chain's keys.

    Returns
    -------
    AnnData
        ``obsm['airr']``: awkward Array, one list of chain records per cell
        (chains in row order); ``obs`` without columns, index ``cell_id``;
        ``uns['scirpy_version']``.

    Raises
    ------
    ValueError
        When a value of an integer/number/boolean AIRR field is not valid for
        its type (as ``RearrangementSchema.validate_row``), or ``fields`` does
        not match the columns.
    """
    if cell_id not in contigs.columns:
        raise KeyError(f"the contig table has no '{cell_id}' column")
    chain_fields = [str(c) for c in contigs.columns if c != cell_id]
    all_fields = set(chain_fields) | set(AIRR_REQUIRED)
    if fields is None:
        order_fields = sorted(all_fields)
    else:
        order_fields = list(fields)
        if set(order_fields) != all_fields or len(order_fields) != len(all_fields):
            raise ValueError(
                "fields must name every chain field and the required AIRR fields once; "
                f"missing {sorted(all_fields - set(order_fields))}, "
                f"extra {sorted(set(order_fields) - all_fields)}"
            )

    ids = _as_values(contigs[cell_id])
    codes, uniques = pd.factorize(ids, sort=sort_cells, use_na_sentinel=sort_cells)
    rows = np.flatnonzero(codes >= 0)
    rows = rows[np.argsort(codes[rows], kind="stable")]
    counts = np.bincount(codes[rows], minlength=len(uniques))
    offsets = np.zeros(len(uniques) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])

    by_name = {str(c): c for c in contigs.columns}
    contents = []
    for field in order_fields:
        if field in by_name and field != cell_id:
            values = _as_values(contigs[by_name[field]])[rows]
            spec = _schema_type(field)
            if spec is not None:
                _validate(values, field, spec)
            contents.append(_field_content(values, field))
        elif len(rows):
            index = np.full(len(rows), -1, dtype=np.int64)
            contents.append(
                ak.contents.IndexedOptionArray(ak.index.Index64(index), ak.contents.EmptyArray())
            )
        else:
            contents.append(ak.contents.EmptyArray())
    records = ak.contents.RecordArray(contents, order_fields, length=len(rows))
    airr = ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), records))

    names = np.asarray(uniques, dtype=object).copy()
    names[_na_mask(names)] = None
    obs = pd.DataFrame(index=pd.Index(names, dtype=object, name="cell_id").astype(str))
    return ad.AnnData(
        X=None, obs=obs, obsm={"airr": airr}, uns={"scirpy_version": SCIRPY_VERSION}
    )


# --------------------------------------------------------------------------- readers


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _open_text(path: Path) -> IO[str]:
    """Open a text file, gunzipping when its content (not its name) is gzip."""
    if _is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_10x_csv(path: str | os.PathLike, *, filtered: bool = True) -> ad.AnnData:
    """Read a 10x ``{filtered,all}_contig_annotations.csv[.gz]`` like
    ``scirpy.io.read_10x_vdj``.

    Parameters
    ----------
    path
        The contig table (gzip recognised by content, whatever the name).
    filtered
        Keep only contigs with ``is_cell`` and ``high_confidence`` true.

    Returns
    -------
    AnnData
        As :func:`from_contigs`; cells sorted by barcode. Chain fields:
        ``locus`` (chain), ``junction_aa`` (cdr3), ``junction`` (cdr3_nt),
        ``umi_count`` (umis), ``consensus_count`` (reads), ``productive``
        (bool: true unless ``False``/``false``/``0``/missing),
        ``v/d/j/c_call`` (v/d/j/c_gene), ``is_cell``, ``high_confidence``,
        ``sequence_id`` (contig_id), Cell Ranger 6+ ``fwr1-4``/``cdr1-2``
        (``<region>_aa`` from ``<region>``, ``<region>`` from ``<region>_nt``),
        ``cdr3_aa``/``cdr3`` (junction without its conserved residues) and the
        required AIRR fields (``None``).
    """
    p = Path(path)
    df = pd.read_csv(p, compression="gzip" if _is_gzip(p) else None)
    if filtered:
        keep = scirpy_is_true(df["is_cell"]) & scirpy_is_true(df["high_confidence"])
        df = df.loc[keep]
    chains: dict[str, Any] = {
        "locus": df["chain"],
        "junction_aa": df["cdr3"],
        "junction": df["cdr3_nt"],
        "umi_count": df["umis"],
        "consensus_count": df["reads"],
        "productive": scirpy_is_true(df["productive"]),
        "v_call": df["v_gene"],
        "d_call": df["d_gene"],
        "j_call": df["j_gene"],
        "c_call": df["c_gene"],
        "is_cell": df["is_cell"],
        "high_confidence": df["high_confidence"],
        "sequence_id": df["contig_id"],
    }
    for region in _CR6_REGIONS:
        if region in df.columns:
            chains[f"{region}_aa"] = df[region]
        if f"{region}_nt" in df.columns:
            chains[region] = df[f"{region}_nt"]
    chains["cdr3_aa"], chains["cdr3"] = _cdr3_from_junction(
        _as_values(df["cdr3"]), _as_values(df["cdr3_nt"])
    )
    table = pd.DataFrame(
        {"cell_id": _as_values(df["barcode"])}
        | {k: _as_values(v) for k, v in chains.items()}
    )
    return from_contigs(table, cell_id="cell_id", sort_cells=True)


def _json_genes(annotations: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    genes: dict[str, dict[str, Any]] = {}
    for annot in annotations:
        feat = annot["feature"]
        if feat["region_type"] in _JSON_REGIONS:
            region = _JSON_REGIONS[feat["region_type"]]
            if region in genes:
                raise ValueError(f"a contig has two {feat['region_type']} annotations")
            genes[region] = {
                "chain": feat["chain"],
                "gene": feat["gene_name"],
                "start": annot["contig_match_start"],
                "end": annot["contig_match_end"],
            }
    return genes


def _json_chain(contig: Mapping[str, Any]) -> dict[str, Any]:
    """The chain dict of ``scirpy.io._io._read_10x_vdj_json`` for one contig
    (``cdr3``/``cdr3_aa`` are added later, vectorised)."""
    genes = _json_genes(contig["annotations"])
    chain: dict[str, Any] = {
        f"{r}_call": genes[r]["gene"] if r in genes else None for r in ("v", "d", "j", "c")
    }
    chain_types = [g["chain"] for g in genes.values()]
    if all(type(t) is str for t in chain_types):
        chain_type = chain_types[0] if len(set(chain_types)) == 1 else None
    else:
        chain_type = chain_types[0] if np.unique(chain_types).size == 1 else None
    chain["np1_length"] = None
    chain["np2_length"] = None
    if chain_type in _VJ_LOCI and chain["v_call"] is not None and chain["j_call"] is not None:
        if chain["d_call"] is not None:
            raise ValueError(f"a {chain_type} contig has a D region")
        chain["np1_length"] = genes["j"]["start"] - genes["v"]["end"]
    elif (
        chain_type in _VDJ_LOCI
        and chain["v_call"] is not None
        and chain["j_call"] is not None
        and chain["d_call"] is not None
    ):
        chain["np1_length"] = genes["d"]["start"] - genes["v"]["end"]
        chain["np2_length"] = genes["j"]["start"] - genes["d"]["end"]
    chain["locus"] = chain_type
    chain["junction"] = contig["cdr3_seq"]
    chain["junction_aa"] = contig["cdr3"]
    chain["umi_count"] = contig["umi_count"]
    chain["consensus_count"] = contig["read_count"]
    chain["productive"] = contig["productive"]
    chain["is_cell"] = contig["is_cell"]
    chain["high_confidence"] = contig["high_confidence"]
    chain["sequence"] = contig["sequence"]
    chain["sequence_aa"] = contig["aa_sequence"]
    chain["sequence_id"] = contig["contig_name"]
    for region in _CR6_REGIONS:
        if region in contig.keys():
            chain[region] = contig[region].get("nt_seq") if contig[region] else None
            chain[f"{region}_aa"] = contig[region].get("aa_seq") if contig[region] else None
    return chain


def read_10x_json(path: str | os.PathLike, *, filtered: bool = True) -> ad.AnnData:
    """Read a 10x ``all_contig_annotations.json[.gz]`` like ``scirpy.io.read_10x_vdj``.

    Parameters
    ----------
    path
        The JSON list of contigs (gzip recognised by content).
    filtered
        Keep only contigs with ``is_cell`` and ``high_confidence`` true.

    Returns
    -------
    AnnData
        As :func:`from_contigs`; cells in order of first appearance. Chain
        fields as scirpy: gene calls, ``locus`` and ``np1_length``/``np2_length``
        from the V/D/J/C annotations, ``junction`` (cdr3_seq), ``junction_aa``
        (cdr3), ``umi_count``, ``consensus_count`` (read_count), ``productive``,
        ``is_cell``, ``high_confidence``, ``sequence``, ``sequence_aa``,
        ``sequence_id`` (contig_name), Cell Ranger 6+ regions, ``cdr3``/``cdr3_aa``.

    Notes
    -----
    JSON is parsed into one Python object per contig whatever the reader, so
    fields are collected per contig; grouping and array building are vectorised.
    Where scirpy fails an ``assert`` (two annotations of one region, a D region
    on a VJ chain), this raises ``ValueError``.
    """
    with _open_text(Path(path)) as fh:
        contigs = json.load(fh)
    if filtered:
        contigs = [c for c in contigs if c["is_cell"] and c["high_confidence"]]
    else:
        contigs = list(contigs)
    barcodes = np.fromiter((c["barcode"] for c in contigs), dtype=object, count=len(contigs))
    chains = [_json_chain(c) for c in contigs]
    key_sets = list(dict.fromkeys(frozenset(c) for c in chains))
    present = frozenset().union(*key_sets) if key_sets else _JSON_FIELDS
    table: dict[str, np.ndarray] = {"cell_id": barcodes}
    for field in sorted(present):
        table[field] = np.fromiter((c.get(field) for c in chains), dtype=object, count=len(chains))
    table["cdr3_aa"], table["cdr3"] = _cdr3_from_junction(table["junction_aa"], table["junction"])
    fields = None
    if len(key_sets) > 1:
        # contigs with and without Cell Ranger 6+ regions: ArrayBuilder orders the record
        # fields by first appearance, walking cells (first-appearance order) and their chains
        base = set(AIRR_REQUIRED) | {"cdr3", "cdr3_aa"}
        codes, _ = pd.factorize(barcodes, use_na_sentinel=False)
        fields = []
        for keys in dict.fromkeys(
            frozenset(chains[i]) for i in np.argsort(codes, kind="stable")
        ):
            fields += [k for k in sorted(base | keys) if k not in fields]
    return from_contigs(pd.DataFrame(table), cell_id="cell_id", sort_cells=False, fields=fields)


#: Chain fields every JSON contig yields (besides the Cell Ranger 6+ regions).
_JSON_FIELDS = frozenset(
    {
        "v_call",
        "d_call",
        "j_call",
        "c_call",
        "np1_length",
        "np2_length",
        "locus",
        "junction",
        "junction_aa",
        "umi_count",
        "consensus_count",
        "productive",
        "is_cell",
        "high_confidence",
        "sequence",
        "sequence_aa",
        "sequence_id",
    }
)


def _infer_locus(df: pd.DataFrame) -> pd.Series:
    """cart-cohort's locus inference: the common first three letters (upper case) of
    the non-empty V/D/J/C calls (a ``TRAV…/DV…`` V call does not count); ``""`` when
    they disagree or there are none."""
    n = len(df)
    first = pd.Series([""] * n, index=df.index, dtype=object)
    consistent = pd.Series(True, index=df.index)
    for key in ("v_call", "d_call", "j_call", "c_call"):
        if key not in df.columns:
            continue
        g = df[key].astype(object)
        use = g.ne("")
        if key == "v_call":
            up = g.str.upper()
            use &= ~(up.str.contains("/DV", regex=False) & up.str.startswith("TRAV"))
        prefix = g.str[:3].str.upper()
        unset = first.eq("")
        first = first.where(~(use & unset), prefix)
        consistent &= ~use | prefix.eq(first)
    return first.where(consistent, "")


def read_airr_tsv(path: str | os.PathLike) -> ad.AnnData:
    """Read an AIRR rearrangement TSV like cart-cohort's pre-processing followed by
    ``scirpy.io.read_airr``.

    Pre-processing: gene calls, CIGARs and ``locus`` spelled ``NA``, ``N/A``,
    ``None``, ``nan``, ``NaN`` or ``null`` are blanked; an absent or empty
    ``locus`` is inferred from the gene calls (see :func:`_infer_locus`).
    Then, as ``airr.read_rearrangement``: boolean/integer/number fields of the
    schema are converted (invalid values become ``None``), ``*_start`` fields
    shift from 1- to 0-based (non-numeric ``*_start`` fields become ``None``),
    other fields stay text.

    Parameters
    ----------
    path
        The TSV (gzip recognised by content). Needs ``cell_id``.

    Returns
    -------
    AnnData
        As :func:`from_contigs`; cells in order of first appearance.
    """
    with _open_text(Path(path)) as fh:
        df = pd.read_csv(fh, sep="\t", dtype=str, keep_default_na=False)
    df = df.fillna("")
    df.columns = [str(c) for c in df.columns]
    for col in df.columns:
        if col.endswith(("_call", "_cigar")) or col == "locus":
            df[col] = df[col].where(~df[col].isin(AIRR_NA_LIKE), "")
    if "locus" not in df.columns:
        df["locus"] = _infer_locus(df)
    else:
        empty = df["locus"].eq("")
        if empty.any():
            df.loc[empty, "locus"] = _infer_locus(df.loc[empty])
    if "cell_id" not in df.columns:
        raise KeyError("cell_id")
    table: dict[str, np.ndarray] = {}
    for col in df.columns:
        values = df[col].to_numpy(dtype=object)
        spec = _schema_type(col)
        if spec == "boolean":
            values = _map_unique(values, _to_bool)
        elif spec == "integer":
            values = _map_unique(values, _to_int)
        elif spec == "number":
            values = _map_unique(values, _to_float)
        if col.endswith("_start"):
            values = _map_unique(values, _minus_one)
        table[col] = values
    return from_contigs(pd.DataFrame(table), cell_id="cell_id", sort_cells=False)
