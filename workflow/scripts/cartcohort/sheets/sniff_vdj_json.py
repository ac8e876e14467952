"""Full checks of a 10x ``all_contig_annotations.json``, one contig object at a time.

The JSON list is decoded object by object from a buffer of about a megabyte
(:class:`JsonListStream`), so a file of any size is checked with flat memory.
Each contig gets the checks the loader (:func:`cartcohort.io.airr.read_10x_json`)
needs to pass: the keys it reads and their types, and annotations it can turn
into gene calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .airr_fields import JSON_REGIONS, VJ_LOCI
from .contig_findings import FIX_COPY, UNREADABLE, BarcodeRule, Findings, describe
from .textfiles import open_text

_CHUNK = 1 << 20
#: A contig object larger than this is refused (a real one is a few kB).
_MAX_OBJECT = 64 << 20
_WS = re.compile(r"\s*")
_NOT_A_LIST = "is not a JSON list of contigs"
#: Keys the loader reads from every contig, and from those of cells.
_ALL_KEYS = ("barcode", "is_cell", "high_confidence")
_CELL_KEYS = (
    "annotations",
    "contig_name",
    "cdr3",
    "cdr3_seq",
    "umi_count",
    "read_count",
    "productive",
    "sequence",
    "aa_sequence",
)
_CR6_REGIONS = ("fwr1", "fwr2", "fwr3", "fwr4", "cdr1", "cdr2")


class JsonStructureError(Exception):
    """The text is not a JSON list of objects (``what`` says where it breaks)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class JsonListStream:
    """The elements of a JSON list read from a text stream, one at a time.

    Raises :class:`JsonStructureError` when the text is not a list, is cut off,
    or holds invalid JSON; ``n`` counts the elements decoded so far.
    """

    def __init__(self, fh: Any):
        self.fh = fh
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.n = 0
        self.decoder = json.JSONDecoder()

    def _more(self) -> bool:
        """Append the next chunk to the buffer (dropping what was decoded); ``False`` at EOF."""
        if self.eof:
            return False
        chunk = self.fh.read(_CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True

    def _peek(self) -> str:
        """The next character that is not white space (``""`` at the end of the text)."""
        while True:
            m = _WS.match(self.buf, self.pos)
            self.pos = m.end() if m else self.pos
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def _decode(self) -> Any:
        """Decode the element at the current position, reading on while it is cut off."""
        while True:
            if len(self.buf) - self.pos < _CHUNK and not self.eof:
                self._more()
            try:
                obj, self.pos = self.decoder.raw_decode(self.buf, self.pos)
                return obj
            except json.JSONDecodeError as err:
                cut = err.pos >= len(self.buf) - 64 or err.msg.startswith("Unterminated")
                if self.eof or not cut:
                    what = "ends inside" if self.eof and cut else "has invalid JSON in"
                    raise JsonStructureError(
                        f"{_NOT_A_LIST}: it {what} contig {self.n + 1} ({err.msg}; "
                        "truncated or corrupt)"
                    ) from None
                if len(self.buf) - self.pos > _MAX_OBJECT:
                    raise JsonStructureError(
                        f"{_NOT_A_LIST}: contig {self.n + 1} is larger than "
                        f"{_MAX_OBJECT >> 20} MB"
                    ) from None
                self._more()

    def __iter__(self) -> Iterator[Any]:
        first = self._peek()
        if first != "[":
            raise JsonStructureError(
                f"{_NOT_A_LIST}: it starts with {first!r}, not '['"
                if first
                else "is empty (no JSON list)"
            )
        self.pos += 1
        while True:
            c = self._peek()
            if c == "]" and self.n == 0:
                break
            if self.n:
                if c == "]":
                    break
                if c != ",":
                    end = "ends" if not c else f"has {c!r}"
                    raise JsonStructureError(
                        f"{_NOT_A_LIST}: it {end} after contig {self.n} where ',' or ']' "
                        "belongs (truncated or corrupt)"
                    )
                self.pos += 1
                self._peek()
            yield self._decode()
            self.n += 1
        self.pos += 1
        if self._peek():
            raise JsonStructureError(f"{_NOT_A_LIST}: text follows its closing ']'")


# --------------------------------------------------------------------------- one contig


def _type_kind(value: Any, want: str) -> str | None:
    """The failed check of a JSON value that should be ``want`` (or null)."""
    if value is None:
        return None
    if want == "bool":
        return None if isinstance(value, bool) else "bool"
    if want == "count":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok else "count"
    return None if isinstance(value, str) else "text"


#: ``key -> expected type`` of the values of a cell's contig that the loader types.
_CELL_TYPES = {
    "umi_count": "count",
    "read_count": "count",
    "productive": "bool",
    "cdr3": "text",
    "cdr3_seq": "text",
}


def _read_regions(annotations: Any) -> tuple[str | None, str | None]:
    """What the loader cannot read in a contig's ``annotations`` (``None`` when fine),
    and the contig's locus as the loader sets it: the one chain of its V/D/J/C regions."""
    if not isinstance(annotations, list):
        return "not a list", None
    regions: dict[str, Mapping[str, Any]] = {}
    for annot in annotations:
        feat = annot.get("feature") if isinstance(annot, dict) else None
        if not isinstance(feat, dict) or not isinstance(feat.get("region_type"), str):
            return "an annotation without a 'feature' with a text 'region_type'", None
        region = JSON_REGIONS.get(feat["region_type"])
        if region is None:
            continue
        if region in regions:
            return f"two {feat['region_type']} annotations", None
        if not isinstance(feat.get("chain"), str) or "gene_name" not in feat:
            return f"a {feat['region_type']} feature without a text 'chain' or 'gene_name'", None
        ends = (annot.get("contig_match_start"), annot.get("contig_match_end"))
        if not all(isinstance(e, int) and not isinstance(e, bool) for e in ends):
            return (
                f"a {feat['region_type']} annotation without integer contig_match_start/end",
                None,
            )
        regions[region] = feat
    chains = {f["chain"] for f in regions.values()}
    chain = chains.pop() if len(chains) == 1 else None
    called = {r for r, f in regions.items() if f["gene_name"] is not None}
    if chain in VJ_LOCI and {"v", "j", "d"} <= called:
        return f"a D region on a {chain} chain", chain
    return None, chain


def check_contig(obj: Any, n: int, rule: BarcodeRule, findings: Findings) -> None:
    """Check contig ``n`` (1-based) of a 10x JSON; count it as a cell when it is one."""
    findings.n_contigs += 1
    if not isinstance(obj, dict):
        findings.add("", "object", n, type(obj).__name__)
        return
    bad = False
    for key in _ALL_KEYS + (
        _CELL_KEYS if obj.get("is_cell") and obj.get("high_confidence") else ()
    ):
        if key not in obj:
            findings.add(key, "key", n, "")
            bad = True
    for key in ("is_cell", "high_confidence"):
        if key in obj and not isinstance(obj[key], bool):
            findings.add(key, "bool", n, repr(obj[key]))
            bad = True
    barcode = obj.get("barcode")
    kind = rule.kind(barcode) if isinstance(barcode, str) else "text"
    if kind is not None and "barcode" in obj:
        findings.add("barcode", kind, n, repr(barcode), repr(rule.first))
        bad = True
    if bad or not (obj["is_cell"] and obj["high_confidence"]):
        return
    for key, want in _CELL_TYPES.items():
        kind = _type_kind(obj[key], want)
        if kind is not None:
            findings.add(key, kind, n, repr(obj[key]))
            bad = True
    for key in _CR6_REGIONS:
        if key in obj and obj[key] and not isinstance(obj[key], dict):
            findings.add(key, "region", n, "not an object")
            bad = True
    why, chain = _read_regions(obj["annotations"])
    if why is not None:
        findings.add("annotations", "region", n, why)
    elif not bad:
        findings.add_cells([barcode], [chain])


def scan_json(path: Path, findings: Findings) -> bool:
    """Check every contig of a 10x contig JSON into ``findings``; ``False`` when the
    file is empty."""
    rule = BarcodeRule()
    with open_text(path) as fh:
        stream = JsonListStream(fh)
        try:
            for obj in stream:
                check_contig(obj, stream.n + 1, rule, findings)
        except JsonStructureError as err:
            if err.what.startswith("is empty"):
                return False
            findings.issues.append(("", err.what, "the file is truncated or corrupt; " + FIX_COPY))
        except UNREADABLE as err:
            findings.issues.append(
                (
                    "",
                    f"is unreadable after contig {stream.n} ({describe(err)})",
                    "the file is truncated or corrupt; " + FIX_COPY,
                )
            )
    return True
