"""Scorecards of every infusion product of the cohort (rule ``scorecards``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..dictionary import FeatureDictionary, label_table
from ..stats import PrimaryPanel, labelled_patients
from ..tables import write_table
from .html import scorecards_html
from .score import build_reference, flag_calibration, product_meta, score_cohort_products

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
    calibration
        ``scorecard_calibration.tsv`` (:func:`flag_calibration`).
    coverage
        Nominal coverage of the responders' interval.
    panel
        The primary panel whose features are flagged.
    """

    reference: pd.DataFrame
    cards: dict[str, pd.DataFrame]
    meta: pd.DataFrame
    calibration: pd.DataFrame
    coverage: float
    panel: PrimaryPanel

    def html(self) -> str:
        """The scorecards page (:func:`scorecards_html`)."""
        return scorecards_html(self.cards, meta=self.meta, calibration=self.calibration,
                               panel_label=self.panel.label)

    def labels(self) -> dict[str, str]:
        """Heatmap row labels: ``sample (response)``."""
        return {s: f"{s} ({self.meta.loc[s, 'response']})" for s in self.meta.index}


def score_cohort(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    association: pd.DataFrame | None,
    samples: Sequence[str],
    panel: PrimaryPanel,
    flag_coverage: float,
    primary_timepoint: str,
    responders: Sequence[str],
    exclude_responses: Sequence[str],
    source: str = "results/tables/sample_features.tsv",
    clinical_source: str = "clinical table",
) -> CohortScorecards:
    """Score every product of ``samples`` against the cohort's other patients.

    ``panel`` and ``flag_coverage``: the flagged features and the interval's nominal
    coverage (:func:`~cartcohort.scorecards.score_product`); the other arguments as
    :func:`cohort_scorecards`.

    Returns
    -------
    CohortScorecards
        The reference table, one scorecard per sample, the page header info and the
        leave-one-out calibration of the flags over the responders.
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
    primary = panel.names
    cards = score_cohort_products(features, reference=reference, association=association,
                                  samples=samples, primary=primary, coverage=flag_coverage)
    meta = product_meta(features, patients=patients, samples=samples)
    calibration = flag_calibration(reference, primary=primary, coverage=flag_coverage)
    return CohortScorecards(reference, cards, meta, calibration, float(flag_coverage), panel)


def cohort_scorecards(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    association: pd.DataFrame,
    panel: PrimaryPanel,
    dictionary: FeatureDictionary,
    cards: Sequence[str | os.PathLike],
    reference: str | os.PathLike,
    calibration: str | os.PathLike,
    html: str | os.PathLike,
    heatmap: str | os.PathLike,
    flag_coverage: float,
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
    panel
        The primary panel (``associate.primary_panel``,
        :func:`cartcohort.stats.load_primary_panel`): its features alone are flagged.
    dictionary
        The feature dictionary (``scorecards.features``): ``label`` and ``feature_family``
        on each card; the page shows the labels.
    cards
        Output paths ``<dir>/<sample>.tsv``, one per product: the products scored
        are the file names' samples.
    reference, calibration, html, heatmap
        Output paths of ``reference_features.tsv``, ``scorecard_calibration.tsv``,
        the HTML page and the heatmap PNG.
    flag_coverage
        Nominal coverage of the responders' leave-one-out prediction interval
        (``scorecards.flag_coverage``; :mod:`cartcohort.scorecards.flags`).
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
        clinical=clinical, association=association, samples=list(paths), panel=panel,
        flag_coverage=flag_coverage, primary_timepoint=primary_timepoint,
        responders=responders, exclude_responses=exclude_responses, source=source,
        clinical_source=clinical_source,
    )
    result.cards = {s: label_table(c, dictionary, what=f"scorecard of {s}")
                    for s, c in result.cards.items()}
    write_table(result.reference, reference, sort_by=["patient"])
    write_table(result.calibration, calibration)
    for sample, card in result.cards.items():
        write_table(card, paths[sample])
    Path(html).write_text(result.html())
    save_figure(scorecard_heatmap(result.cards, labels=result.labels(),
                                  coverage=result.coverage), heatmap, dpi=150)
    logger.info(
        "scored %d products against %d reference patients", len(result.cards), len(result.reference)
    )
    return result

