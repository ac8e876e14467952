"""Registry of the association test families (the ``test`` column of ``association.tsv``).

One source of truth: :data:`FAMILIES` lists every family in report order, with the
``test`` labels it writes and the function that runs it. Benjamini–Hochberg
q-values are computed within each ``test`` label and multiple-testing family
(``primary`` panel or ``exploratory``) across features, and the rows of
``association.tsv`` are sorted by :data:`TESTS` order, family, p-value, feature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from .composition import CompositionTransform, compositional_tests
from .labels import composition_states
from .logistic import logistic_tests
from .response import univariate_tests


@dataclass(frozen=True)
class FamilyInputs:
    """What every family is run on: the labelled patients and the settings.

    Attributes
    ----------
    table
        Patient-level table of the labelled patients (one row per patient).
    responder
        Boolean per row of ``table``.
    features
        Testable feature columns.
    design
        Covariate design columns, one row per row of ``table`` (may have no column).
    min_patients_per_group, min_events_per_variable
        Logistic fits: complete cases needed per group; Firth threshold.
    composition_transform
        Transform of the state proportions.
    """

    table: pd.DataFrame
    responder: pd.Series
    features: list[str]
    design: pd.DataFrame
    min_patients_per_group: int
    min_events_per_variable: float
    composition_transform: CompositionTransform


@dataclass(frozen=True)
class Family:
    """One family of association tests.

    Attributes
    ----------
    name
        Family name (the ``item`` of a note when the family is skipped).
    tests
        The ``test`` labels its rows carry, in report order.
    run
        Returns the family's rows (:data:`~cartcohort.stats.ASSOCIATION_COLUMNS`,
        q-values not filled), or the reason why the family does not apply.
    """

    name: str
    tests: tuple[str, ...]
    run: Callable[[FamilyInputs], pd.DataFrame | str]


def _rank(inputs: FamilyInputs) -> pd.DataFrame:
    return univariate_tests(
        inputs.table,
        responder=inputs.responder,
        features=inputs.features,
    )


def _logistic(inputs: FamilyInputs) -> pd.DataFrame:
    return logistic_tests(
        inputs.table,
        responder=inputs.responder,
        features=inputs.features,
        design=inputs.design,
        min_per_group=inputs.min_patients_per_group,
        min_events_per_variable=inputs.min_events_per_variable,
    )


def _compositional(inputs: FamilyInputs) -> pd.DataFrame | str:
    lab = inputs.table
    states = composition_states(lab)
    if not (states and all(f"count_{s}" in lab.columns for s in states)):
        return "no state fractions: skipped"
    return compositional_tests(
        lab,
        responder=inputs.responder,
        states=states,
        design=inputs.design,
        transform=inputs.composition_transform,
    )


#: The test families, in report order.
FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("rank", ("mann_whitney", "auroc"), _rank),
        Family("logistic", ("logistic",), _logistic),
        Family("compositional", ("compositional",), _compositional),
    )
}
#: Every ``test`` label of ``association.tsv`` (except ``skipped``), in report order.
TESTS: tuple[str, ...] = tuple(t for family in FAMILIES.values() for t in family.tests)
#: The families run on the in vivo features (no state composition: those are product).
IN_VIVO_FAMILIES: tuple[str, ...] = ("rank", "logistic")
