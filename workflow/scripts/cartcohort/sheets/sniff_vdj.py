"""Full checks of a TCR contig file (10x CSV/JSON, AIRR TSV), streaming.

Every contig is read, one row (JSON: one object, :mod:`.sniff_vdj_json`) at a
time, so memory stays flat whatever the file's size: what is kept is the set of
TCR cell barcodes (for the overlap with the GEX library) and, per check, the
count and the first offending contig (:class:`~.contig_findings.Findings`).
Checked: the layout (header, required columns, the number of fields of every
row), the values of the columns the loader uses (cell flags, chain, counts,
CDR3, the typed fields of the AIRR schema), the barcode format, and that the
file holds TCR cells. The loader (:func:`cartcohort.io.read_tcr`) runs the same
checks before reading a file.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, islice
from pathlib import Path
from typing import Any

from .airr_fields import AIRR_FALSE_VALUES, AIRR_NA_LIKE, AIRR_TRUE_VALUES, schema_type
from .contig_findings import (
    BCR_LOCI,
    FIX_COPY,
    FIX_NO_TCR,
    MISSING_VALUES,
    TCR_LOCI,
    UNREADABLE,
    BarcodeRule,
    Findings,
    describe,
)
from .locate import VdjKind
from .sniff import Issue
from .sniff_vdj_json import scan_json
from .textfiles import is_gzip, open_text

#: Columns scirpy reads from a 10x contig CSV.
CONTIG_CSV_COLUMNS = (
    "barcode",
    "is_cell",
    "contig_id",
    "high_confidence",
    "chain",
    "v_gene",
    "d_gene",
    "j_gene",
    "c_gene",
    "productive",
    "cdr3",
    "cdr3_nt",
    "reads",
    "umis",
)

#: A check of a column: the failing values among the distinct values of a chunk.
Check = Callable[[set[str]], set[str]]

_BOOL_SPELLINGS = {"true": True, "True": True, "TRUE": True, "1": True}
_BOOL_SPELLINGS.update({"false": False, "False": False, "FALSE": False, "0": False})
_CHAINS = frozenset(TCR_LOCI + BCR_LOCI + ("Multi",))
#: Rows checked at a time (one chunk is all a scan holds in memory).
_CHUNK_ROWS = 1024
#: Cell flags of a 10x table, whose spellings must not mix (see :func:`_bool_mix`).
_FLAG_COLUMNS = ("is_cell", "high_confidence", "productive")


# --------------------------------------------------------------------------- value checks


def _among(allowed: Iterable[str]) -> Check:
    """Values must be among ``allowed``."""
    ok = frozenset(allowed)
    return lambda values: values - ok


def _letters(alphabet: str) -> Check:
    """Values must be missing or made of the letters of ``alphabet``."""
    ok = frozenset(alphabet)

    def check(values: set[str]) -> set[str]:
        given = values - MISSING_VALUES
        if set("".join(given)) <= ok:
            return set()
        return {v for v in given if not set(v) <= ok}

    return check


def _digits(values: set[str]) -> set[str]:
    """Values must be missing or whole numbers >= 0 (ASCII digits)."""
    given = values - MISSING_VALUES
    joined = "".join(given)
    if not joined or (joined.isdigit() and joined.isascii()):
        return set()
    return {v for v in given if not (v.isdigit() and v.isascii())}


def _parses(cast: type, fast: Check | None = None) -> Check:
    """Values must be missing or accepted by ``cast``, as the AIRR reader's converters
    need (they turn anything else into a missing value without a word)."""

    def check(values: set[str]) -> set[str]:
        bad = set()
        for v in fast(values) if fast is not None else values - MISSING_VALUES:
            try:
                cast(v)
            except (ValueError, OverflowError):
                bad.add(v)
        return bad

    return check


#: ``column -> (kind, check)`` of the 10x contig-table columns the loader uses
#: (besides the barcode); kinds as in :data:`~.contig_findings.KINDS`.
_CSV_CHECKS: dict[str, tuple[str, Check]] = {
    "is_cell": ("bool", _among(_BOOL_SPELLINGS)),
    "high_confidence": ("bool", _among(_BOOL_SPELLINGS)),
    "chain": ("chain", _among(_CHAINS | MISSING_VALUES)),
    "productive": ("bool", _among(_BOOL_SPELLINGS.keys() | MISSING_VALUES)),
    "reads": ("count", _digits),
    "umis": ("count", _digits),
    "cdr3": ("aa", _letters("ACDEFGHIKLMNPQRSTVWYBXZJUO*")),
    "cdr3_nt": ("nt", _letters("ACGTNacgtn")),
}
#: ``AIRR schema type -> (kind, check)`` of the typed fields of AIRR files.
_AIRR_CHECKS: dict[str, tuple[str, Check]] = {
    "boolean": ("bool", _among(AIRR_TRUE_VALUES + AIRR_FALSE_VALUES + tuple(MISSING_VALUES))),
    "integer": ("integer", _parses(int, fast=_digits)),
    "number": ("number", _parses(float)),
}
_AIRR_LOCUS = ("chain", _among(_CHAINS | MISSING_VALUES | set(AIRR_NA_LIKE)))
#: AIRR columns the analysis uses: a row may not end before them.
_AIRR_USED = (
    "cell_id",
    "locus",
    "v_call",
    "d_call",
    "j_call",
    "c_call",
    "junction",
    "junction_aa",
    "productive",
    "consensus_count",
    "duplicate_count",
    "umi_count",
)


# --------------------------------------------------------------------------- tables

Columns = list[tuple[str, ...]]


@dataclass
class TableLayout:
    """How to check the rows of a contig table (built from its header).

    Attributes
    ----------
    barcode, barcode_col
        Index and name of the cell-barcode column.
    n_fields, min_fields
        Fields of the header, and the fewest a row may have: rows of AIRR files
        may lack trailing fields past the columns the analysis uses (some tools
        leave trailing empty fields out; the loader reads them as empty).
    cell_contigs
        The barcodes and loci of the rows the loader keeps as contigs of cells,
        from the columns of a chunk of rows.
    checks
        ``(index, column, kind, check)`` of the checked columns.
    """

    barcode: int
    barcode_col: str
    n_fields: int
    cell_contigs: Callable[[Columns], tuple[Sequence[str], Sequence[str]]]
    min_fields: int = 0
    checks: list[tuple[int, str, str, Check]] = field(default_factory=list)
    #: Distinct values seen in the cell-flag columns (for :func:`_bool_mix`).
    seen: dict[str, set[str]] = field(default_factory=dict)


def _csv_layout(header: list[str]) -> TableLayout:
    idx = {c: i for i, c in enumerate(header)}
    ib, ic, ih, ich = idx["barcode"], idx["is_cell"], idx["high_confidence"], idx["chain"]

    def cell_contigs(cols: Columns) -> tuple[Sequence[str], Sequence[str]]:
        flags = (cols[ic], cols[ih])
        if all(_BOOL_SPELLINGS.get(v) for f in flags for v in set(f)):
            return cols[ib], cols[ich]  # every contig is a cell's (a filtered table)
        keep = [bool(_BOOL_SPELLINGS.get(c) and _BOOL_SPELLINGS.get(h)) for c, h in zip(*flags)]
        return list(compress(cols[ib], keep)), list(compress(cols[ich], keep))

    layout = TableLayout(ib, "barcode", len(header), cell_contigs, min_fields=len(header))
    layout.checks = [(idx[c], c, kind, check) for c, (kind, check) in _CSV_CHECKS.items()]
    return layout


def _given(value: str) -> bool:
    """Whether an AIRR gene call or locus is given (not empty or a missing-value spelling)."""
    return bool(value) and value not in AIRR_NA_LIKE


def _airr_layout(header: list[str]) -> TableLayout:
    idx = {c: i for i, c in enumerate(header)}
    ib = idx["cell_id"]
    calls = [idx[c] for c in ("v_call", "j_call", "c_call", "d_call") if c in idx]
    il = idx.get("locus")

    def inferred(row: tuple[str, ...]) -> str:
        # the loader infers a missing locus from the gene calls (first three letters)
        return next((row[i][:3].upper() for i in calls if _given(row[i])), "")

    def cell_contigs(cols: Columns) -> tuple[Sequence[str], Sequence[str]]:
        if il is not None and all(_given(v) for v in set(cols[il])):
            return cols[ib], cols[il]
        loci = [r[il] if il is not None and _given(r[il]) else inferred(r) for r in zip(*cols)]
        return cols[ib], loci

    layout = TableLayout(ib, "cell_id", len(header), cell_contigs)
    layout.min_fields = 1 + max(idx[c] for c in _AIRR_USED if c in idx)
    if il is not None:
        layout.checks.append((il, "locus", *_AIRR_LOCUS))
    for column, i in idx.items():
        spec = schema_type(column)
        if spec is not None:
            layout.checks.append((i, column, *_AIRR_CHECKS[spec]))
    return layout


def _bool_mix(layout: TableLayout, findings: Findings) -> None:
    """Report a flag column mixing 0/1 with TRUE/FALSE: pandas then keeps the text,
    and the loader reads ``'FALSE'`` as true."""
    for column, seen in layout.seen.items():
        if "FALSE" in seen and {"0", "1"} & seen:
            spellings = ", ".join(sorted(v for v in seen if v in _BOOL_SPELLINGS))
            findings.add(column, "bool_mix", 0, spellings)


def _check_columns(
    cols: Columns, lines: Sequence[int], layout: TableLayout, rule: BarcodeRule, findings: Findings
) -> None:
    """Check the columns of a chunk of rows (``lines``: their line numbers); each
    distinct value is checked once, the rows are walked only to count failures."""
    for i, column, kind, check in layout.checks:
        distinct = set(cols[i])
        if column in _FLAG_COLUMNS:
            layout.seen.setdefault(column, set()).update(distinct)
        bad = check(distinct)
        for j in (j for j, v in enumerate(cols[i]) if v in bad) if bad else ():
            findings.add(column, kind, lines[j], repr(cols[i][j]))
    barcodes = cols[layout.barcode]
    bad = rule.failed(barcodes)
    for j in (j for j, b in enumerate(barcodes) if b in bad) if bad else ():
        findings.add(
            layout.barcode_col, bad[barcodes[j]], lines[j], repr(barcodes[j]), repr(rule.first)
        )


class RowChunks:
    """The rows of a delimited text past its header, a chunk at a time.

    Lines are split on the separator while no quote character is seen (three times
    faster than :mod:`csv`); from the first chunk holding one, the :mod:`csv` module
    parses the rest (quoted values may hold separators or span lines). ``line`` is
    the line of the last row read.
    """

    def __init__(self, fh: Any, sep: str, line: int):
        self.fh, self.sep, self.line = fh, sep, line

    def __iter__(self) -> Iterator[tuple[int, list[list[str]]]]:
        """``(line of the first row, rows)`` of each chunk; a blank line is ``[]``."""
        sep = self.sep
        while True:
            lines = list(islice(self.fh, _CHUNK_ROWS))
            if not lines:
                return
            if '"' in "".join(lines):
                yield from self._csv(csv.reader(chain(lines, self.fh), delimiter=sep))
                return
            first, self.line = self.line + 1, self.line + len(lines)
            yield first, [t.split(sep) if (t := x.rstrip("\r\n")) else [] for x in lines]

    def _csv(self, reader: Any) -> Iterator[tuple[int, list[list[str]]]]:
        start = self.line
        while True:
            first = start + reader.line_num + 1
            rows = list(islice(reader, _CHUNK_ROWS))
            self.line = start + reader.line_num
            if not rows:
                return
            yield first, rows


def _full_rows(
    chunk: list[list[str]], lines: Sequence[int], layout: TableLayout, findings: Findings
) -> tuple[list[list[str]], list[int]]:
    """The rows of a chunk with the header's fields (short AIRR rows padded), and their
    lines; the others are counted (blank lines are passed over, as the loader does)."""
    n, rows, kept = layout.n_fields, [], []
    for r, line in zip(chunk, lines):
        if len(r) == n or layout.min_fields <= len(r) < n:
            rows.append(r + [""] * (n - len(r)))
            kept.append(line)
        elif r:
            findings.add("", "fields", line, str(len(r)), str(n))
    return rows, kept


def scan_rows(
    chunks: Iterable[tuple[int, list[list[str]]]], layout: TableLayout, findings: Findings
) -> int:
    """Check every row of a contig table (:class:`RowChunks`), a chunk at a time,
    column by column (memory: one chunk); return the number of fields of the last row.

    Line numbers count one line per row: exact unless a quoted value spans lines
    (never in Cell Ranger or AIRR files), where later ones fall short.
    """
    rule = BarcodeRule()
    n, last = layout.n_fields, 0
    for first_line, chunk in chunks:
        last = next((len(r) for r in reversed(chunk) if r), last)
        lines: Sequence[int] = range(first_line, first_line + len(chunk))
        rows = chunk
        if set(map(len, chunk)) != {n}:
            rows, lines = _full_rows(chunk, lines, layout, findings)
        if not rows:
            continue
        findings.n_contigs += len(rows)
        cols = list(zip(*rows))
        _check_columns(cols, lines, layout, rule, findings)
        findings.add_cells(*layout.cell_contigs(cols))
    _bool_mix(layout, findings)
    return last


def _header_issues(kind: VdjKind, header: list[str]) -> list[Issue]:
    """The issues of a contig table's header (not delimited, repeated or missing columns)."""
    if len(header) <= 1:
        if kind == "10x_csv":
            what, fix = "is not a comma-separated 10x contig table", FIX_COPY
        else:
            what, fix = (
                "is not a tab-separated AIRR rearrangement file",
                "give an AIRR rearrangement TSV",
            )
        return [("line 1 (header)", f"{what} (header: {header[:3]})", fix)]
    dup = _duplicate_column(header)
    if dup:
        return [dup]
    if kind == "10x_csv":
        missing = [repr(c) for c in CONTIG_CSV_COLUMNS if c not in header]
        schema = "of a 10x contig table"
        fix = (
            "give the filtered_contig_annotations.csv written by Cell Ranger vdj "
            "(or convert your table to that layout)"
        )
    else:
        missing = []
        if "cell_id" not in header:
            missing.append("'cell_id'")
        if "locus" not in header and "v_call" not in header:
            missing.append("'locus' (or 'v_call' to infer it)")
        if "junction_aa" not in header and "junction" not in header:
            missing.append("'junction_aa' or 'junction'")
        schema = "of the AIRR rearrangement schema"
        fix = "give single-cell AIRR data (one row per contig, with cell_id)"
    if missing:
        return [("line 1 (header)", f"lacks column(s) {', '.join(missing)} {schema}", fix)]
    return []


def _duplicate_column(header: Sequence[str]) -> Issue | None:
    """Issue for the first column name that occurs twice in a contig-table header
    (readers would silently take one of them, possibly the wrong data)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if not name:
            continue
        if name in seen:
            return (
                "line 1 (header)",
                f"column '{name}' appears twice (columns {seen[name]} and {i})",
                "keep one of them; Cell Ranger and AIRR files have unique column names",
            )
        seen[name] = i
    return None


def _scan_table(kind: VdjKind, path: Path, findings: Findings) -> bool:
    """Scan a 10x contig CSV or AIRR TSV into ``findings``; ``False`` when the file is
    empty (no header)."""
    with open_text(path) as fh:
        reader = csv.reader(fh, delimiter="," if kind == "10x_csv" else "\t")
        header = next((h for h in reader if any(x.strip() for x in h)), None)
        if header is None:
            return False
        header[0] = header[0].removeprefix("\ufeff")
        issues = _header_issues(kind, header)
        if issues:
            findings.issues += issues
            return True
        layout = _csv_layout(header) if kind == "10x_csv" else _airr_layout(header)
        if kind == "airr":
            findings.chain_field = "locus" if "locus" in header else "v_call"
        chunks = RowChunks(fh, reader.dialect.delimiter, reader.line_num)
        try:
            last_fields = scan_rows(chunks, layout, findings)
        except UNREADABLE as err:
            findings.issues.append(
                (
                    f"line {chunks.line + 1}",
                    f"is unreadable at or after this line ({describe(err)})",
                    "the file is truncated or corrupt; " + FIX_COPY,
                )
            )
            return True
        last_line = chunks.line
    if 0 < last_fields < layout.n_fields and not _ends_with_line_end(path):
        short = findings.tallies.get(("", "fields"))
        if short is not None and short.count == 1 and short.at == last_line:
            del findings.tallies[("", "fields")]  # the cut-off line, said below
        findings.issues.append(
            (
                f"line {last_line}",
                f"ends in a line of {last_fields} fields (the header has {layout.n_fields}) "
                "without a line end: the file is truncated (its last line cut off, the "
                "lines after it lost)",
                FIX_COPY,
            )
        )
    return True


def _ends_with_line_end(path: Path) -> bool:
    """Whether a non-empty text file's last character is a line end (gzip files: their
    compressed stream ends where it should, which gzip checks while reading)."""
    if is_gzip(path):
        return True
    with open(path, "rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) in (b"\n", b"\r")


# --------------------------------------------------------------------------- entry point


def inspect_vdj(kind: VdjKind, path: Path) -> tuple[set[str], list[Issue]]:
    """Check a TCR contig file in full, streaming; return its TCR cell barcodes and issues.

    Parameters
    ----------
    kind, path
        As returned by :func:`locate_vdj`.

    Returns
    -------
    barcodes, issues
        The barcodes of the cells the loader keeps (10x: contigs with
        ``is_cell`` and ``high_confidence`` true; AIRR: every row) that have a
        chain other than IGH/IGK/IGL, and the ``(where, what, fix)`` issues
        about the file. An empty file, or one without a TCR cell, is an issue:
        a library without TCR has an empty ``vdj``. The barcodes are complete
        only when there is no issue.
    """
    findings = Findings("contig", "key") if kind == "10x_json" else Findings()
    try:
        if kind == "10x_json":
            has_data = scan_json(path, findings)
        else:
            has_data = _scan_table(kind, path, findings)
    except UNREADABLE as err:
        return set(), [("", f"is unreadable ({describe(err)})", FIX_COPY)]
    if not has_data:
        return set(), [("", "is empty (no content at all, not even a header)", FIX_NO_TCR)]
    return findings.cells, findings.all_issues()
