"""Product scorecards: each infusion product's features placed in the cohort.

A product's value of every feature is given as a mid-rank percentile among the
cohort's patients (leave-one-out for cohort products) and flagged against the
range seen in responders (:func:`score_product`); :func:`scorecards_html` renders
the cards as one page. The rule step is :func:`cohort_scorecards`; new products
are scored against an existing cohort's reference by
``workflow/scripts/score_new_product.py``.
"""

from .cohort import CohortScorecards, cohort_scorecards, score_cohort
from .html import scorecards_html
from .score import (
    SCORECARD_COLUMNS,
    build_reference,
    product_meta,
    score_cohort_products,
    score_product,
)

__all__ = [
    "SCORECARD_COLUMNS",
    "CohortScorecards",
    "build_reference",
    "cohort_scorecards",
    "product_meta",
    "score_cohort",
    "score_cohort_products",
    "score_product",
    "scorecards_html",
]
