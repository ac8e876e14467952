"""Product scorecards: each infusion product's features placed in the cohort.

A product's value of every product feature is given as a kernel-smoothed percentile
among the cohort's patients (:func:`~.score.smoothed_percentile`; leave-one-out for
cohort products); the features of the
primary panel are flagged when the value lies outside the responders' leave-one-out
prediction interval (:mod:`~cartcohort.scorecards.flags`, :func:`score_product`), and
the rule's false-flag rate on the responders' own products is measured
(:func:`flag_calibration`). :func:`scorecards_html` renders the cards as one page. The
rule step is :func:`cohort_scorecards`; new products are scored against an existing
cohort's reference by ``workflow/scripts/score_new_product.py``.
"""

from .cohort import CohortScorecards, cohort_scorecards, score_cohort
from .flags import (
    CALIBRATION_COLUMNS,
    EXPLORATORY,
    OUTSIDE,
    WITHIN,
    mean_flag_rate,
    prediction_interval,
)
from .html import scorecards_html
from .score import (
    SCORECARD_COLUMNS,
    build_reference,
    card_features,
    flag_calibration,
    product_meta,
    score_cohort_products,
    score_product,
    smoothed_percentile,
)

__all__ = [
    "CALIBRATION_COLUMNS",
    "EXPLORATORY",
    "OUTSIDE",
    "SCORECARD_COLUMNS",
    "WITHIN",
    "CohortScorecards",
    "build_reference",
    "card_features",
    "cohort_scorecards",
    "flag_calibration",
    "mean_flag_rate",
    "prediction_interval",
    "product_meta",
    "score_cohort",
    "score_cohort_products",
    "score_product",
    "smoothed_percentile",
    "scorecards_html",
]
