"""Scorecards of every infusion product of the cohort (rule ``scorecards``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..stats import labelled_patients
from ..tables import write_table
from .html import scorecards_html
from .score import build_reference, product_meta, score_cohort_products

logger = logging.getLogger(__name__)


@dataclass
class CohortScorecards:
    """The scorecards of the cohort's products.

    Attributes
    ----------
    reference
        ``reference_features.tsv`` (:func:`build_reference`).
    cards
        Sample -> scorecard, one per product, in the order of the samples.
    meta
        Per-product header info (:func:`product_meta`).
    """

    reference: pd.DataFrame
    cards: dict[str, pd.DataFrame]
    meta: pd.DataFrame

    def html(self) -> str:
        """The scorecards page (:func:`scorecards_html`)."""
        return scorecards_html(self.cards, meta=self.meta)

    def labels(self) -> dict[str, str]:
        """Heatmap row labels: ``sample (response)``."""
        return {s: f"{s} ({self.meta.loc[s, 'response']})" for s in self.meta.index}


def score_cohort(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    association: pd.DataFrame | None,
    samples: Sequence[str],
    primary_timepoint: str,
    responders: Sequence[str],
    exclude_responses: Sequence[str],
    source: str = "results/tables/sample_features.tsv",
    clinical_source: str = "clinical table",
) -> CohortScorecards:
    """Score every product of ``samples`` against the cohort's other patients.

    Returns
    -------
    CohortScorecards
        The reference table, one scorecard per sample and the page header info.
    """
    patients, _ = labelled_patients(
        features,
        clinical=clinical,
        primary_timepoint=primary_timepoint,
        responders=responders,
        excluded=exclude_responses,
        source=source,
        clinical_source=clinical_source,
    )
    reference = build_reference(patients)
    cards = score_cohort_products(
        features, reference=reference, association=association, samples=samples
    )
    meta = product_meta(features, patients=patients, samples=samples)
    return CohortScorecards(reference, cards, meta)


def cohort_scorecards(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    association: pd.DataFrame,
    cards: Sequence[str | os.PathLike],
    reference: str | os.PathLike,
    html: str | os.PathLike,
    heatmap: str | os.PathLike,
    primary_timepoint: str,
    responders: Sequence[str],
    exclude_responses: Sequence[str],
    source: str = "results/tables/sample_features.tsv",
    clinical_source: str = "clinical table",
) -> CohortScorecards:
    """Score the cohort's products and write the scorecard outputs (rule ``scorecards``).

    Parameters
    ----------
    features, clinical, association
        ``sample_features.tsv``, the clinical table and ``association.tsv``.
    cards
        Output paths ``<dir>/<sample>.tsv``, one per product: the products scored
        are the file names' samples.
    reference, html, heatmap
        Output paths of ``reference_features.tsv``, the HTML page and the heatmap PNG.
    primary_timepoint, responders
        Product timepoint and responder codes (config keys of the same names).
    exclude_responses
        Response codes left out of the reference groups.
    source, clinical_source
        File names for messages.

    Returns
    -------
    CohortScorecards
        What was written.
    """
    from ..pl import save_figure, scorecard_heatmap  # matplotlib: imported on use

    paths = {Path(path).name[: -len(".tsv")]: path for path in cards}
    result = score_cohort(
        features,
        clinical=clinical,
        association=association,
        samples=list(paths),
        primary_timepoint=primary_timepoint,
        responders=responders,
        exclude_responses=exclude_responses,
        source=source,
        clinical_source=clinical_source,
    )
    write_table(result.reference, reference, sort_by=["patient"])
    for sample, card in result.cards.items():
        write_table(card, paths[sample])
    Path(html).write_text(result.html())
    save_figure(scorecard_heatmap(result.cards, labels=result.labels()), heatmap, dpi=150)
    logger.info(
        "scored %d products against %d reference patients", len(result.cards), len(result.reference)
    )
    return result

