"""The feature dictionary: readable names of every feature id (``resources/features.yaml``).

One file, versioned, read by every table and figure that shows a feature (issue #23):

``features``
    Exact ids -> entry (``label``, ``unit``, ``family``, ``description``, ``better``,
    ``reference``). ``unit`` ``"%"`` marks a fraction shown x100.
``patterns``
    Generated families of ids (per-state fractions, checkpoint markers per subset, the
    repertoire's columns ...): a list of entries with a ``match`` regular expression
    (full match, named groups) and the same fields as templates, ``{group}`` replaced by
    the group's words from ``names`` (``names.<group>s``, e.g. ``names.states``) or, for
    a value not listed there (a cohort's own state), the value with ``_`` as spaces. The
    first pattern that matches wins; exact ids come before every pattern.
``names``
    Words for the tokens of generated ids (``states``, ``subsets``, ``markers``).

An id ``<feature>@<timepoint>`` (in vivo features of a post-infusion timepoint,
``in_vivo_correlates.tsv``) is the entry of ``<feature>`` with ``at <timepoint>`` added to
its label. :func:`FeatureDictionary.resolve` is the one lookup every caller uses;
:func:`label_table` puts ``label`` and ``feature_family`` beside a table's ``feature``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from .errors import CartCohortError
from .yaml_file import read_yaml_file

#: Versions of the file this code reads (1: exact ids only; 2: adds patterns and names).
SUPPORTED_VERSIONS = (1, 2)
#: Keys every entry must have.
FIELDS = ("label", "unit", "family", "description", "better", "reference")
BETTER = ("higher", "lower", None)
#: Families of the dictionary (report order; issue #23).
FAMILIES = ("composition", "memory/exhaustion", "exhaustion markers", "CAR", "repertoire",
            "persistence/kinetics", "QC")
#: ``feature`` values of result rows that stand for no feature (a skipped scope).
PLACEHOLDERS = ("(all)",)
#: Separator of an in vivo feature id and its timepoint (``stats.scopes``).
TIMEPOINT_SEP = "@"


@dataclass(frozen=True)
class FeatureInfo:
    """One feature's readable name (:data:`FIELDS`)."""

    id: str
    label: str
    unit: str
    family: str
    description: str
    better: str | None
    reference: str | None

    def format(self, value: float) -> str:
        """``value`` in the feature's unit (``"%"``: x100, one decimal)."""
        if math.isnan(value):
            return "n/a"
        if self.unit == "%":
            return f"{100 * value:.1f} %"
        if self.unit == "log2":
            return f"{value:+.2f} (ratio {2 ** value:.2f})"
        return f"{value:.3f}" + (f" {self.unit}" if self.unit and self.unit != "index" else "")


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern
    entry: dict


@dataclass(frozen=True)
class FeatureDictionary:
    """Exact entries, patterns and token names of a ``features.yaml``.

    Behaves as a read-only mapping of ids that resolve (``fid in d``, ``d[fid]``);
    iterating gives the exact ids.
    """

    exact: dict[str, FeatureInfo]
    patterns: tuple[_Pattern, ...] = ()
    names: dict[str, dict[str, str]] = field(default_factory=dict)
    version: int = 2
    source: str = "features.yaml"

    def resolve(self, fid: str) -> FeatureInfo | None:
        """The entry of ``fid``: exact id first, then the first matching pattern; an
        ``@<timepoint>`` suffix is resolved on the id before it. None when nothing fits."""
        fid = str(fid)
        base, sep, tp = fid.partition(TIMEPOINT_SEP)
        if sep:
            info = self.resolve(base)
            if info is None:
                return None
            return FeatureInfo(
                id=fid, label=f"{info.label} at {tp}", unit=info.unit, family=info.family,
                description=f"{info.description} Measured at timepoint {tp}.",
                better=info.better, reference=info.reference)
        if fid in self.exact:
            return self.exact[fid]
        for pat in self.patterns:
            m = pat.regex.fullmatch(fid)
            if m:
                return self._from_pattern(fid, pat, m)
        return None

    def _from_pattern(self, fid: str, pat: _Pattern, m: re.Match) -> FeatureInfo:
        words = {k: self._word(k, v) for k, v in m.groupdict().items() if v is not None}

        def fill(value):
            return None if value is None else str(value).format(**words)

        e = pat.entry
        return FeatureInfo(
            id=fid, label=_capital(fill(e["label"])), unit=str(e["unit"] or ""),
            family=str(e["family"]), description=fill(e["description"]),
            better=e["better"], reference=e["reference"])

    def _word(self, group: str, value: str) -> str:
        table = self.names.get(f"{group}s", {})
        return str(table.get(value, value.replace("_", " ")))

    def __contains__(self, fid: object) -> bool:
        return self.resolve(str(fid)) is not None

    def __iter__(self):
        """The exact ids (pattern ids are not enumerable)."""
        return iter(self.exact)

    def __len__(self) -> int:
        return len(self.exact)

    def __getitem__(self, fid: str) -> FeatureInfo:
        info = self.resolve(fid)
        if info is None:
            raise KeyError(fid)
        return info

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The ids (placeholders aside) without an entry, in order, once each."""
        out: list[str] = []
        for fid in ids:
            fid = str(fid)
            if fid not in PLACEHOLDERS and fid not in out and self.resolve(fid) is None:
                out.append(fid)
        return out


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _check_entry(src: str, fid: str, entry: object, *, extra: tuple[str, ...] = ()) -> None:
    missing = [k for k in (*extra, *FIELDS) if not isinstance(entry, dict) or k not in entry]
    if missing:
        raise CartCohortError(f"{src}: feature '{fid}' lacks {missing}. Fix: give "
                              f"every feature all of {list(FIELDS)} (null where unknown)")
    if entry["better"] not in BETTER:
        raise CartCohortError(f"{src}: feature '{fid}': better must be higher, lower or "
                              f"null, got {entry['better']!r}")
    if entry["better"] is not None and not entry["reference"]:
        raise CartCohortError(f"{src}: feature '{fid}' says better: {entry['better']} "
                              "without a reference. Fix: cite the source, or set better: null")


def read_dictionary(path: str | os.PathLike) -> FeatureDictionary:
    """The feature dictionary of a ``features.yaml`` (versions :data:`SUPPORTED_VERSIONS`).

    Raises
    ------
    CartCohortError
        An unsupported ``version``, an entry lacking a field of :data:`FIELDS`, a
        ``better`` other than higher/lower/null (or without a reference), or a pattern
        that is not a valid regular expression, naming the entry and the fix.
    """
    data, src = read_yaml_file(path, setting="scorecards.features")
    if not isinstance(data, dict) or data.get("version") not in SUPPORTED_VERSIONS:
        raise CartCohortError(
            f"{src}: 'version' must be one of {list(SUPPORTED_VERSIONS)}, got "
            f"{data.get('version') if isinstance(data, dict) else data!r}. Fix: start the "
            "file with `version: 2`")
    entries = data.get("features")
    if not isinstance(entries, dict) or not entries:
        raise CartCohortError(f"{src}: no 'features' mapping. Fix: list features under "
                              "`features:` (id -> label, unit, ...)")
    exact = {}
    for fid, entry in entries.items():
        _check_entry(src, str(fid), entry)
        exact[str(fid)] = FeatureInfo(
            id=str(fid), label=str(entry["label"]), unit=str(entry["unit"] or ""),
            family=str(entry["family"]), description=str(entry["description"]),
            better=entry["better"], reference=entry["reference"])
    patterns = []
    for i, entry in enumerate(data.get("patterns") or []):
        _check_entry(src, f"patterns[{i}]", entry, extra=("match",))
        try:
            regex = re.compile(str(entry["match"]))
        except re.error as err:
            raise CartCohortError(f"{src}: patterns[{i}] match {entry['match']!r} is not a "
                                  f"regular expression ({err}). Fix: correct it") from None
        patterns.append(_Pattern(regex=regex, entry=dict(entry)))
    names = {str(k): {str(a): str(b) for a, b in (v or {}).items()}
             for k, v in (data.get("names") or {}).items()}
    return FeatureDictionary(exact=exact, patterns=tuple(patterns), names=names,
                             version=int(data["version"]), source=src)


def label_table(table: pd.DataFrame, dictionary: FeatureDictionary, *,
                column: str = "feature", what: str = "table") -> pd.DataFrame:
    """``table`` with ``label`` and ``feature_family`` inserted after ``column``.

    Placeholder rows (:data:`PLACEHOLDERS`) get an empty label and family.

    Raises
    ------
    CartCohortError
        A feature id without a dictionary entry, naming the ids, ``what`` and the fix.
    """
    missing = dictionary.missing(table[column]) if len(table) else []
    if missing:
        raise CartCohortError(
            f"{what}: no entry in {dictionary.source} for {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}. Fix: add them (or a pattern that "
            "matches them) to the feature dictionary (config scorecards.features)")
    out = table.drop(columns=[c for c in ("label", "feature_family") if c in table])
    infos = [None if str(f) in PLACEHOLDERS else dictionary.resolve(str(f))
             for f in out[column]]
    at = list(out.columns).index(column) + 1
    out.insert(at, "label", [i.label if i else "" for i in infos])
    out.insert(at + 1, "feature_family", [i.family if i else "" for i in infos])
    return out

