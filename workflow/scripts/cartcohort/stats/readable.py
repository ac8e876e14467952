"""Readable result tables: labels and feature families beside every ``feature`` (issue #23).

Every table of rule ``associate`` gets ``label`` and ``feature_family`` from the feature
dictionary (:mod:`cartcohort.dictionary`) right after ``feature``. ``association.tsv`` and
``in_vivo_correlates.tsv`` also get ``qvalue_family``, the Benjamini–Hochberg q-value
within the row's family of hypotheses, beside the existing ``qvalue`` (BH within ``test``
x ``family``: the whole primary panel, or every exploratory feature of every feature
family at once), and ``qvalue_all`` (BH over every feature of the ``test``, primary and
exploratory together). The families of hypotheses partition the tests of one ``test``:

- the primary panel (``family`` ``primary``) is one family, as it always was: it is the
  confirmatory question, fixed before the response labels are seen, and its family-wise
  error is checked by permutation, so its ``qvalue_family`` equals its ``qvalue``;
- every other feature (``exploratory``) belongs to the family of its dictionary entry
  (composition, memory/exhaustion, exhaustion markers, CAR, repertoire,
  persistence/kinetics, QC), and is corrected with that family only.

Why the report leads with ``qvalue_family``: the feature families are fixed in the
versioned dictionary before any cohort is seen, and each is one biological question a
reader asks on its own ("is the product's repertoire related to response?"). Pooling all
families into one BH correction makes the answer to one question depend on how many
unrelated features another family happens to have (thirty near-null repertoire indices
dilute a CAR family of one feature); Efron (Ann Appl Stat 2008, "Simultaneous inference:
when should hypothesis testing problems be combined?") argues for the separate analysis
of such a mix. The price: the FDR is controlled within each family, not over the whole
table (with k families, up to k times the level of expected false discoveries over all of
them), so the across-family ``qvalue`` stays beside it for a reader who takes the whole
table as one question.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..dictionary import FeatureDictionary, label_table
from ..multitest import bh_qvalues

#: The ``family`` whose features form one family of hypotheses whatever their
#: dictionary family (the confirmatory primary panel).
PANEL_FAMILY = "primary"


def hypothesis_family(table: pd.DataFrame) -> pd.Series:
    """The family of hypotheses of each row: ``primary panel`` for the primary panel,
    else the row's ``feature_family``."""
    panel = table["family"].astype(str) == PANEL_FAMILY
    return table["feature_family"].astype(str).where(~panel, "primary panel")


def family_qvalues(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``qvalue_family`` after ``qvalue``: BH within each ``test`` x
    :func:`hypothesis_family` (the module docstring says why); then ``qvalue_all``: BH
    over every feature of the ``test`` at once (primary and exploratory together).

    Parameters
    ----------
    table
        A labelled association table (``test``, ``family``, ``feature_family``,
        ``pvalue``, ``qvalue``).

    Returns
    -------
    pandas.DataFrame
        Same rows and order; NaN where the p-value is missing.
    """
    out = table.drop(columns=["qvalue_family", "qvalue_all"], errors="ignore")
    at = list(out.columns).index("qvalue") + 1
    tests = out["test"].astype(str)
    out.insert(at, "qvalue_family", _bh_by(out, tests + "\x1f" + hypothesis_family(out)))
    out.insert(at + 1, "qvalue_all", _bh_by(out, tests))
    return out


def _bh_by(table: pd.DataFrame, keys: pd.Series) -> np.ndarray:
    """BH q-values of ``table['pvalue']`` within each value of ``keys`` (NaN stays NaN)."""
    q = np.full(len(table), np.nan)
    p = pd.to_numeric(table["pvalue"], errors="coerce").to_numpy(float)
    keys = keys.to_numpy()
    for key in pd.unique(keys):
        rows = keys == key
        q[rows] = bh_qvalues(p[rows])
    return q


def readable_association(
    table: pd.DataFrame, *, dictionary: FeatureDictionary, what: str
) -> pd.DataFrame:
    """An association-shaped table (``association.tsv``, ``in_vivo_correlates.tsv``) with
    ``label``, ``feature_family`` (:func:`~cartcohort.dictionary.label_table`) and
    ``qvalue_family``, ``qvalue_all`` (:func:`family_qvalues`)."""
    return family_qvalues(label_table(table, dictionary, what=what))


def readable_tables(dictionary: FeatureDictionary, **tables: pd.DataFrame) -> dict:
    """The tables of rule ``associate`` by name, labelled: ``association`` and ``in_vivo``
    by :func:`readable_association`, every other one by
    :func:`~cartcohort.dictionary.label_table`."""
    return {name: readable_association(t, dictionary=dictionary, what=name)
            if name in ("association", "in_vivo") else label_table(t, dictionary, what=name)
            for name, t in tables.items()}
