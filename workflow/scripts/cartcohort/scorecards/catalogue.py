"""Readable names of per-sample features: ``resources/features.yaml`` (versioned).

The file and its lookup live in :mod:`cartcohort.dictionary` (issue #23: every table and
figure reads it); this module keeps the scorecards' names for it. :func:`read_catalogue`
returns a :class:`~cartcohort.dictionary.FeatureDictionary`, a read-only mapping of every
id that resolves (exact entries, then patterns, then ``<feature>@<timepoint>``).
"""

from __future__ import annotations

from ..dictionary import BETTER, FIELDS, SUPPORTED_VERSIONS, FeatureDictionary, FeatureInfo
from ..dictionary import read_dictionary as read_catalogue

__all__ = ["BETTER", "FIELDS", "SUPPORTED_VERSIONS", "FeatureDictionary", "FeatureInfo",
           "read_catalogue"]
