"""Self-contained HTML page of product scorecards."""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
import pandas as pd

_STYLE = (
    "<style>body{font-family:sans-serif;font-size:13px;margin:1em}"
    "table{border-collapse:collapse;margin-bottom:2em}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}"
    ".out{background:#f8d7da}.in{background:#d4edda}.sig{font-weight:bold}"
    "</style></head><body>"
)
#: Columns of a scorecard shown on the page, in order.
_COLUMNS = (
    "feature",
    "value",
    "cohort_percentile",
    "responder_min",
    "responder_median",
    "responder_max",
    "nonresponder_median",
    "direction",
    "qvalue",
    "flag",
)
_OUTSIDE = ("below_responder_range", "above_responder_range")


def _overview(cards: Mapping[str, pd.DataFrame], qvalue_threshold: float) -> list[str]:
    """The overview table: associated features and those outside the responder range."""
    esc = html.escape
    parts = [
        "<h2>Overview</h2><table><tr><th>product</th><th>associated features</th>"
        "<th>outside responder range</th></tr>"
    ]
    for sample, card in cards.items():
        sig = card[card["qvalue"] < qvalue_threshold]
        n_out = int(sig["flag"].isin(list(_OUTSIDE)).sum())
        parts.append(
            f"<tr><td><a href='#{esc(sample)}'>{esc(sample)}</a></td><td>{len(sig)}</td>"
            f"<td>{n_out}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _card_row(r: pd.Series, qvalue_threshold: float) -> str:
    """One feature row of a product's table (class: outside/inside the range, associated)."""
    cls = (
        "out"
        if r["flag"] in _OUTSIDE
        else "in" if r["flag"] == "within_responder_range" else ""
    )
    sig = " sig" if r["qvalue"] < qvalue_threshold else ""
    cells = []
    for c in _COLUMNS:
        v = r[c]
        if isinstance(v, float):
            v = "NA" if not np.isfinite(v) else f"{v:.4g}"
        cells.append(f"<td>{html.escape(str(v))}</td>")
    return f"<tr class='{cls}{sig}'>" + "".join(cells) + "</tr>"


def _card_section(
    sample: str, card: pd.DataFrame, *, meta: pd.DataFrame | None, qvalue_threshold: float
) -> list[str]:
    """The section of one product: header (with its meta) and table, by q-value."""
    esc = html.escape
    header = esc(sample)
    if meta is not None and sample in meta.index:
        info = ", ".join(f"{esc(str(k))}: {esc(str(v))}" for k, v in meta.loc[sample].items())
        header += f" <small>({info})</small>"
    parts = [f"<h2 id='{esc(sample)}'>{header}</h2><table><tr>"]
    parts.extend(f"<th>{esc(c)}</th>" for c in _COLUMNS)
    parts.append("</tr>")
    card = card.assign(_q=card["qvalue"].fillna(np.inf)).sort_values(
        ["_q", "feature"], kind="mergesort"
    )
    parts.extend(_card_row(r, qvalue_threshold) for _, r in card.iterrows())
    parts.append("</table>")
    return parts


def scorecards_html(
    cards: Mapping[str, pd.DataFrame],
    *,
    meta: pd.DataFrame | None = None,
    qvalue_threshold: float = 0.05,
    title: str = "Product scorecards",
) -> str:
    """Self-contained HTML page with one table per product.

    Rows are ordered by association q-value (features associated with
    response first); values outside the responders' range are highlighted.

    Parameters
    ----------
    cards
        Sample -> table from :func:`~cartcohort.scorecards.score_product`.
    meta
        Optional per-sample info (index sample; e.g. patient, response) shown
        in each section header.
    qvalue_threshold
        Features with a Mann–Whitney q-value below this are marked.
    title
        Page title and heading.

    Returns
    -------
    str
        The page: an overview table, then one section per product.
    """
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        _STYLE,
        f"<h1>{esc(title)}</h1>",
        "<p>Each infusion product's features placed in the cohort: percentile among the "
        "cohort's patients (leave-one-out for cohort products) and whether the value lies "
        "outside the range seen in responders (red) or inside it (green). Bold features have "
        f"a Mann&ndash;Whitney q-value &lt; {qvalue_threshold:g} for response. Association "
        "is cohort-level evidence, not a prediction for one product.</p>",
    ]
    parts += _overview(cards, qvalue_threshold)
    for sample, card in cards.items():
        parts += _card_section(sample, card, meta=meta, qvalue_threshold=qvalue_threshold)
    parts.append("</body></html>")
    return "\n".join(parts)
