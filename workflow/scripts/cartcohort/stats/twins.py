"""Twins: near-copies of a feature collapsed to one representative before testing.

Features whose |Spearman rho| across patients exceeds ``associate.collapse_rho`` answer
the same question twice (``clonal_diversity_gini_simpson`` and ``rep_gini_simpson``,
``mean_score_exhausted`` and ``exhausted_fraction``, ...). They are clustered by
complete linkage on the distance ``1 - |rho|`` (SciPy), cut at ``1 - collapse_rho``, so
that **every** pair in a cluster exceeds the threshold (single linkage would chain
features that are not twins of each other). Each cluster keeps one representative:

1. a member of the primary panel, if any;
2. else (and among several panel members) the feature with the fewest missing values;
3. then the first in feature-table order.

The representative is tested; its ``twins`` column lists the others with their rho to
it; the twins are noted and never tested again. Identical columns (rho = 1) are twins
too, so this replaces the former identical-column check.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import CartCohortError
from ._utils import notes_table

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Twins:
    """Result of :func:`collapse_twins`.

    Attributes
    ----------
    representatives
        The features to test, in feature-table order.
    twins
        Representative -> its twins as ``(feature, rho to the representative)``.
    notes
        One note (scope ``feature``) per twin.
    """

    representatives: list[str]
    twins: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    notes: pd.DataFrame = field(default_factory=lambda: notes_table([]))

    @property
    def n_collapsed(self) -> int:
        """How many features were collapsed into a representative (not tested)."""
        return sum(len(t) for t in self.twins.values())

    def label(self, feature: str) -> str:
        """The ``twins`` cell of a representative: ``a (rho=0.97); b (rho=-0.93)`` (read
        back by :func:`cartcohort.tables.twin_names`)."""
        return "; ".join(f"{name} (rho={rho:.3g})" for name, rho in self.twins.get(feature, []))


def spearman_matrix(table: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """Spearman rho between every pair of features, on the patients both have a value for.

    Pairs with fewer than 3 shared patients, or a constant feature among them, get NaN.
    """
    return table[list(features)].astype(float).corr(method="spearman", min_periods=3)


def _clusters(rho: pd.DataFrame, *, collapse_rho: float) -> np.ndarray:
    """Complete-linkage cluster label of each feature, cut so every pair has |rho| > cut."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = len(rho)
    if n < 2:
        return np.ones(n, dtype=int)
    dist = 1.0 - np.abs(rho.to_numpy(float))
    dist = np.where(np.isfinite(dist), dist, 1.0)  # unknown rho: not twins
    dist = np.clip((dist + dist.T) / 2.0, 0.0, 1.0)
    np.fill_diagonal(dist, 0.0)
    tree = linkage(squareform(dist, checks=False), method="complete")
    # |rho| > collapse_rho  <=>  distance < 1 - collapse_rho (fcluster keeps <= t)
    cut = np.nextafter(1.0 - collapse_rho, -np.inf)
    return fcluster(tree, t=cut, criterion="distance")


def collapse_twins(
    table: pd.DataFrame,
    *,
    features: Sequence[str],
    collapse_rho: float,
    panel: Sequence[str] = (),
) -> Twins:
    """Collapse features whose |Spearman rho| across patients exceeds ``collapse_rho``.

    Parameters
    ----------
    table
        Patient-level table (one row per patient, the primary timepoint).
    features
        Candidate features, in feature-table order.
    collapse_rho
        Threshold in (0, 1] (config ``associate.collapse_rho``); 1 collapses nothing.
    panel
        Primary-panel features: preferred as representatives.

    Returns
    -------
    Twins
        The representatives in feature-table order, the twins of each, and a note
        per twin.
    """
    if not 0.0 < collapse_rho <= 1.0:
        raise CartCohortError(f"collapse_rho must lie in (0, 1], got {collapse_rho}")
    feats = list(features)
    rho = spearman_matrix(table, feats)
    labels = _clusters(rho, collapse_rho=collapse_rho)
    missing = table[feats].isna().sum()
    in_panel = set(panel)
    reps: set[str] = set()
    twins: dict[str, list[tuple[str, float]]] = {}
    notes: list[tuple[str, str, str]] = []
    for lab in sorted(set(labels)):
        members = [f for f, lb in zip(feats, labels, strict=True) if lb == lab]
        rep = min(members, key=lambda f: (f not in in_panel, int(missing[f]), feats.index(f)))
        reps.add(rep)
        others = [(f, float(rho.loc[rep, f])) for f in members if f != rep]
        if others:
            twins[rep] = others
        for f, r in others:
            what = "primary panel feature " if f in in_panel else ""
            notes.append(("feature", f, f"not tested: {what}twin of {rep} (Spearman rho "
                          f"{r:.3g}, |rho| > associate.collapse_rho {collapse_rho:g})"))
    out = Twins([f for f in feats if f in reps], twins, notes_table(notes))
    logger.info(
        "%d of %d features collapsed into %d representative(s) (|Spearman rho| > %g)",
        out.n_collapsed, len(feats), len(twins), collapse_rho,
    )
    return out
