"""What a streaming scan of a TCR contig file found, and the checks shared by its formats.

:mod:`.sniff_vdj` (10x CSV, AIRR TSV) and :mod:`.sniff_vdj_json` (10x JSON)
collect, per failed check, how many contigs failed it and the first one, so
that a file of millions of contigs gives a few issues and flat memory.
"""

from __future__ import annotations

import csv
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from .sniff import Issue

BCR_LOCI = ("IGH", "IGK", "IGL")
TCR_LOCI = ("TRA", "TRB", "TRG", "TRD")
#: Spellings of a missing value that pandas and scirpy read as missing.
MISSING_VALUES = frozenset(
    {"", "NA", "N/A", "n/a", "NaN", "nan", "None", "null", "NULL", "<NA>", "#N/A"}
)
FIX_COPY = "copy the file again from the Cell Ranger vdj_t outs/ folder"
#: Fix of a contig file without TCR cells: "no TCR" is said by an empty ``vdj``.
FIX_NO_TCR = (
    "if this library has no TCR data, leave its 'vdj' empty in the sample sheet; "
    "otherwise check the Cell Ranger vdj run (web_summary.html) and " + FIX_COPY
)
#: What reading a malformed contig file raises.
UNREADABLE = (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error, ValueError)

_FIX_VALUE = "the file is corrupt or was edited by hand: correct the value, or " + FIX_COPY
_FIX_BARCODE = (
    "every contig needs the cell barcode of its cell, spelled as in the GEX library "
    "(e.g. 'AAACCTGAGAAACCAT-1'); " + FIX_COPY
)
#: ``kind -> (what, fix)`` of the per-contig checks; ``what`` follows "<n> contig(s) ",
#: with ``{col}`` the column (key), ``{v}`` the first offending value, ``{m}`` a detail.
KINDS: dict[str, tuple[str, str]] = {
    "fields": (
        "have a number of fields other than the header's {m} (first: {v} fields)",
        "the file is truncated or corrupt; " + FIX_COPY,
    ),
    "empty": ("have an empty {col}", "single-cell data needs a cell barcode on every contig"),
    "na": ("have a missing-value spelling as {col} (first: {v})", _FIX_BARCODE),
    "chars": (
        "have a {col} with a blank, quote, separator or control character (first: {v})",
        _FIX_BARCODE,
    ),
    "shape": ("have a {col} unlike the file's first one {m} (first: {v})", _FIX_BARCODE),
    "text": ("have a {col} that is not text (first: {v})", _FIX_VALUE),
    "bool": ("have a {col} that is not true or false (first: {v})", _FIX_VALUE),
    "bool_mix": (
        "mix the spellings 0/1 and TRUE/FALSE in {col} ({v}): 'FALSE' would be read as true",
        _FIX_VALUE,
    ),
    "chain": (
        "have a {col} that is not a receptor locus (TRA, TRB, TRG, TRD, IGH, IGK, IGL, "
        "Multi or missing) (first: {v})",
        _FIX_VALUE,
    ),
    "count": ("have a {col} that is not a whole number >= 0 (first: {v})", _FIX_VALUE),
    "integer": ("have a {col} that is not an integer (first: {v})", _FIX_VALUE),
    "number": ("have a {col} that is not a number (first: {v})", _FIX_VALUE),
    "aa": ("have a {col} that is not an amino-acid sequence (first: {v})", _FIX_VALUE),
    "nt": ("have a {col} that is not a nucleotide sequence (first: {v})", _FIX_VALUE),
    "object": ("are not a JSON object (first: {v})", FIX_COPY),
    "key": ("lack the key {col}", _FIX_VALUE),
    "region": (
        "have annotations the loader cannot read in {col}: {v}",
        _FIX_VALUE,
    ),
}

_BAD_BARCODE_CHARS = re.compile(r"[\s,;\"'\x00-\x1f]")
_NT_BARCODE = re.compile(r"([ACGTN]+)(-\d+)?")


@dataclass
class _Tally:
    """The contigs failing one check: how many, and the first one."""

    count: int
    at: int
    value: str
    more: str = ""


@dataclass
class Findings:
    """What a scan of a contig file found: TCR cells, and the failed checks.

    ``unit``/``part`` name a place: ``line 12, column 'umis'`` for tables,
    ``contig 12, key 'umi_count'`` for JSON. ``chain_field`` is the column
    (key) the chains were read from.
    """

    unit: str = "line"
    part: str = "column"
    chain_field: str = "chain"
    cells: set[str] = field(default_factory=set)
    n_contigs: int = 0
    n_cell_contigs: int = 0
    tallies: dict[tuple[str, str], _Tally] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)

    def add(self, column: str, kind: str, at: int, value: str, more: str = "") -> None:
        """Count a contig failing check ``kind`` (a key of :data:`KINDS`) on ``column``;
        ``at`` is its line (contig number), 0 for the whole column."""
        tally = self.tallies.get((column, kind))
        if tally is None:
            self.tallies[(column, kind)] = _Tally(1, at, value, more)
        else:
            tally.count += 1

    def add_cells(self, barcodes: Sequence[str], loci: Sequence[str | None]) -> None:
        """Count contigs of cells (kept by the loader), given their barcodes and loci;
        the barcodes of TCR cells are remembered."""
        self.n_cell_contigs += len(barcodes)
        if set(loci).isdisjoint(BCR_LOCI):
            self.cells.update(barcodes)
        else:
            self.cells.update(b for b, locus in zip(barcodes, loci) if locus not in BCR_LOCI)

    def all_issues(self) -> list[Issue]:
        """The issues: failed checks (first contig first), then the file-level ones."""
        out: list[Issue] = []
        for (column, kind), t in sorted(self.tallies.items(), key=lambda kv: kv[1].at):
            what, fix = KINDS[kind]
            place = [f"{self.unit} {t.at}"] if t.at else []
            place += [f"{self.part} '{column}'"] if column else []
            text = what.format(col=column, v=t.value, m=t.more)
            out.append((", ".join(place), f"{t.count} contig(s) {text}", fix))
        return out + self.issues + self._content_issues()

    def _content_issues(self) -> list[Issue]:
        """File-level issues of a readable contig file without a TCR cell."""
        if self.issues or self.tallies:
            return []
        if self.n_contigs == 0:
            return [("", "contains no contigs (only a header or an empty list)", FIX_NO_TCR)]
        if self.n_cell_contigs == 0:
            return [
                (
                    "",
                    "has no contig of a cell with high confidence (is_cell and "
                    f"high_confidence true, among its {self.n_contigs} contigs), so no "
                    "TCR cell",
                    FIX_NO_TCR,
                )
            ]
        if not self.cells:
            return [
                (
                    f"{self.part} '{self.chain_field}'",
                    "contains only BCR contigs (IGH/IGK/IGL), no TCR",
                    "give the T-cell (vdj_t) contig file of this library; B-cell receptor "
                    "data is not used",
                )
            ]
        return []


class BarcodeRule:
    """Checks the barcodes of one file: not empty, no missing-value spelling, blank or
    separator, and - when the file's first barcode is a 10x one (10 or more of
    ``ACGTN``, an optional ``-N``) - the same length and suffix as that first one."""

    def __init__(self) -> None:
        self.first = ""
        self.shape: tuple[int, bool] | None = None

    def failed(self, barcodes: Sequence[str]) -> dict[str, str]:
        """``barcode -> kind`` of the failing ones among ``barcodes`` (file order): all
        at once when they are 10x barcodes like the first, else one by one."""
        if not self.first and barcodes:
            self.kind(barcodes[0])
        distinct = dict.fromkeys(barcodes)
        if self.shape is not None:
            length, suffix = self.shape
            one = f"[ACGTN]{{{length}}}" + (r"-[0-9]+" if suffix else "")
            if re.fullmatch(f"{one}(?:\n{one})*", "\n".join(distinct)):
                return {}
        return {b: kind for b in distinct if (kind := self.kind(b)) is not None}

    def kind(self, barcode: str) -> str | None:
        """The failed check of ``barcode`` (a key of :data:`KINDS`), or ``None``."""
        if not barcode:
            return "empty"
        if barcode in MISSING_VALUES:
            return "na"
        if _BAD_BARCODE_CHARS.search(barcode):
            return "chars"
        m = _NT_BARCODE.fullmatch(barcode)
        shape = (len(m.group(1)), m.group(2) is not None) if m and len(m.group(1)) >= 10 else None
        if not self.first:
            self.first, self.shape = barcode, shape
        elif self.shape is not None and shape != self.shape:
            return "shape"
        return None


def describe(err: BaseException) -> str:
    """``Class: first line of the message`` of an exception (at most 200 characters)."""
    text = str(err).strip()
    msg = text.splitlines()[0][:200] if text else ""
    return f"{err.__class__.__name__}: {msg}" if msg else err.__class__.__name__
