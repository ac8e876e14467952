"""Cheap checks of a TCR contig file (10x CSV/JSON, AIRR TSV): layout and barcodes.

Only the barcode and chain columns of the first contigs are read, which is
enough to tell whether the file pairs with its GEX library and holds TCR data.
"""

from __future__ import annotations

import csv
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .locate import VdjKind
from .sniff import Issue
from .textfiles import open_text

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
BCR_LOCI = ("IGH", "IGK", "IGL")
#: Contigs read per TCR file at parse time (barcode overlap, BCR-only check).
VDJ_CHECK_ROWS = 5000
_FIX_COPY = "copy the file again from the Cell Ranger vdj_t outs/ folder"
#: What a malformed contig file raises (ValueError covers pandas' ParserError:
#: ragged rows, bad quoting).
_UNREADABLE = (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error, ValueError)
_JSON_BARCODE_RE = re.compile(r'"barcode"\s*:\s*"([^"]*)"')
_JSON_CHAIN_RE = re.compile(r'"chain"\s*:\s*"([^"]*)"')


@dataclass
class _Contigs:
    """The barcode and chain columns read from a contig table."""

    barcodes: list[str]
    chains: list[str]
    bc_col: str
    chain_col: str


def _read_delimited_columns(
    path: Path, sep: str, columns: Sequence[str], max_rows: int | None = None
) -> tuple[list[str], dict[str, list[str]]]:
    """Header and the requested columns (as strings, first ``max_rows`` rows) of a
    delimited text file."""
    with open_text(path) as fh:
        first = fh.readline()
        if not first.strip():
            return [], {}
        header = [h.strip() for h in next(csv.reader([first], delimiter=sep))]
        use = [c for c in columns if c in header]
        if not use or len(header) <= 1:
            return header, {c: [] for c in use}
        if os.path.getsize(path) < 1_000_000:
            # small file: the csv module beats pandas' per-call overhead
            idx = {c: header.index(c) for c in use}
            out: dict[str, list[str]] = {c: [] for c in use}
            for n, row in enumerate(csv.reader(fh, delimiter=sep)):
                if max_rows is not None and n >= max_rows:
                    break
                if not row:
                    continue
                for c, i in idx.items():
                    out[c].append(row[i] if i < len(row) else "")
            return header, out
    with open_text(path) as fh:
        df = pd.read_csv(
            fh,
            sep=sep,
            usecols=use,
            dtype=str,
            keep_default_na=False,
            engine="c",
            skip_blank_lines=True,
            nrows=max_rows,
        )
    return header, {c: df[c].tolist() for c in use}


def inspect_vdj(
    kind: VdjKind, path: Path, *, max_rows: int | None = None
) -> tuple[set[str], list[Issue]]:
    """Cheaply check a TCR contig file; return its cell barcodes and issues.

    Parameters
    ----------
    kind, path
        As returned by :func:`locate_vdj`.
    max_rows
        Look only at the first ``max_rows`` contigs (JSON: the first
        ``max_rows * 800`` characters), which is enough to tell whether the
        file pairs with its GEX library; ``None`` reads everything.

    Returns
    -------
    barcodes, issues
        The cell barcodes seen (empty when the layout is wrong) and the
        ``(where, what, fix)`` issues about the file.
    """
    try:
        if kind == "10x_json":
            return _inspect_json(path, max_rows)
        reader = _csv_contigs if kind == "10x_csv" else _airr_contigs
        issues, contigs = reader(path, max_rows)
    except _UNREADABLE as err:
        msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        return set(), [("", f"is unreadable ({err.__class__.__name__}: {msg})", _FIX_COPY)]
    if contigs is None:
        return set(), issues
    return _barcode_issues(contigs)


def _inspect_json(path: Path, max_rows: int | None) -> tuple[set[str], list[Issue]]:
    """:func:`inspect_vdj` of an ``all_contig_annotations.json``: regular expressions
    on the first ``max_rows * 800`` characters."""
    limit = -1 if max_rows is None else max_rows * 800
    with open_text(path) as fh:
        text = fh.read(limit)
        whole = limit < 0 or not fh.read(1)
    stripped = text.strip()
    if not stripped.startswith("[") or (whole and not stripped.endswith("]")):
        return set(), [
            (
                "",
                "is not a JSON list of contigs (truncated or not " "all_contig_annotations.json)",
                _FIX_COPY,
            )
        ]
    barcodes = _JSON_BARCODE_RE.findall(text)
    chains = _JSON_CHAIN_RE.findall(text)
    issues: list[Issue] = []
    if not barcodes:
        issues.append(("", "contains no contigs", "check the Cell Ranger vdj run"))
    elif chains and all(c in BCR_LOCI for c in chains):
        issues.append(_only_bcr_issue("chain"))
    return set(barcodes), issues


def _csv_contigs(path: Path, max_rows: int | None) -> tuple[list[Issue], _Contigs | None]:
    """Barcodes and chains of a 10x contig CSV, or the issues of its header."""
    header, cols = _read_delimited_columns(path, ",", ("barcode", "chain"), max_rows)
    if len(header) <= 1:
        return [
            (
                "line 1 (header)",
                "is not a comma-separated 10x contig table " f"(header: {header[:3]})",
                _FIX_COPY,
            )
        ], None
    dup = _duplicate_column(header)
    if dup:
        return [dup], None
    missing = [c for c in CONTIG_CSV_COLUMNS if c not in header]
    if missing:
        return [
            (
                "line 1 (header)",
                f"lacks column(s) {', '.join(repr(c) for c in missing)} of a 10x " "contig table",
                "give the filtered_contig_annotations.csv written by "
                "Cell Ranger vdj (or convert your table to that layout)",
            )
        ], None
    return [], _Contigs(cols["barcode"], cols["chain"], "barcode", "chain")


def _airr_contigs(path: Path, max_rows: int | None) -> tuple[list[Issue], _Contigs | None]:
    """Cell ids and loci of an AIRR rearrangement TSV, or the issues of its header."""
    header, cols = _read_delimited_columns(
        path, "\t", ("cell_id", "locus", "v_call", "j_call"), max_rows
    )
    if len(header) <= 1:
        return [
            (
                "line 1 (header)",
                "is not a tab-separated AIRR rearrangement file " f"(header: {header[:3]})",
                "give an AIRR rearrangement TSV",
            )
        ], None
    dup = _duplicate_column(header)
    if dup:
        return [dup], None
    missing = []
    if "cell_id" not in header:
        missing.append("'cell_id'")
    if "locus" not in header and "v_call" not in header:
        missing.append("'locus' (or 'v_call' to infer it)")
    if "junction_aa" not in header and "junction" not in header:
        missing.append("'junction_aa' or 'junction'")
    if missing:
        return [
            (
                "line 1 (header)",
                f"lacks column(s) {', '.join(missing)} of the AIRR " "rearrangement schema",
                "give single-cell AIRR data (one row per contig, " "with cell_id)",
            )
        ], None
    if "locus" in cols and any(cols["locus"]):
        chains, chain_col = cols["locus"], "locus"
    else:
        chains, chain_col = [v[:3].upper() for v in cols.get("v_call", [])], "v_call"
    return [], _Contigs(cols["cell_id"], chains, "cell_id", chain_col)


def _barcode_issues(contigs: _Contigs) -> tuple[set[str], list[Issue]]:
    """Cell barcodes of a readable contig table, and the issues of its content."""
    barcodes, chains = contigs.barcodes, contigs.chains
    bc_col, chain_col = contigs.bc_col, contigs.chain_col
    issues: list[Issue] = []
    if not barcodes:
        issues.append(("", "contains no contigs (header only)", "check the Cell Ranger vdj run"))
        return set(), issues
    empty = [i for i, b in enumerate(barcodes) if not b.strip()]
    if empty:
        issues.append(
            (
                f"line {empty[0] + 2}, column '{bc_col}'",
                f"{len(empty)} contig(s) have an empty {bc_col}",
                "single-cell data needs a cell barcode on every contig",
            )
        )
    if chains and all(c in BCR_LOCI for c in chains if c):
        issues.append(_only_bcr_issue(chain_col))
    return {b for b in barcodes if b.strip()}, issues


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


def _only_bcr_issue(col: str) -> Issue:
    return (
        f"column '{col}'",
        "contains only BCR contigs (IGH/IGK/IGL), no TCR",
        "give the T-cell (vdj_t) contig file of this library; B-cell receptor data is not used",
    )
