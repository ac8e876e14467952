"""Key findings of the overview page: one sentence per leading association, from the tables.

The sentences are generated from ``association.tsv`` alone (no text about any cohort is
written here): the Mann–Whitney rows, the primary panel's first (the confirmatory
question), each group ranked by ``qvalue_family`` (the q-value within the
family of hypotheses: the primary panel, or the feature's dictionary family for the
exploratory features; :mod:`cartcohort.stats.readable` says why the report leads with
it), at most :data:`MAX_FINDINGS`, those below :data:`Q_FINDING`; when none is, one
sentence says so and names the smallest. Each sentence names the feature by its label,
the direction, both groups' medians in the feature's unit, the rank-biserial effect with
its CI, both q-values, and the twins shown once under it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..dictionary import FeatureDictionary
from ..tables import twin_names

#: At most this many findings on the page.
MAX_FINDINGS = 5
#: A finding: family q-value below this.
Q_FINDING = 0.05
_DIRECTION = {"higher_in_responders": "higher", "lower_in_responders": "lower"}


def _twins_text(twins: object, dictionary: FeatureDictionary) -> str:
    """``; shown once for its near-copies A, B`` from a ``twins`` cell (ids with rho)."""
    names = twin_names(twins)
    if not names:
        return ""
    labels = [dictionary[n].label if n in dictionary else n for n in names]
    return f"; shown once for its near-copies (|Spearman rho| above the threshold): " \
           f"{', '.join(labels)}"


def finding_sentence(row: pd.Series, *, dictionary: FeatureDictionary) -> str:
    """One sentence for one Mann–Whitney row of ``association.tsv`` (labelled)."""
    info = dictionary[str(row["feature"])]
    where = "primary panel" if row.get("family") == "primary" else \
        f"{row['feature_family']} family"
    direction = _DIRECTION.get(str(row["direction"]))
    verb = (f"is {direction} in responders" if direction
            else "does not differ in direction between responders and non-responders")
    ci = (f", 95% CI {row['ci_low']:+.2f} to {row['ci_high']:+.2f}"
          if np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]) else "")
    return (
        f"{info.label} ({where}) {verb}: median {info.format(float(row['median_responders']))} "
        f"in {int(row['n_responders'])} responders vs "
        f"{info.format(float(row['median_nonresponders']))} in "
        f"{int(row['n_nonresponders'])} non-responders (rank-biserial {row['effect']:+.2f}{ci}; "
        f"q = {row['qvalue_family']:.2g} within the {where}, {row['qvalue']:.2g} across "
        f"all {'panel' if row.get('family') == 'primary' else 'exploratory'} features"
        f"{_twins_text(row.get('twins'), dictionary)})."
    )


def key_findings(association: pd.DataFrame, *, dictionary: FeatureDictionary) -> list[str]:
    """The overview page's key findings (module docstring), one sentence each.

    Parameters
    ----------
    association
        ``association.tsv`` (with ``label``, ``feature_family``, ``qvalue_family``).
    dictionary
        The feature dictionary (labels and units).

    Returns
    -------
    list of str
        Plain text (escaped by the page); empty when no Mann–Whitney row has a p-value.
    """
    mw = association[(association["test"] == "mann_whitney")
                     & pd.to_numeric(association["pvalue"], errors="coerce").notna()]
    if mw.empty:
        return []
    # the confirmatory primary panel first, then the exploratory features
    mw = mw.assign(_explo=mw["family"] != "primary").sort_values(
        ["_explo", "qvalue_family", "pvalue", "feature"], kind="mergesort")
    hits = mw[mw["qvalue_family"] < Q_FINDING].head(MAX_FINDINGS)
    if hits.empty:
        top = mw.iloc[0]
        return [f"No product feature differs between responders and non-responders at "
                f"q < {Q_FINDING:g} within its family of hypotheses; the smallest is "
                f"{dictionary[str(top['feature'])].label} (q = {top['qvalue_family']:.2g}, "
                f"p = {top['pvalue']:.2g}). " + finding_sentence(top, dictionary=dictionary)]
    out = [finding_sentence(r, dictionary=dictionary) for _, r in hits.iterrows()]
    n_more = int((mw["qvalue_family"] < Q_FINDING).sum()) - len(hits)
    if n_more > 0:
        out.append(f"{n_more} more feature(s) have q < {Q_FINDING:g} within their family "
                   "(results/tables/association.tsv, column qvalue_family).")
    return out
