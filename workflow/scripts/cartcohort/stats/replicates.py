"""Libraries as replicates: a paper's own unit of analysis (``associate.unit: library``).

Papers often test every library (all timepoints of a patient) as if independent. With
``associate.unit: library``, :func:`library_association` reproduces such a test: one
two-sided Mann–Whitney test per feature on the per-library values, responders'
libraries against non-responders', with the p-value of R's ``wilcox.test`` (exact when
there are no ties and both groups have fewer than 50 values, otherwise the normal
approximation with tie and continuity correction; :func:`wilcox_pvalue`). The repeated
measures of one patient are not independent, so such p-values are too small: every row is
labelled :data:`LIBRARY_LABEL`, a warning is logged, and the patient-level p-value of
``association.tsv`` stands beside it (``pvalue_patient``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import InputError, Problem
from ..tl.features import IN_VIVO_REPERTOIRE
from ..vocab import LIBRARY_UNIT_LABEL
from .labels import feature_columns, response_labels
from .response import bh_qvalues, rank_biserial

logger = logging.getLogger(__name__)

#: The label of every library-level result (report, warnings, table).
LIBRARY_LABEL = LIBRARY_UNIT_LABEL
#: The units of analysis of ``associate.unit``.
UNITS: tuple[str, ...] = ("patient", "library")
#: Fewer values than this in each group, and no ties: the exact p-value (as R).
EXACT_BELOW = 50
#: Columns of ``association_libraries.tsv``.
LIBRARY_COLUMNS: tuple[str, ...] = (
    "feature", "test", "unit", "effect", "effect_type", "pvalue", "method", "qvalue",
    "n_libraries_responders", "n_libraries_nonresponders", "n_patients_responders",
    "n_patients_nonresponders", "median_responders", "median_nonresponders",
    "pvalue_patient", "caveat",
)


def wilcox_pvalue(x: Sequence[float], y: Sequence[float]) -> tuple[float, str]:
    """Two-sided Mann–Whitney p-value as R's ``wilcox.test`` computes it.

    Exact (``scipy.stats.mannwhitneyu(method='exact')``) when there are no ties and
    both groups have fewer than :data:`EXACT_BELOW` values; otherwise the normal
    approximation with tie and continuity correction (``method='asymptotic'``).

    Returns
    -------
    pvalue, method
        ``method`` is ``exact`` or ``asymptotic``.
    """
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    pooled = np.concatenate([xa, ya])
    ties = len(np.unique(pooled)) < len(pooled)
    method = "exact" if not ties and max(len(xa), len(ya)) < EXACT_BELOW else "asymptotic"
    res = stats.mannwhitneyu(xa, ya, alternative="two-sided", method=method)
    return float(res.pvalue), method


def library_association(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    responders: Sequence[str],
    excluded: Sequence[str],
    patient_pvalues: pd.Series | None = None,
    clinical_source: str = "clinical table",
) -> pd.DataFrame:
    """Mann–Whitney test of every product feature with libraries as replicates.

    Parameters
    ----------
    features
        Per-sample feature table (every library of every timepoint).
    clinical
        Clinical table (``patient``, ``response``).
    responders, excluded
        Response codes counted as responders / left out.
    patient_pvalues
        Feature -> the patient-level Mann–Whitney p-value (``association.tsv``), shown
        beside (``pvalue_patient``; NA where the feature was not tested there).
    clinical_source
        File name for messages.

    Returns
    -------
    pandas.DataFrame
        :data:`LIBRARY_COLUMNS`, one row per feature with values in both groups that
        are not all equal (in vivo repertoire features left out: outcome correlates);
        ``qvalue``: Benjamini–Hochberg across these rows.
    """
    if "patient" not in features.columns:
        raise InputError([Problem("sample_features.tsv", "column 'patient'",
                                  "required column is missing", "re-run rule sample_features")])
    labels = response_labels(clinical, responders=responders, excluded=excluded,
                             source=clinical_source)["responder"]
    resp = features["patient"].astype(str).map(labels)
    keep = resp.notna().to_numpy()
    lib, flag = features[keep], resp[keep].astype(bool).to_numpy()
    logger.warning("associate.unit = library: %s; %d libraries of %d patients",
                   LIBRARY_LABEL, len(lib), lib["patient"].nunique())
    rows = []
    for f in feature_columns(lib):
        if f.startswith("count_") or f in IN_VIVO_REPERTOIRE:
            continue
        v = pd.to_numeric(lib[f], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(v)
        x, y = v[ok & flag], v[ok & ~flag]
        if not len(x) or not len(y) or np.ptp(v[ok]) == 0:
            continue  # a group without values, or one value throughout: nothing to test
        p, method = wilcox_pvalue(x, y)
        pats = lib["patient"].to_numpy()
        rows.append({
            "feature": f, "test": "mann_whitney", "unit": "library",
            "effect": rank_biserial(x, y), "effect_type": "rank_biserial",
            "pvalue": p, "method": method, "qvalue": np.nan,
            "n_libraries_responders": len(x), "n_libraries_nonresponders": len(y),
            "n_patients_responders": len(set(pats[ok & flag])),
            "n_patients_nonresponders": len(set(pats[ok & ~flag])),
            "median_responders": float(np.median(x)),
            "median_nonresponders": float(np.median(y)),
            "pvalue_patient": (np.nan if patient_pvalues is None
                               else float(patient_pvalues.get(f, np.nan))),
            "caveat": LIBRARY_LABEL,
        })
    table = pd.DataFrame(rows, columns=list(LIBRARY_COLUMNS))
    if len(table):
        table["qvalue"] = bh_qvalues(table["pvalue"].to_numpy())
    return table
