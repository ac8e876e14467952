"""Build scirpy's AIRR AnnData from a table of chains, without importing scirpy.

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

from collections.abc import Callable, Sequence
from typing import Any

import anndata as ad
import awkward as ak
import numpy as np
import pandas as pd

from ..sheets import (
    AIRR_FALSE_VALUES,
    AIRR_REQUIRED,
    AIRR_TRUE_VALUES,
    SCIRPY_NA_STRINGS,
    schema_type,
)

#: The scirpy release whose data structure this module reproduces; written to
#: ``uns['scirpy_version']`` (scirpy refuses AIRR AnnData without it).
SCIRPY_VERSION = "0.22.5"

#: ``airr.schema.Schema._to_bool_map``
_TO_BOOL: dict[Any, bool] = {x: True for x in (*AIRR_TRUE_VALUES, 1, True)}
_TO_BOOL.update({x: False for x in (*AIRR_FALSE_VALUES, 0, False)})


# --------------------------------------------------------------------------- scalar rules
# Exact copies of the scalar rules of scirpy/airr, applied once per distinct value.


def _is_na2(x: Any) -> bool:
    """``scirpy.util._is_na2``."""
    return bool(pd.isnull(x) or x in SCIRPY_NA_STRINGS)


def _is_true2(x: Any) -> bool:
    """``scirpy.util._is_true2``: truthy, not ``"False"/"false"/"0"``, not missing."""
    is_false = (x in ("False", "false", "0") or not bool(x)) and not _is_na2(x)
    return not is_false and not _is_na2(x)


def to_bool(value: Any) -> bool | None:
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


def to_int(value: Any) -> int | None:
    """``RearrangementSchema.to_int(value, validate=False)``."""
    return _to_number(value, int)


def to_float(value: Any) -> float | None:
    """``RearrangementSchema.to_float(value, validate=False)``."""
    return _to_number(value, float)


def minus_one(value: Any) -> Any:
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


def as_values(column: pd.Series | np.ndarray | Sequence[Any]) -> np.ndarray:
    """A column as a 1-d numpy array (numpy dtypes kept, everything else as objects)."""
    if isinstance(column, pd.Series):
        if isinstance(column.dtype, np.dtype):
            return column.to_numpy()
        return column.to_numpy(dtype=object, na_value=None)
    if isinstance(column, np.ndarray):
        return column
    return np.fromiter(column, dtype=object, count=len(column))


def map_unique(values: np.ndarray, func: Callable[[Any], Any]) -> np.ndarray:
    """``[func(v) for v in values]`` as an object array, ``func`` called once per distinct value."""
    if len(values) == 0:
        return np.empty(0, dtype=object)
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    mapped = np.empty(len(uniques), dtype=object)
    mapped[:] = [func(u) for u in np.asarray(uniques, dtype=object)]
    return mapped[codes]


def na_mask(values: np.ndarray) -> np.ndarray:
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
    return map_unique(as_values(values), _is_true2).astype(bool)


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
    na = na_mask(values)
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
    present_at = np.flatnonzero(~na_mask(values))
    if len(present_at) == 0:
        return
    present = values[present_at]
    if present.dtype.kind in "iu" and spec != "boolean":
        return
    if present.dtype.kind == "f" and spec == "number":
        return
    ok = map_unique(present, lambda v: _valid(spec, v)).astype(bool)
    if not ok.all():
        first = int(np.argmin(ok))
        raise ValueError(
            f"field '{field}' has invalid {'bool' if spec == 'boolean' else spec} "
            f"{present[first]!r} (contig {int(present_at[first]) + 1})"
        )


# --------------------------------------------------------------------------- the builder


def _field_order(chain_fields: list[str], fields: Sequence[str] | None) -> list[str]:
    """The record fields in order: ``fields``, checked, or all of them sorted by name."""
    all_fields = set(chain_fields) | set(AIRR_REQUIRED)
    if fields is None:
        return sorted(all_fields)
    order_fields = list(fields)
    if set(order_fields) != all_fields or len(order_fields) != len(all_fields):
        raise ValueError(
            "fields must name every chain field and the required AIRR fields once; "
            f"missing {sorted(all_fields - set(order_fields))}, "
            f"extra {sorted(set(order_fields) - all_fields)}"
        )
    return order_fields


def _group_chains(ids: np.ndarray, *, sort_cells: bool) -> tuple[np.ndarray, np.ndarray, Any]:
    """Chain rows grouped by cell (row order kept within a cell), the cells' offsets
    into them, and the cell ids."""
    codes, uniques = pd.factorize(ids, sort=sort_cells, use_na_sentinel=sort_cells)
    rows = np.flatnonzero(codes >= 0)
    rows = rows[np.argsort(codes[rows], kind="stable")]
    counts = np.bincount(codes[rows], minlength=len(uniques))
    offsets = np.zeros(len(uniques) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return rows, offsets, uniques


def _field_contents(
    contigs: pd.DataFrame, cell_id: str, order_fields: list[str], rows: np.ndarray
) -> list[ak.contents.Content]:
    """One awkward content per record field (validated; absent fields all ``None``)."""
    by_name = {str(c): c for c in contigs.columns}
    contents = []
    for field in order_fields:
        if field in by_name and field != cell_id:
            values = as_values(contigs[by_name[field]])[rows]
            spec = schema_type(field)
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
    return contents


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
    order_fields = _field_order(chain_fields, fields)
    rows, offsets, uniques = _group_chains(as_values(contigs[cell_id]), sort_cells=sort_cells)
    contents = _field_contents(contigs, cell_id, order_fields, rows)
    records = ak.contents.RecordArray(contents, order_fields, length=len(rows))
    airr = ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), records))

    names = np.asarray(uniques, dtype=object).copy()
    names[na_mask(names)] = None
    obs = pd.DataFrame(index=pd.Index(names, dtype=object, name="cell_id").astype(str))
    return ad.AnnData(X=None, obs=obs, obsm={"airr": airr}, uns={"scirpy_version": SCIRPY_VERSION})
