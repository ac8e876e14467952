"""Self-contained HTML page of product scorecards."""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .flags import EVALUATED, OUTSIDE, WITHIN, mean_flag_rate

_STYLE = (
    "<style>body{font-family:sans-serif;font-size:13px;margin:1em}"
    "table{border-collapse:collapse;margin-bottom:2em}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}"
    ".out{background:#f8d7da}.in{background:#d4edda}.sig{font-weight:bold}"
    ".explo{color:#666}"
    "</style></head><body>"
)
#: Columns of a scorecard shown on the page, in order.
_COLUMNS = (
    "feature",
    "value",
    "cohort_percentile",
    "interval_low",
    "interval_high",
    "responder_min",
    "responder_median",
    "responder_max",
    "nonresponder_median",
    "direction",
    "qvalue",
    "flag",
)


def _overview(cards: Mapping[str, pd.DataFrame], qvalue_threshold: float) -> list[str]:
    """The overview table: flagged primary features and associated features."""
    esc = html.escape
    parts = [
        "<h2>Overview</h2><table><tr><th>product</th>"
        "<th>primary features flagged / compared</th><th>associated features</th></tr>"
    ]
    for sample, card in cards.items():
        sig = card[card["qvalue"] < qvalue_threshold]
        n_out = int(card["flag"].isin(list(OUTSIDE)).sum())
        n_cmp = int(card["flag"].isin(list(EVALUATED)).sum())
        parts.append(
            f"<tr><td><a href='#{esc(sample)}'>{esc(sample)}</a></td>"
            f"<td>{n_out} / {n_cmp}</td><td>{len(sig)}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _card_row(r: pd.Series, qvalue_threshold: float) -> str:
    """One feature row of a product's table (class: outside/inside the interval,
    exploratory, associated)."""
    cls = "out" if r["flag"] in OUTSIDE else "in" if r["flag"] == WITHIN else ""
    cls = cls or ("" if bool(r["primary"]) else "explo")
    sig = " sig" if r["qvalue"] < qvalue_threshold else ""
    cells = []
    for c in _COLUMNS:
        if c == "feature" and "label" in r:  # readable name, the id on hover (issue #23)
            cells.append(f"<td title='{html.escape(str(r['feature']))}'>"
                         f"{html.escape(str(r['label']))}</td>")
            continue
        v = r[c]
        if isinstance(v, float):
            v = "NA" if not np.isfinite(v) else f"{v:.4g}"
        cells.append(f"<td>{html.escape(str(v))}</td>")
    return f"<tr class='{cls}{sig}'>" + "".join(cells) + "</tr>"


def _card_section(
    sample: str, card: pd.DataFrame, *, meta: pd.DataFrame | None, qvalue_threshold: float
) -> list[str]:
    """The section of one product: header (with its meta) and table, the primary panel
    first, then the exploratory features by q-value."""
    esc = html.escape
    header = esc(sample)
    if meta is not None and sample in meta.index:
        info = ", ".join(f"{esc(str(k))}: {esc(str(v))}" for k, v in meta.loc[sample].items())
        header += f" <small>({info})</small>"
    parts = [f"<h2 id='{esc(sample)}'>{header}</h2><table><tr>"]
    parts.extend(f"<th>{esc(c)}</th>" for c in _COLUMNS)
    parts.append("</tr>")
    card = card.assign(
        _p=~card["primary"].astype(bool),
        _q=card["qvalue"].fillna(np.inf).where(~card["primary"].astype(bool), 0.0),
    ).sort_values(["_p", "_q"], kind="mergesort")
    parts.extend(_card_row(r, qvalue_threshold) for _, r in card.iterrows())
    parts.append("</table>")
    return parts


def _rule_text(calibration: pd.DataFrame, panel_label: str, qvalue_threshold: float) -> str:
    """The page's opening paragraph: the flag rule and its measured calibration."""
    cov = float(calibration["nominal_coverage"].iloc[0])
    rate = mean_flag_rate(calibration)
    n_resp = int((calibration["row"] == "responder").sum())
    shown = "NA" if not np.isfinite(rate) else f"{100 * rate:.1f}%"
    return (
        "<p>Each infusion product's features (product scope only) placed in the cohort: "
        "percentile among the cohort's patients (leave-one-out for cohort products). A "
        "feature of the "
        f"primary panel ({html.escape(panel_label)}) is <b>flagged</b> when the product lies "
        f"outside the responders' {100 * cov:g}% prediction interval for one new "
        "observation (mean &plusmn; t<sub>n-1</sub> &middot; SD &middot; &radic;(1 + 1/n), "
        "computed without the product's own patient): red outside, green inside. Other "
        "features are shown in grey and never flagged. <b>Calibration</b>: leave-one-out "
        f"over the {n_resp} responders, a responder's own product is flagged on "
        f"<b>{shown}</b> of the primary features on average (nominal "
        f"{100 * (1 - cov):g}%; <code>scorecard_calibration.tsv</code>). Bold features have "
        f"a Mann&ndash;Whitney q-value &lt; {qvalue_threshold:g} for response. Association "
        "is cohort-level evidence, not a prediction for one product.</p>"
    )


def scorecards_html(
    cards: Mapping[str, pd.DataFrame],
    *,
    calibration: pd.DataFrame,
    panel_label: str,
    meta: pd.DataFrame | None = None,
    qvalue_threshold: float = 0.05,
    title: str = "Product scorecards",
) -> str:
    """Self-contained HTML page with one table per product.

    Rows: the primary panel first, then the exploratory features by association
    q-value; primary features outside the responders' interval are highlighted.

    Parameters
    ----------
    cards
        Sample -> table from :func:`~cartcohort.scorecards.score_product`.
    calibration
        ``scorecard_calibration.tsv`` (:func:`~cartcohort.scorecards.flag_calibration`):
        the nominal coverage and the measured mean flag rate are stated on the page.
    panel_label
        The primary panel's name and version (:attr:`cartcohort.stats.PrimaryPanel.label`).
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
        The page: the flag rule and its calibration, an overview table, then one
        section per product.
    """
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        _STYLE,
        f"<h1>{esc(title)}</h1>",
        _rule_text(calibration, panel_label, qvalue_threshold),
    ]
    parts += _overview(cards, qvalue_threshold)
    for sample, card in cards.items():
        parts += _card_section(sample, card, meta=meta, qvalue_threshold=qvalue_threshold)
    parts.append("</body></html>")
    return "\n".join(parts)
