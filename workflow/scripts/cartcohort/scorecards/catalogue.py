"""Readable names of per-sample features: ``resources/features.yaml`` (versioned).

One entry per feature id (a column of ``sample_features.tsv``): ``label``, ``unit``
(``"%"`` marks a fraction shown x100), ``family``, ``description``, ``better``
(``higher``, ``lower`` or null) and the ``reference`` behind ``better``. Issue #20 fills
the product scorecard's features; issue #23 extends the file to every feature, which
needs no code change here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..errors import CartCohortError
from ..yaml_file import read_yaml_file

#: Versions of the file this code reads.
SUPPORTED_VERSIONS = (1,)
#: Keys every entry must have.
FIELDS = ("label", "unit", "family", "description", "better", "reference")
BETTER = ("higher", "lower", None)


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


def read_catalogue(path: str | os.PathLike) -> dict[str, FeatureInfo]:
    """The features of a ``features.yaml``.

    Raises
    ------
    CartCohortError
        An unsupported ``version``, an entry lacking a field of :data:`FIELDS`, or a
        ``better`` other than higher/lower/null, naming the feature and the fix.
    """
    data, src = read_yaml_file(path, setting="scorecards.features")
    if not isinstance(data, dict) or data.get("version") not in SUPPORTED_VERSIONS:
        raise CartCohortError(
            f"{src}: 'version' must be one of {list(SUPPORTED_VERSIONS)}, got "
            f"{data.get('version') if isinstance(data, dict) else data!r}. Fix: start the "
            "file with `version: 1`")
    entries = data.get("features")
    if not isinstance(entries, dict) or not entries:
        raise CartCohortError(f"{src}: no 'features' mapping. Fix: list features under "
                              "`features:` (id -> label, unit, ...)")
    out = {}
    for fid, entry in entries.items():
        missing = [k for k in FIELDS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise CartCohortError(f"{src}: feature '{fid}' lacks {missing}. Fix: give "
                                  f"every feature all of {list(FIELDS)} (null where unknown)")
        if entry["better"] not in BETTER:
            raise CartCohortError(f"{src}: feature '{fid}': better must be higher, lower or "
                                  f"null, got {entry['better']!r}")
        out[str(fid)] = FeatureInfo(
            id=str(fid), label=str(entry["label"]), unit=str(entry["unit"] or ""),
            family=str(entry["family"]), description=str(entry["description"]),
            better=entry["better"], reference=entry["reference"])
    return out
