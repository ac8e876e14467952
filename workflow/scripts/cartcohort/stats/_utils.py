"""Shared helpers of :mod:`cartcohort.stats`: result columns, notes, seeds, directions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Columns of ``association.tsv``. ``scope`` is ``product`` on every row (in vivo
#: features are in ``in_vivo_correlates.tsv``); ``family`` is ``primary`` (the
#: pre-specified panel) or ``exploratory``, and BH q-values are computed within each
#: ``test`` x ``family``; ``panel_version`` is the version of the panel that made the
#: split; ``twins`` lists the features collapsed into this one (``name (rho=...)``,
#: ``;``-separated), never tested themselves; ``or_per_unit`` and its interval are the
#: odds ratio of the logistic rows per ``unit`` of the feature.
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
    "scope",
    "family",
    "panel_version",
    "twins",
    "or_per_unit",
    "or_unit_ci_low",
    "or_unit_ci_high",
    "unit",
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


def direction(effect: float, null: float = 0.0) -> str:
    """``higher_in_responders``, ``lower_in_responders``, ``none`` or ``NA`` (not finite)."""
    if not np.isfinite(effect):
        return "NA"
    if effect > null:
        return "higher_in_responders"
    if effect < null:
        return "lower_in_responders"
    return "none"
