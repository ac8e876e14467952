"""Property tests: the input parsers survive malformed files.

Every reader of user files (10x contig CSV/JSON and AIRR TSV through
``cartcohort.io.read_tcr``, the parse-time inspector ``cartcohort.sheets.inspect_vdj``,
the MatrixMarket reader behind ``cartcohort.io.read_gex`` and the sample-sheet
parser ``cartcohort.sheets.prepare_inputs``) gets valid files broken in random
ways: missing columns, wrong types, empty cells, junk and non-UTF-8 bytes, NUL
bytes, truncated lines and files, duplicated headers, a wrong delimiter, gzip
content under a plain name (and the reverse), truncated gzip streams. Each call
must either parse or raise the project's own error (``CartCohortError``, usually
``InputError``) whose message names the file; never another exception (and never a
crash of the interpreter). The inspectors never raise: they return issues.

Examples are derandomised (reproducible runs); set ``CARTCOHORT_FUZZ_EXAMPLES=500``
to explore more (random) examples locally.
"""

from __future__ import annotations

import atexit
import gzip
import importlib.resources
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cartcohort import io, sheets
from cartcohort.errors import CartCohortError, InputError, Problem
from test_sheets import (
    CSV_HEADER,
    contig_rows,
    make_barcodes,
    make_cohort,
    tiny_counts,
    tiny_features,
    write_airr_tsv,
    write_contigs_csv,
    write_mtx_folder,
)

_FUZZ = int(os.environ.get("CARTCOHORT_FUZZ_EXAMPLES", "0"))
SCIRPY_DATA = Path(str(importlib.resources.files("scirpy") / "tests" / "data"))
JSON_BASE = (
    SCIRPY_DATA / "10x" / "10k_BMMNC_5pv2_nextgem_Multiplex_vdj_t_all_contig_annotations_small.json"
)


def fuzz_settings(n: int) -> settings:
    """``n`` reproducible examples (or CARTCOHORT_FUZZ_EXAMPLES random ones)."""
    return settings(
        max_examples=_FUZZ or n,
        deadline=None,
        derandomize=not _FUZZ,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --------------------------------------------------------------------------- mutations

#: Values that are wrong for some column: empty, NA spellings, wrong types, huge,
#: negative, separators and quotes inside a value, BCR loci.
ODD_VALUES = [
    "",
    " ",
    "NA",
    "None",
    "nan",
    "null",
    "-1",
    "0",
    "1e400",
    "3.5",
    "abc",
    "True",
    "TRUE",
    "false",
    '"',
    '""',
    "a,b",
    "a\tb",
    "TRB;TRA",
    "IGH",
    "IGK",
    "Multi",
    "None",
    "é",
    "\u2603",
    "-",
    "CASS",
    "TRAV1-2/DV",
    "=1+1",
]
_value = st.one_of(st.sampled_from(ODD_VALUES), st.text(max_size=12))
_frac = st.floats(min_value=0.0, max_value=1.0)
_idx = st.integers(min_value=0, max_value=1000)

TABLE_OPS = st.one_of(
    st.tuples(st.just("drop_column"), _idx),
    st.tuples(st.just("duplicate_header"), _idx, _idx),
    st.tuples(st.just("set_cell"), _idx, _idx, _value),
    st.tuples(st.just("set_header"), _idx, _value),
    st.tuples(st.just("truncate_row"), _idx, st.integers(0, 5)),
    st.tuples(st.just("extra_fields"), _idx, _value),
    st.tuples(st.just("keep_rows"), st.integers(0, 3)),
    st.tuples(st.just("duplicate_row"), _idx),
    st.tuples(st.just("blank_line"), _idx),
)
BYTE_OPS = st.one_of(
    st.tuples(st.just("cut"), _frac),
    st.tuples(st.just("junk"), _frac, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("non_utf8"), _frac, st.integers(0x80, 0xFF)),
    st.tuples(st.just("nul"), _frac),
    st.tuples(st.just("crlf")),
    st.tuples(st.just("bom")),
    st.tuples(st.just("open_quote"), _frac),
)
#: How the bytes are stored: plain, gzip, gzip under a plain name, plain under a
#: .gz name, truncated gzip stream.
STORAGE = st.sampled_from(["plain", "gz", "gz_plain_name", "plain_gz_name", "gz_cut"])


def apply_table_op(table: list[list[str]], op: tuple) -> list[list[str]]:
    """One structural change of a delimited table (header = row 0)."""
    kind, *args = op
    t = [list(r) for r in table]
    if not t:
        return t
    ncol = max(1, len(t[0]))
    if kind == "drop_column":
        i = args[0] % ncol
        return [[v for j, v in enumerate(r) if j != i] for r in t]
    if kind == "duplicate_header":
        i, j = args[0] % ncol, args[1] % ncol
        if t[0]:
            t[0][i] = t[0][j]
        return t
    if kind == "set_header":
        if t[0]:
            t[0][args[0] % len(t[0])] = args[1]
        return t
    if kind == "keep_rows":
        return t[: 1 + args[0]]
    if len(t) < 2:
        return t
    r = 1 + args[0] % (len(t) - 1)
    if kind == "set_cell":
        if t[r]:
            t[r][args[1] % len(t[r])] = args[2]
    elif kind == "truncate_row":
        t[r] = t[r][: args[1]]
    elif kind == "extra_fields":
        t[r] = t[r] + [args[1]]
    elif kind == "duplicate_row":
        t.insert(r, list(t[r]))
    elif kind == "blank_line":
        t.insert(r, [])
    return t


def apply_byte_op(data: bytes, op: tuple) -> bytes:
    """One byte-level corruption."""
    kind, *args = op
    pos = int(args[0] * len(data)) if args and isinstance(args[0], float) else 0
    if kind == "cut":
        return data[:pos]
    if kind == "junk":
        return data[:pos] + args[1] + data[pos:]
    if kind == "non_utf8":
        return data[:pos] + bytes([args[1]]) + data[pos:]
    if kind == "nul":
        return data[:pos] + b"\x00" + data[pos:]
    if kind == "crlf":
        return data.replace(b"\n", b"\r\n")
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    if kind == "open_quote":
        return data[:pos] + b'"' + data[pos:]
    raise AssertionError(kind)


def serialise(table: list[list[str]], sep: str) -> bytes:
    return ("\n".join(sep.join(r) for r in table) + "\n").encode("utf-8", "surrogatepass")


def store(folder: Path, name: str, data: bytes, storage: str) -> Path:
    """Write ``data`` as ``folder/name`` (``name`` without .gz) in the given storage."""
    folder.mkdir(parents=True, exist_ok=True)
    if storage == "plain":
        path, out = folder / name, data
    elif storage == "gz":
        path, out = folder / f"{name}.gz", gzip.compress(data, mtime=0)
    elif storage == "gz_plain_name":
        path, out = folder / name, gzip.compress(data, mtime=0)
    elif storage == "plain_gz_name":
        path, out = folder / f"{name}.gz", data
    elif storage == "gz_cut":
        z = gzip.compress(data, mtime=0)
        path, out = folder / f"{name}.gz", z[: max(3, len(z) // 2)]
    else:
        raise AssertionError(storage)
    path.write_bytes(out)
    return path


def read_table_text(path: Path, sep: str) -> list[list[str]]:
    return [line.split(sep) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- checks


def parses_or_names_file(path: Path, call: Callable[[], Any]) -> Any:
    """Run ``call``: it returns, or raises CartCohortError naming ``path``."""
    try:
        out = call()
    except CartCohortError as err:
        assert str(path) in str(err), f"error does not name {path}:\n{err}"
        if isinstance(err, InputError):
            assert err.problems and all(str(p).strip() for p in err.problems)
        event("clear error")
        return err
    event("parsed")
    return out


def check_inspect_vdj(kind: sheets.VdjKind, path: Path) -> None:
    """The parse-time inspector never raises; it returns barcodes and issues."""
    barcodes, issues = sheets.inspect_vdj(kind, path)
    assert isinstance(barcodes, set) and all(isinstance(b, str) for b in barcodes)
    for issue in issues:
        assert len(issue) == 3 and all(isinstance(x, str) for x in issue)
        assert issue[1] and issue[2], issue


def check_read_tcr(path: Path, barcodes: Sequence[str] | None) -> Any:
    out = parses_or_names_file(path, lambda: io.read_tcr(path, sample="S", barcodes=barcodes))
    if isinstance(out, ad.AnnData):
        assert "airr" in out.obsm
        assert all(n.startswith("S_") for n in out.obs_names)
        assert list(out.obs["barcode"]) == [n[2:] for n in out.obs_names]
        if barcodes is not None:
            assert set(out.obs["barcode"]) <= set(barcodes)
    return out


# --------------------------------------------------------------------------- fixtures

_BASE = Path(tempfile.mkdtemp(prefix="cartcohort_fuzz_"))
BARCODES = make_barcodes(5, seed=3)
_rows = contig_rows(BARCODES[:4]) + contig_rows(BARCODES[4:], loci=("IGH",))
CSV_TABLE = read_table_text(write_contigs_csv(_BASE / "base.csv", _rows), ",")
AIRR_TABLE = read_table_text(write_airr_tsv(_BASE / "base.tsv", _rows), "\t")


atexit.register(shutil.rmtree, _BASE, True)


class Workdir:
    """A fresh folder per hypothesis example (function-scoped tmp_path is shared)."""

    n = 0

    @classmethod
    def new(cls) -> Path:
        cls.n += 1
        p = _BASE / f"ex{cls.n}"
        p.mkdir(parents=True)
        return p


# --------------------------------------------------------------------------- sanity


def test_unbroken_bases_parse():
    """The bases the mutations start from are valid (so mutations test breakage)."""
    csv_path = store(Workdir.new(), "c.csv", serialise(CSV_TABLE, ","), "plain")
    tsv_path = store(Workdir.new(), "a.tsv", serialise(AIRR_TABLE, "\t"), "gz")
    for kind, path in (("10x_csv", csv_path), ("airr", tsv_path)):
        barcodes, issues = sheets.inspect_vdj(kind, path)
        assert issues == [] and barcodes == set(BARCODES[:4])  # TCR cells: not the IGH-only 5th
        out = io.read_tcr(path, sample="S", barcodes=BARCODES)
        assert out.n_obs == 4, kind  # the 5th cell has only an IGH contig: dropped
    out = io.read_tcr(JSON_BASE, sample="S")
    assert out.n_obs > 0


def test_known_breakages_give_clear_errors(tmp_path):
    """Cases found by the fuzzing below, pinned: each raised a raw exception before."""
    dup = [list(r) for r in CSV_TABLE]
    dup[0][CSV_HEADER.index("length")] = "cdr3"  # pandas would read 'length' as cdr3
    cases = {
        "dup_header.csv": serialise(dup, ","),
        "open_quote.csv": serialise(CSV_TABLE, ",").replace(b"\n", b'\n"', 1),
        "open_quote.tsv": serialise(AIRR_TABLE, "\t").replace(b"\n", b'\n"', 1),
        "bad.json": JSON_BASE.read_bytes().replace(b"\n", b"\x00\n", 1),
        "huge_int.csv": serialise(
            apply_table_op(CSV_TABLE, ("set_cell", 0, CSV_HEADER.index("umis"), "1e400")), ","
        ),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError) as exc:
            io.read_tcr(path, sample="S")
        assert str(path) in str(exc.value), name

    # NUL bytes in a MatrixMarket body crash scipy's reader (segfault) unless caught first
    folder = _mtx_base(tmp_path / "mtx")
    body = gzip.decompress((folder / "matrix.mtx.gz").read_bytes())
    (folder / "matrix.mtx.gz").write_bytes(gzip.compress(body.rstrip(b"\n") + b"\x00\n"))
    with pytest.raises(InputError, match="NUL byte"):
        io.read_gex(folder, sample="S")


# --------------------------------------------------------------------------- contig tables


def _check_mutated_table(table, kind, filename, *, table_ops, byte_ops, sep, storage,
                         with_barcodes):
    """Mutate a contig table (rows/columns, then bytes), store it, and require that
    inspect_vdj and read_tcr either parse it or name the file."""
    for op in table_ops:
        table = apply_table_op(table, op)
    data = serialise(table, sep)
    for op in byte_ops:
        data = apply_byte_op(data, op)
    path = store(Workdir.new(), filename, data, storage)
    check_inspect_vdj(kind, path)
    check_read_tcr(path, BARCODES if with_barcodes else None)


@fuzz_settings(200)
@given(
    table_ops=st.lists(TABLE_OPS, max_size=3),
    byte_ops=st.lists(BYTE_OPS, max_size=2),
    sep=st.sampled_from([",", ",", ",", "\t", ";"]),
    storage=STORAGE,
    with_barcodes=st.booleans(),
)
def test_10x_contig_csv_parses_or_names_the_file(table_ops, byte_ops, sep, storage, with_barcodes):
    _check_mutated_table(CSV_TABLE, "10x_csv", "filtered_contig_annotations.csv",
                         table_ops=table_ops, byte_ops=byte_ops, sep=sep, storage=storage,
                         with_barcodes=with_barcodes)


@fuzz_settings(200)
@given(
    table_ops=st.lists(TABLE_OPS, max_size=3),
    byte_ops=st.lists(BYTE_OPS, max_size=2),
    sep=st.sampled_from(["\t", "\t", "\t", ",", " "]),
    storage=STORAGE,
    with_barcodes=st.booleans(),
)
def test_airr_tsv_parses_or_names_the_file(table_ops, byte_ops, sep, storage, with_barcodes):
    _check_mutated_table(AIRR_TABLE, "airr", "airr_rearrangement.tsv",
                         table_ops=table_ops, byte_ops=byte_ops, sep=sep, storage=storage,
                         with_barcodes=with_barcodes)


_JSON_SCALAR = re.compile(rb'"(\w+)":\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|true|false|null)')
JSON_TOKENS = [
    b"null",
    b'"x"',
    b"-1",
    b"1e999",
    b"[]",
    b"{}",
    b"true",
    b'""',
    b'"\xc3\xa9"',
    b"0.5",
]
JSON_OPS = st.one_of(
    st.tuples(st.just("set_value"), _idx, st.sampled_from(JSON_TOKENS)),
    st.tuples(st.just("rename_key"), _idx, st.sampled_from([b"barcodes", b"", b"chain", b"x"])),
    st.tuples(st.just("drop_close"), st.integers(1, 3)),
    BYTE_OPS,
)


def apply_json_op(data: bytes, op: tuple) -> bytes:
    kind, *args = op
    if kind in ("set_value", "rename_key"):
        hits = list(_JSON_SCALAR.finditer(data))
        if not hits:
            return data
        m = hits[args[0] % len(hits)]
        if kind == "set_value":
            return data[: m.start(2)] + args[1] + data[m.end(2) :]
        return data[: m.start(1)] + args[1] + data[m.end(1) :]
    if kind == "drop_close":
        return data.rstrip()[: -args[0]]
    return apply_byte_op(data, op)


@fuzz_settings(100)
@given(ops=st.lists(JSON_OPS, min_size=1, max_size=3), storage=STORAGE)
def test_10x_contig_json_parses_or_names_the_file(ops, storage):
    data = JSON_BASE.read_bytes()
    for op in ops:
        data = apply_json_op(data, op)
    path = store(Workdir.new(), "all_contig_annotations.json", data, storage)
    check_inspect_vdj("10x_json", path)
    check_read_tcr(path, None)


# --------------------------------------------------------------------------- GEX matrix body


def _mtx_base(folder: Path) -> Path:
    ids, names, types = tiny_features(6)
    X = tiny_counts(len(ids), 6, seed=1)
    return write_mtx_folder(folder, X, make_barcodes(6, seed=2), ids, names, types, gz=True)


MTX_OPS = st.one_of(
    BYTE_OPS,
    st.tuples(st.just("set_entry"), _idx, st.sampled_from(["-1", "1.5", "x", "", "99", "0 0"])),
    st.tuples(st.just("drop_entry"), _idx),
)


@fuzz_settings(100)
@given(ops=st.lists(MTX_OPS, min_size=1, max_size=3), storage=STORAGE)
def test_mtx_body_parses_or_names_the_file(ops, storage):
    """Header and size line intact (the parse-time check passes), the body broken:
    the load-time reader must still fail cleanly."""
    folder = _mtx_base(Workdir.new() / "filtered_feature_bc_matrix")
    text = gzip.decompress((folder / "matrix.mtx.gz").read_bytes())
    lines = text.split(b"\n")
    head, body = b"\n".join(lines[:3]) + b"\n", lines[3:]
    for op in ops:
        if op[0] in ("set_entry", "drop_entry") and len(body) > 1:
            i = op[1] % (len(body) - 1)
            if op[0] == "drop_entry":
                del body[i]
            else:
                fields = body[i].split(b" ")
                fields[op[1] % 3 if len(fields) == 3 else 0] = op[2].encode()
                body[i] = b" ".join(fields)
        elif op[0] not in ("set_entry", "drop_entry"):
            body = apply_byte_op(b"\n".join(body), op).split(b"\n")
    (folder / "matrix.mtx.gz").unlink()
    store(folder, "matrix.mtx", head + b"\n".join(body), storage)
    source = sheets.locate_gex(folder)
    _, issues, _ = sheets.inspect_gex(source, want_barcodes=True)
    assert all(len(i) == 3 for i in issues)
    out = parses_or_names_file(folder, lambda: io.read_gex(folder, sample="S"))
    if not isinstance(out, CartCohortError):
        gex, _ = out
        assert gex.n_obs == 6 and (gex.X.data >= 0).all()


# --------------------------------------------------------------------------- sample sheet


_COHORT: dict[str, Any] = {}


def cohort() -> dict[str, Any]:
    if not _COHORT:
        _COHORT.update(make_cohort(_BASE / "cohort"))
    return _COHORT


def test_unbroken_cohort_is_valid():
    c = cohort()
    samples, clinical, _ = sheets.prepare_inputs(c["config"], base_dir=c["root"])
    assert list(samples.index) == ["S1", "S2", "S3", "S4"] and len(clinical) == 2


@fuzz_settings(150)
@given(
    which=st.sampled_from(["samples", "samples", "clinical"]),
    table_ops=st.lists(TABLE_OPS, min_size=1, max_size=3),
    byte_ops=st.lists(BYTE_OPS, max_size=1),
    sep=st.sampled_from(["\t", "\t", "\t", ",", ";"]),
    vdj_broken=st.booleans(),
)
def test_sheets_give_input_errors_only(which, table_ops, byte_ops, sep, vdj_broken):
    """Whatever is wrong with the sample sheet or clinical table (or with a contig
    file the sheet points at), parse-time validation answers with InputError
    problems naming a file."""
    c = cohort()
    work = Workdir.new()
    tables = {k: read_table_text(c["cfg"] / f"{k}.tsv", "\t") for k in ("samples", "clinical")}
    if vdj_broken:  # point S1 at a contig table with one broken cell
        broken = apply_table_op(CSV_TABLE, table_ops[0])
        csv_path = store(work, "contigs.csv", serialise(broken, ","), "plain")
        sample_table = tables["samples"]
        row = next(i for i, r in enumerate(sample_table) if r and r[0] == "S1")
        sample_table[row][sample_table[0].index("vdj")] = str(csv_path)
    table = tables[which]
    for op in table_ops:
        table = apply_table_op(table, op)
    tables[which] = table
    config = dict(c["config"])
    written = []
    for key, tab in tables.items():
        data = serialise(tab, sep if key == which else "\t")
        if key == which:
            for op in byte_ops:
                data = apply_byte_op(data, op)
        path = c["cfg"] / f"fuzz_{work.name}_{key}.tsv"
        path.write_bytes(data)
        config[key] = str(path)
        written.append(path)
    try:
        sheets.prepare_inputs(config, base_dir=c["root"])
    except InputError as err:
        assert err.problems
        allowed_roots = (str(c["root"]), str(work))
        for p in err.problems:
            assert isinstance(p, Problem) and p.what and p.fix, p
            assert p.file == "config" or p.file.startswith(allowed_roots), p
        named = [str(x) for x in written] + ([str(work)] if vdj_broken else [])
        assert any(n in str(err) for n in named), str(err)
    finally:
        for path in written:
            path.unlink()
