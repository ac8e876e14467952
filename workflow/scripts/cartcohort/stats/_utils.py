"""Shared helpers of :mod:`cartcohort.stats`: result columns, notes, seeds, directions."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Columns of ``association.tsv``.
ASSOCIATION_COLUMNS: tuple[str, ...] = (
    "feature",
    "test",
    "effect",
    "ci_low",
    "ci_high",
    "pvalue",
    "qvalue",
    "n_responders",
    "n_nonresponders",
    "effect_type",
    "direction",
    "median_responders",
    "median_nonresponders",
    "note",
)
#: Columns of ``association_notes.tsv``.
NOTE_COLUMNS: tuple[str, ...] = ("scope", "item", "note")


def notes_table(rows: Sequence[tuple[str, str, str]]) -> pd.DataFrame:
    """A notes table (:data:`NOTE_COLUMNS`) from ``(scope, item, note)`` rows."""
    return pd.DataFrame(list(rows), columns=list(NOTE_COLUMNS))


def skipped_frame(columns: Sequence[str], **values: object) -> pd.DataFrame:
    """A one-row table with ``columns``: NA everywhere except ``values``."""
    row: dict[str, object] = {c: np.nan for c in columns}
    row.update(values)
    return pd.DataFrame([row], columns=list(columns))


def feature_rng(seed: int, name: str) -> np.random.Generator:
    """Generator for one feature, independent of which other features exist."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def direction(effect: float, null: float = 0.0) -> str:
    """``higher_in_responders``, ``lower_in_responders``, ``none`` or ``NA`` (not finite)."""
    if not np.isfinite(effect):
        return "NA"
    if effect > null:
        return "higher_in_responders"
    if effect < null:
        return "lower_in_responders"
    return "none"
