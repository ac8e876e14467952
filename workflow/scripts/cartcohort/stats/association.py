"""Patient-level association of product features with clinical response (rule ``associate``).

:func:`run_association` tests every product feature against response with the
families of :data:`~cartcohort.stats.families.FAMILIES`, one value per patient;
:func:`associate` adds the longitudinal mixed models and the survival models and
returns every table of rule ``associate``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ._utils import ASSOCIATION_COLUMNS, notes_table, skipped_frame
from .composition import CompositionTransform
from .families import FAMILIES, TESTS, FamilyInputs
from .labels import encode_covariates, feature_columns, labelled_patients, testable_features
from .longitudinal import longitudinal_models
from .response import add_qvalues
from .survival import survival_models

logger = logging.getLogger(__name__)


@dataclass
class AssociationResult:
    """Outputs of :func:`run_association`.

    Attributes
    ----------
    association
        ``association.tsv``: one row per feature and test (a single ``skipped``
        row with the reason when the cohort does not allow the tests).
    notes
        Why patients, covariates, features or families were left out.
    patients
        Patient-level table of the primary timepoint with response labels.
    tested
        Features that were tested.
    skipped
        Whether the association was skipped as a whole.
    """

    association: pd.DataFrame
    notes: pd.DataFrame
    patients: pd.DataFrame
    tested: list[str] = field(default_factory=list)
    skipped: bool = False


def _skipped_table(n1: int, n0: int, note: str) -> pd.DataFrame:
    return skipped_frame(
        ASSOCIATION_COLUMNS,
        feature="(all)",
        test="skipped",
        n_responders=n1,
        n_nonresponders=n0,
        effect_type="NA",
        direction="NA",
        note=note,
    )


def _skipped(
    reason: str, *, n1: int, n0: int, patients: pd.DataFrame, notes: Sequence[pd.DataFrame]
) -> AssociationResult:
    """The result of an association skipped as a whole (reason logged and noted)."""
    logger.warning(reason)
    all_notes = pd.concat(
        [*notes, notes_table([("association", "(all)", reason)])], ignore_index=True
    )
    return AssociationResult(_skipped_table(n1, n0, reason), all_notes, patients, [], True)


def _labelled_groups(
    patients: pd.DataFrame, *, timepoint: str, responders: Sequence[str]
) -> tuple[pd.DataFrame, pd.Series]:
    """The patients with a response label and their responder flag (group sizes logged)."""
    lab = patients[patients["responder"].notna()].reset_index(drop=True)
    resp = lab["responder"].astype(bool)
    logger.info(
        "%d responders vs %d non-responders at %s (responders = %s)",
        int(resp.sum()),
        int((~resp).sum()),
        timepoint,
        list(responders),
    )
    return lab, resp


def _too_few_patients(
    n1: int, n0: int, timepoint: str, responders: Sequence[str], min_per_group: int
) -> str:
    return (
        f"skipped: {n1} responder(s) ({'/'.join(responders)}) and {n0} non-responder(s) "
        f"with a {timepoint} sample; at least {min_per_group} per group "
        "are needed (associate.min_patients_per_group)"
    )


def notes_from(table: pd.DataFrame, *, scope: str) -> pd.DataFrame:
    """Notes table rows for the skipped / not-fitted rows of a result table."""
    if table.empty or "note" not in table.columns:
        return notes_table([])
    note = table["note"].fillna("").astype(str)
    keep = (table["test"] == "skipped") | note.str.startswith(("not fitted", "fit failed"))
    sub = table[keep].drop_duplicates(subset=["feature", "note"])
    items = sub["feature"].astype(str)
    return notes_table([(scope, item, note) for item, note in zip(items, sub["note"], strict=True)])


def run_families(inputs: FamilyInputs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every family of :data:`FAMILIES`, add q-values and sort the rows.

    Returns
    -------
    table, notes
        ``table``: the rows of every family that applies, BH q-values within
        each test, sorted by test (:data:`TESTS` order), p-value and feature;
        ``notes``: one row (scope ``association``) per family that does not apply.
    """
    parts, skipped = [], []
    for family in FAMILIES.values():
        out = family.run(inputs)
        if isinstance(out, str):
            skipped.append(("association", family.name, out))
        else:
            parts.append(out)
    table = add_qvalues(pd.concat(parts, ignore_index=True))
    table["_family"] = table["test"].map({t: i for i, t in enumerate(TESTS)})
    table = table.sort_values(["_family", "pvalue", "feature"], kind="mergesort").drop(
        columns="_family"
    )
    return table.reset_index(drop=True), notes_table(skipped)


def run_association(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    primary_timepoint: str = "IP",
    responders: Sequence[str] = ("CR",),
    excluded: Sequence[str] = ("NE",),
    covariates: Sequence[str] = (),
    n_bootstrap: int = 2000,
    min_patients_per_group: int = 3,
    min_events_per_variable: float = 5.0,
    composition_transform: CompositionTransform = "logit",
    seed: int = 0,
    source: str = "results/tables/sample_features.tsv",
    clinical_source: str = "clinical table",
) -> AssociationResult:
    """Test every product feature against response, one observation per patient.

    Parameters
    ----------
    features
        Per-sample feature table.
    clinical
        Clinical table (``patient``, ``response``, covariates).
    primary_timepoint
        Timepoint whose samples are tested (the infusion product).
    responders, excluded
        Response codes counted as responders / left out.
    covariates
        Clinical columns adjusted for in the logistic and compositional models.
    n_bootstrap
        Bootstrap replicates for the rank-biserial / AUROC CIs.
    min_patients_per_group
        Fewer patients than this in either group: association is skipped
        (a ``skipped`` row with the reason), not an error.
    min_events_per_variable
        Threshold for switching the logistic fit to Firth's method.
    composition_transform
        ``logit`` or ``asin`` for the compositional test.
    seed
        Seed of the bootstraps (a per-feature stream is derived from it).
    source, clinical_source
        File names for messages.

    Returns
    -------
    AssociationResult
        The association table, the notes, the labelled patient table and the
        tested features.
    """
    patients, notes = labelled_patients(
        features, clinical=clinical, primary_timepoint=primary_timepoint, responders=responders,
        excluded=excluded, source=source, clinical_source=clinical_source,
    )
    lab, resp = _labelled_groups(patients, timepoint=primary_timepoint, responders=responders)
    n1, n0 = int(resp.sum()), int((~resp).sum())
    if min(n1, n0) < min_patients_per_group:
        reason = _too_few_patients(n1, n0, primary_timepoint, responders, min_patients_per_group)
        return _skipped(reason, n1=n1, n0=n0, patients=patients, notes=[notes])
    candidates = [f for f in feature_columns(lab) if not f.startswith("count_")]
    feats, fnotes = testable_features(
        lab, features=candidates, responder=resp, min_per_group=min_patients_per_group
    )
    if not feats:
        reason = (
            f"skipped: none of the {len(candidates)} feature(s) can be tested at "
            f"{primary_timepoint} (see association_notes.tsv)"
        )
        return _skipped(reason, n1=n1, n0=n0, patients=patients, notes=[notes, fnotes])
    design, cnotes = encode_covariates(
        clinical, covariates=covariates, patients=lab["patient"], source=clinical_source
    )
    table, skipped = run_families(
        FamilyInputs(lab, resp, feats, design.reset_index(drop=True), n_bootstrap, seed,
                     min_patients_per_group, min_events_per_variable, composition_transform)
    )
    notes = pd.concat([notes, fnotes, skipped, cnotes], ignore_index=True)
    return AssociationResult(table, notes, patients, feats, False)


@dataclass
class AssociateResult:
    """Outputs of :func:`associate`, one per table written by rule ``associate``.

    Attributes
    ----------
    association
        ``association.tsv`` (see :func:`run_association`).
    notes
        ``association_notes.tsv``: the notes of the association, then one per
        skipped or not-fitted longitudinal and survival model.
    longitudinal
        ``longitudinal.tsv`` (see :func:`~cartcohort.stats.longitudinal_models`).
    survival
        ``survival.tsv`` (see :func:`~cartcohort.stats.survival_models`).
    tested
        Features tested for association (also the ones modelled over time and survival).
    """

    association: pd.DataFrame
    notes: pd.DataFrame
    longitudinal: pd.DataFrame
    survival: pd.DataFrame
    tested: list[str] = field(default_factory=list)


def associate(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    primary_timepoint: str,
    responders: Sequence[str],
    exclude_responses: Sequence[str],
    covariates: Sequence[str],
    n_bootstrap: int,
    min_patients_per_group: int,
    min_events_per_variable: float,
    composition_transform: CompositionTransform,
    seed: int,
    blood_compartment: str,
    survival: Mapping[str, Any],
    source: str = "results/tables/sample_features.tsv",
    clinical_source: str = "clinical table",
) -> AssociateResult:
    """Association with response, longitudinal mixed models and survival models.

    Parameters
    ----------
    features
        Per-sample feature table (``sample_features.tsv``).
    clinical
        Clinical table (``patient``, ``response``, covariates, PFS columns).
    primary_timepoint, responders, covariates, n_bootstrap, min_patients_per_group
        As in :func:`run_association` (config keys of the same names).
    exclude_responses
        Response codes left out of the comparisons (``excluded`` of
        :func:`run_association`).
    min_events_per_variable, composition_transform, seed
        As in :func:`run_association`.
    blood_compartment
        ``compartment`` of the blood libraries (longitudinal and landmark models).
    survival
        ``associate.survival``: the endpoint keywords of
        :func:`~cartcohort.stats.survival_models`.
    source, clinical_source
        File names for messages.

    Returns
    -------
    AssociateResult
        The association, notes, longitudinal and survival tables. The longitudinal
        and survival models cover the features tested for association (every
        feature when the association was skipped).
    """
    result = run_association(
        features, clinical=clinical, primary_timepoint=primary_timepoint, responders=responders,
        excluded=exclude_responses, covariates=covariates, n_bootstrap=n_bootstrap,
        min_patients_per_group=min_patients_per_group,
        min_events_per_variable=min_events_per_variable,
        composition_transform=composition_transform, seed=seed, source=source,
        clinical_source=clinical_source,
    )
    longitudinal = longitudinal_models(
        features, clinical=clinical, features_to_test=result.tested or None,
        primary_features=(), compartment=blood_compartment,
        primary_timepoint=primary_timepoint, responders=responders, excluded=exclude_responses,
        min_patients_per_group=min_patients_per_group, clinical_source=clinical_source,
    )
    survival_table = survival_models(
        features, clinical=clinical, features_to_test=result.tested or None,
        primary_timepoint=primary_timepoint, blood_compartment=blood_compartment,
        source=source, clinical_source=clinical_source, **survival,
    )
    notes = pd.concat([result.notes, notes_from(longitudinal, scope="longitudinal"),
                       notes_from(survival_table, scope="survival")], ignore_index=True)
    mw = result.association[result.association["test"] == "mann_whitney"]
    logger.info(
        "%d features tested; %d with Mann-Whitney q < 0.05",
        len(result.tested),
        int((mw["qvalue"] < 0.05).sum()),
    )
    return AssociateResult(result.association, notes, longitudinal, survival_table,
                           result.tested)
