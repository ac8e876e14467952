"""The overall line of ``published_agreement.tsv`` for the report.

Kept apart from :mod:`.published_annotate` (which needs scanpy, harmonypy and scirpy) so
that the overview page, built in the report env, reads the table with pandas alone.
"""

from __future__ import annotations

import pandas as pd

#: The label of the overall row of each call.
ALL = "(all)"


def agreement_summary(table: pd.DataFrame) -> str:
    """One line for the report: each call's overall agreement and kappa."""
    overall = table[table["author_label"] == ALL]
    if overall.empty:
        return "no label of the map gives a call to compare"
    return "; ".join(
        f"{r.call}: {r.agreement:.2f} of {r.n_cells} cells agree (Cohen's kappa "
        f"{r.cohen_kappa:.2f}, adjusted Rand {r.adjusted_rand:.2f})"
        for r in overall.itertuples())
