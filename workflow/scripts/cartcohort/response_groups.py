"""Response grouping as a paper defines it: a per-patient override column of the clinical
table (config ``response_override``) whose values replace the ``response`` code.

A light module (pandas only): the parse-time checks (:mod:`cartcohort.sheets`) and rule
``response_groups`` both use it, so the groups of every step are the same.
"""

from __future__ import annotations

import pandas as pd

#: An override value that leaves the response code as it is (as an empty cell: the tables
#: read ``NA`` as missing); leave a patient out with a code of associate.exclude_responses.
NO_OVERRIDE = "NA"
#: Column that keeps the clinical table's own response code of an overridden patient.
RECORDED_COLUMN = "response_recorded"


def apply_response_override(clinical: pd.DataFrame, *, column: str) -> pd.DataFrame:
    """The clinical table with ``response`` replaced by the override where it has a value.

    Parameters
    ----------
    clinical
        Clinical table with ``patient`` (a column or the index) and ``response``; the
        override values are response codes of the config, or empty / ``NA`` (no
        override), checked when the sheets are read (:func:`cartcohort.sheets.prepare_inputs`).
    column
        The override column (config ``response_override``); ``""``: the table as given.

    Returns
    -------
    pandas.DataFrame
        Same rows and index; ``response`` overridden where ``column`` has a code, the
        table's own code kept in :data:`RECORDED_COLUMN` (``patient`` and ``response``
        first when ``patient`` is a column).
    """
    out = clinical.copy()
    if not column:
        return out
    override = out[column].astype("string").str.strip()
    given = override.notna() & ~override.isin(["", NO_OVERRIDE])
    out[RECORDED_COLUMN] = out["response"]
    out["response"] = out["response"].astype("string").where(~given, override)
    if "patient" in out.columns:
        lead = ["patient", "response"]
        out = out[lead + [c for c in out.columns if c not in lead]]
    return out
