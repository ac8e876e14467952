"""The one-page scorecard of a new product (issue #20): HTML (self-contained, figure
inline) and a PDF page with the same content.

The page shows the attributes of product fitness (:data:`FITNESS_FEATURES`, readable
names and units from ``resources/features.yaml``), each as a strip of the cohort's
responders and non-responders with the product marked (:func:`cartcohort.pl.scorecard.
fitness_strips`), its cohort percentile and the flag of the responders' leave-one-out
prediction interval (:mod:`.flags`, issue #26: primary-panel features only; the others
are shown with the interval, not flagged), a QC block and the statement that cohort-level
association is not a prediction for one patient.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import CartCohortError
from .catalogue import FeatureInfo
from .flags import OUTSIDE, WITHIN

#: The scorecard's attributes, in page order (ids of ``sample_features.tsv``).
FITNESS_FEATURES = ("car_positive_fraction", "log2_cd4_cd8_ratio", "memory_like_fraction",
                    "exhausted_fraction", "triple_pos_fraction", "rep_rarefied_gini_simpson",
                    "top_clone_fraction")

STATEMENT = ("Cohort-level association is not a prediction for one patient. The strips and "
             "flags place this product among the cohort's products; they do not predict "
             "this patient's response.")


def _flag_text(flag: str) -> str:
    if flag in OUTSIDE:
        return "FLAG: outside responders'\ninterval"
    if flag == WITHIN:
        return "within responders'\ninterval"
    return "exploratory:\nnot flagged"


def fitness_rows(features: pd.Series, *, card: pd.DataFrame,
                 catalogue: Mapping[str, FeatureInfo],
                 attributes: Sequence[str] = FITNESS_FEATURES) -> pd.DataFrame:
    """The scorecard's attribute rows.

    Parameters
    ----------
    features
        The product's row of per-sample features (with ``{id}_ci_low``/``_ci_high``
        where the feature has a CI).
    card
        The product's scorecard (:func:`.score.score_product`): ``feature``,
        ``cohort_percentile``, ``interval_low``, ``interval_high``, ``responder_min``,
        ``responder_max``, ``flag``.
    catalogue
        Readable names (:func:`.catalogue.read_catalogue`); every attribute needs one.
    attributes
        Feature ids, in order.

    Returns
    -------
    pandas.DataFrame
        ``feature``, ``label``, ``unit``, ``value``, ``ci_low``, ``ci_high``,
        ``cohort_percentile``, ``interval_low``, ``interval_high``, ``responder_min``,
        ``responder_max``, ``flag``, ``flag_text``, ``shown`` (value in its unit).
    """
    missing = [a for a in attributes if a not in catalogue]
    if missing:
        raise CartCohortError(
            f"the feature catalogue has no entry for {missing}. Fix: add them to "
            "resources/features.yaml (label, unit, family, description, better, reference)")
    by = card.set_index(card["feature"].astype(str))
    rows = []
    for a in attributes:
        info = catalogue[a]
        c = by.loc[a] if a in by.index else pd.Series(dtype=object)
        get = (lambda s, k: float(s[k]) if k in s and pd.notna(s[k]) else np.nan)
        value = get(features, a)
        rows.append({
            "feature": a, "label": info.label, "unit": info.unit, "value": value,
            "ci_low": get(features, f"{a}_ci_low"), "ci_high": get(features, f"{a}_ci_high"),
            **{k: get(c, k) for k in ("cohort_percentile", "interval_low", "interval_high",
                                      "responder_min", "responder_max")},
            "flag": str(c.get("flag", "not_in_reference")),
            "flag_text": _flag_text(str(c.get("flag", ""))),
            "shown": info.format(value),
        })
    out = pd.DataFrame(rows)
    ci = out["ci_low"].notna()
    out.loc[ci, "shown"] += [
        f" (CI {catalogue[f].format(lo)} to {catalogue[f].format(hi)})"
        for f, lo, hi in out.loc[ci, ["feature", "ci_low", "ci_high"]].itertuples(index=False)]
    return out


def _png(fig) -> str:
    """Base64 PNG of a figure (closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def product_page(sample: str, *, rows: pd.DataFrame, reference: pd.DataFrame,
                 qc: Sequence[tuple[str, str]], notes: Sequence[str] = ()) -> tuple[str, object]:
    """The scorecard as self-contained HTML and as a PDF page (matplotlib figure).

    Parameters
    ----------
    sample
        The product's id.
    rows
        :func:`fitness_rows`.
    reference
        ``reference_features.tsv`` of the reference.
    qc
        (name, value) pairs of the QC block.
    notes
        Lines shown under the QC block (e.g. a batch the reference lacks).

    Returns
    -------
    (str, matplotlib.figure.Figure)
        The HTML page and the PDF page's figure (A4 portrait).
    """
    from ..pl.scorecard import fitness_strips, page_figure

    units = dict(zip(rows["feature"], rows["unit"]))
    labels = dict(zip(rows["feature"], rows["label"]))
    strips = fitness_strips(rows, reference=reference, labels=labels, units=units,
                            title=sample)
    esc = html.escape
    table = "".join(
        f"<tr class='{'out' if r.flag in OUTSIDE else ''}'><th>{esc(r.label)}</th>"
        f"<td>{esc(r.shown)}</td><td>{_pct(r.cohort_percentile)}</td>"
        f"<td>{esc(_range(r))}</td><td>{esc(r.flag_text.replace(chr(10), ' '))}</td></tr>"
        for r in rows.itertuples())
    qc_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in qc)
    text = [f"QC of {sample}:"] + [f"  {k}: {v}" for k, v in qc] + list(notes) + ["", STATEMENT]
    attrs = [f"  {r.label}: {r.shown} (P{_pct(r.cohort_percentile)}, "
             + r.flag_text.replace("\n", " ") + ")" for r in rows.itertuples()]
    page = page_figure(strips, text_blocks=["Attributes:", *attrs, "", *text])
    body = (
        f"<h1>New product {esc(sample)}</h1><p class='stmt'><b>{esc(STATEMENT)}</b></p>"
        f"<img alt='fitness attributes of {esc(sample)}' style='max-width:100%' "
        f"src='data:image/png;base64,{_png(strips)}'>"
        "<table><tr><th>attribute</th><th>product</th><th>cohort percentile</th>"
        f"<th>responders' interval</th><th>flag</th></tr>{table}</table>"
        f"<h2>QC</h2><table class='qc'>{qc_rows}</table>"
        + "".join(f"<p>{esc(n)}</p>" for n in notes))
    style = ("<style>body{font-family:sans-serif;font-size:13px;margin:1em;max-width:900px}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:2px 6px;text-align:left}.out{background:#f8d7da}</style>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(sample)} "
            f"scorecard</title>{style}</head><body>{body}</body></html>"), page


def _pct(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.0f}"


def _range(r) -> str:
    if not (np.isfinite(r.interval_low) and np.isfinite(r.interval_high)):
        return "n/a"
    info = FeatureInfo(r.feature, r.label, r.unit, "", "", None, None)
    return f"{info.format(r.interval_low)} to {info.format(r.interval_high)}"
