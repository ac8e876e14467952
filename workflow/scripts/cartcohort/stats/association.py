"""Patient-level association of product features with clinical response (rule ``associate``).

:func:`run_association` tests every feature against response with the families of
:data:`~cartcohort.stats.families.FAMILIES`, one value per patient, scope by scope
(:mod:`~cartcohort.stats.scopes`: product features with a primary-panel and an
exploratory BH family; in vivo features apart, as outcome correlates), after the twin
collapse (:mod:`~cartcohort.stats.twins`);
:func:`associate` adds the longitudinal mixed models and the survival models and
returns every table of rule ``associate``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..dictionary import FeatureDictionary
from ._utils import ASSOCIATION_COLUMNS, notes_table, skipped_frame
from .composition import CompositionTransform
from .families import FAMILIES, IN_VIVO_FAMILIES, FamilyInputs
from .labels import encode_covariates, feature_columns, labelled_patients, testable_features
from .longitudinal import longitudinal_models
from .panel import PrimaryPanel
from .readable import readable_tables
from .replicates import LIBRARY_COLUMNS, UNITS, library_association
from .scopes import (
    finish_table,
    label_rows,
    panel_gap_rows,
    panel_label,
    post_infusion_features,
    split_scopes,
)
from .survival import survival_models
from .twins import Twins, collapse_twins

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
        Product features that were tested (twin representatives).
    skipped
        Whether the association was skipped as a whole.
    in_vivo
        ``in_vivo_correlates.tsv``: the in vivo features, same columns, scope
        ``in_vivo`` (outcome correlates, not predictors).
    twins
        The twin collapse of the product features.
    """

    association: pd.DataFrame
    notes: pd.DataFrame
    patients: pd.DataFrame
    tested: list[str] = field(default_factory=list)
    skipped: bool = False
    in_vivo: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=list(ASSOCIATION_COLUMNS)))
    twins: Twins = field(default_factory=lambda: Twins([]))


def _skipped_table(
    n1: int, n0: int, note: str, *, scope: str, panel: PrimaryPanel | None
) -> pd.DataFrame:
    return skipped_frame(
        ASSOCIATION_COLUMNS,
        feature="(all)",
        test="skipped",
        n_responders=n1,
        n_nonresponders=n0,
        effect_type="NA",
        direction="NA",
        scope=scope,
        family="exploratory" if scope == "in_vivo" else "primary",
        panel_version=panel_label(panel),
        twins="",
        note=note,
    )


def _skipped(
    reason: str,
    *,
    n1: int,
    n0: int,
    patients: pd.DataFrame,
    notes: Sequence[pd.DataFrame],
    panel: PrimaryPanel | None,
) -> AssociationResult:
    """The result of an association skipped as a whole (reason logged and noted)."""
    logger.warning(reason)
    all_notes = pd.concat(
        [*notes, notes_table([("association", "(all)", reason)])], ignore_index=True
    )
    return AssociationResult(
        _skipped_table(n1, n0, reason, scope="product", panel=panel), all_notes, patients, [],
        True, _skipped_table(n1, n0, reason, scope="in_vivo", panel=None),
    )


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


def run_families(
    inputs: FamilyInputs, *, families: Sequence[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the families of :data:`FAMILIES` (all, or those named in ``families``).

    Returns
    -------
    table, notes
        ``table``: the rows of every family that applies (q-values not yet filled,
        see :func:`~cartcohort.stats.scopes.finish_table`); ``notes``: one row
        (scope ``association``) per family that does not apply.
    """
    parts, skipped = [], []
    for family in FAMILIES.values():
        if families is not None and family.name not in families:
            continue
        out = family.run(inputs)
        if isinstance(out, str):
            skipped.append(("association", family.name, out))
        else:
            parts.append(out)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=list(ASSOCIATION_COLUMNS))
    return table, notes_table(skipped)


@dataclass(frozen=True)
class _Settings:
    """What every scope is tested with (see :func:`run_association`)."""

    design: pd.DataFrame
    panel: PrimaryPanel | None
    collapse_rho: float
    min_patients_per_group: int
    min_events_per_variable: float
    composition_transform: CompositionTransform


def _test_scope(
    lab: pd.DataFrame, resp: pd.Series, candidates: list[str], *, scope: str, cfg: _Settings
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], Twins]:
    """Test one scope: testable features -> twin collapse -> families -> labelled, BH'd rows.

    Returns
    -------
    table, notes, tested, twins
    """
    n1, n0 = int(resp.sum()), int((~resp).sum())
    panel = cfg.panel if scope == "product" else None
    feats, fnotes = testable_features(
        lab, features=candidates, responder=resp, min_per_group=cfg.min_patients_per_group
    )
    twins = collapse_twins(lab, features=feats, collapse_rho=cfg.collapse_rho,
                           panel=panel.names if panel is not None else ())
    tested = twins.representatives
    if tested:
        table, skipped = run_families(
            FamilyInputs(lab, resp, tested, cfg.design, cfg.min_patients_per_group,
                         cfg.min_events_per_variable, cfg.composition_transform),
            families=None if scope == "product" else IN_VIVO_FAMILIES,
        )
        table = label_rows(table, scope=scope, panel=cfg.panel, twins=twins)
    else:
        table, skipped = pd.DataFrame(columns=list(ASSOCIATION_COLUMNS)), notes_table([])
        reason = f"skipped: no {scope} feature can be tested (see association_notes.tsv)"
        skipped = notes_table([("association", f"({scope})", reason)])
        if scope == "in_vivo":
            table = _skipped_table(n1, n0, reason, scope=scope, panel=None)
    notes = pd.concat([fnotes, twins.notes, skipped], ignore_index=True)
    gaps = panel_gap_rows(panel, columns=list(lab.columns), tested=tested, twins=twins,
                          notes=notes, n_responders=n1, n_nonresponders=n0)
    table = finish_table(table)
    if len(gaps):
        table = pd.concat([table, gaps], ignore_index=True)
        notes = pd.concat([notes, notes_table([("primary_panel", r.feature, r.note)
                                               for r in gaps.itertuples()])], ignore_index=True)
    return table[list(ASSOCIATION_COLUMNS)], notes, tested, twins


def _test_in_vivo(
    features: pd.DataFrame, lab: pd.DataFrame, resp: pd.Series, in_vivo: list[str], *,
    cfg: _Settings, primary_timepoint: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The in vivo scope: product-row in vivo columns plus every post-infusion feature."""
    post, tnotes = post_infusion_features(
        features, patients=lab["patient"], responder=resp,
        primary_timepoint=primary_timepoint, min_per_group=cfg.min_patients_per_group)
    vivo, vnotes, _, _ = _test_scope(pd.concat([lab, post], axis=1), resp,
                                     in_vivo + list(post.columns), scope="in_vivo", cfg=cfg)
    return vivo, pd.concat([tnotes, vnotes], ignore_index=True)


def run_association(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    primary_timepoint: str = "IP",
    responders: Sequence[str] = ("CR",),
    excluded: Sequence[str] = ("NE",),
    covariates: Sequence[str] = (),
    panel: PrimaryPanel | None = None,
    collapse_rho: float = 0.9,
    min_patients_per_group: int = 3,
    min_events_per_variable: float = 5.0,
    composition_transform: CompositionTransform = "logit",
    source: str = "results/tables/sample_features.tsv",
    clinical_source: str = "clinical table",
) -> AssociationResult:
    """Test every feature against response, one observation per patient, scope by scope.

    Product features go to the association table, in vivo features (measured after
    infusion, :mod:`~cartcohort.stats.scopes`) to the outcome-correlate table; each
    scope has its own twin collapse and BH families.

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
    panel
        The pre-specified primary panel (its features are the ``primary`` BH family);
        ``None``: every feature is ``exploratory`` (``panel_version`` ``none``).
    collapse_rho
        Features with |Spearman rho| across patients above it are twins
        (:func:`~cartcohort.stats.twins.collapse_twins`); one per cluster is tested.
    min_patients_per_group
        Fewer patients than this in either group: association is skipped
        (a ``skipped`` row with the reason), not an error.
    min_events_per_variable
        Fewer patients of the smaller group per parameter: Firth's logistic fit.
    composition_transform
        ``logit`` or ``asin`` for the compositional test.
    source, clinical_source
        File names for messages.

    Returns
    -------
    AssociationResult
        Association and in vivo tables, notes, patients, tested features, twins.
    """
    patients, notes = labelled_patients(
        features, clinical=clinical, primary_timepoint=primary_timepoint, responders=responders,
        excluded=excluded, source=source, clinical_source=clinical_source,
    )
    lab, resp = _labelled_groups(patients, timepoint=primary_timepoint, responders=responders)
    n1, n0 = int(resp.sum()), int((~resp).sum())
    if min(n1, n0) < min_patients_per_group:
        reason = _too_few_patients(n1, n0, primary_timepoint, responders, min_patients_per_group)
        return _skipped(reason, n1=n1, n0=n0, patients=patients, notes=[notes], panel=panel)
    product, in_vivo = split_scopes([f for f in feature_columns(lab)
                                     if not f.startswith("count_")])
    design, cnotes = encode_covariates(
        clinical, covariates=covariates, patients=lab["patient"], source=clinical_source
    )
    cfg = _Settings(design.reset_index(drop=True), panel, collapse_rho, min_patients_per_group,
                    min_events_per_variable, composition_transform)
    table, pnotes, tested, twins = _test_scope(lab, resp, product, scope="product", cfg=cfg)
    vivo, vnotes = _test_in_vivo(features, lab, resp, in_vivo, cfg=cfg,
                                 primary_timepoint=primary_timepoint)
    notes = pd.concat([notes, pnotes, vnotes, cnotes], ignore_index=True)
    if not tested:
        reason = (f"skipped: none of the {len(product)} product feature(s) can be tested at "
                  f"{primary_timepoint} (see association_notes.tsv)")
        return _skipped(reason, n1=n1, n0=n0, patients=patients, notes=[notes], panel=panel)
    return AssociationResult(table, notes, patients, tested, False, vivo, twins)


@dataclass
class AssociateResult:
    """Outputs of :func:`associate`, one per table written by rule ``associate``.

    Attributes
    ----------
    association
        ``association.tsv``: product features only (see :func:`run_association`).
    notes
        ``association_notes.tsv``: the notes of the association, then one per
        skipped or not-fitted longitudinal and survival model.
    longitudinal
        ``longitudinal.tsv`` (see :func:`~cartcohort.stats.longitudinal_models`).
    survival
        ``survival.tsv`` (see :func:`~cartcohort.stats.survival_models`).
    tested
        Product features tested for association (also the ones modelled over time and
        survival).
    in_vivo
        ``in_vivo_correlates.tsv``: in vivo features, outcome correlates, not predictors.
    libraries
        ``association_libraries.tsv``: with ``unit='library'``, the test with libraries
        as replicates (:func:`~cartcohort.stats.replicates.library_association`); no
        rows with ``unit='patient'``.
    """

    association: pd.DataFrame
    notes: pd.DataFrame
    longitudinal: pd.DataFrame
    survival: pd.DataFrame
    tested: list[str] = field(default_factory=list)
    in_vivo: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=list(ASSOCIATION_COLUMNS)))
    libraries: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=list(LIBRARY_COLUMNS)))


def associate(
    features: pd.DataFrame,
    *,
    clinical: pd.DataFrame,
    primary_panel: PrimaryPanel,
    dictionary: FeatureDictionary,
    primary_timepoint: str,
    responders: Sequence[str],
    exclude_responses: Sequence[str],
    covariates: Sequence[str],
    collapse_rho: float,
    min_patients_per_group: int,
    min_events_per_variable: float,
    composition_transform: CompositionTransform,
    blood_compartment: str,
    survival: Mapping[str, Any],
    unit: str = "patient",
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
    primary_panel
        The pre-specified primary panel (:func:`~cartcohort.stats.load_primary_panel`
        of ``associate.primary_panel``).
    dictionary
        The feature dictionary (``scorecards.features``): labels of every table and the
        family q-values (:func:`~cartcohort.stats.readable.readable_tables`).
    primary_timepoint, responders, covariates, collapse_rho, min_patients_per_group
        As in :func:`run_association` (config keys of the same names), as are
        ``min_events_per_variable`` and ``composition_transform``.
    exclude_responses
        Response codes left out (``excluded`` of :func:`run_association`).
    blood_compartment
        ``compartment`` of the blood libraries (longitudinal and landmark models).
    survival
        ``associate.survival``: keywords of :func:`~cartcohort.stats.survival_models`.
    unit
        ``patient``, or ``library``: also libraries as replicates (``libraries``).
    source, clinical_source
        File names for messages.

    Returns
    -------
    AssociateResult
        Every table, labelled; the longitudinal and survival models cover the product
        features tested (every feature when the association was skipped).
    """
    result = run_association(
        features, clinical=clinical, primary_timepoint=primary_timepoint, responders=responders,
        excluded=exclude_responses, covariates=covariates, panel=primary_panel,
        collapse_rho=collapse_rho, min_patients_per_group=min_patients_per_group,
        min_events_per_variable=min_events_per_variable, source=source,
        composition_transform=composition_transform, clinical_source=clinical_source)
    longitudinal = longitudinal_models(
        features, clinical=clinical, features_to_test=result.tested or None,
        primary_features=primary_panel.names, compartment=blood_compartment,
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
    _log_tested(result, primary_panel)
    libraries = _libraries_table(features, clinical=clinical, unit=unit, result=result,
                                 responders=responders, excluded=exclude_responses,
                                 clinical_source=clinical_source)
    return AssociateResult(notes=notes, tested=result.tested, **readable_tables(
        dictionary, association=result.association, in_vivo=result.in_vivo,
        longitudinal=longitudinal, survival=survival_table, libraries=libraries))


def _log_tested(result: AssociationResult, primary_panel: PrimaryPanel) -> None:
    mw = result.association.query("test == 'mann_whitney' and family == 'primary'")
    logger.info(
        "%d product features tested (%d twins collapsed); primary panel v%s: %d with "
        "Mann-Whitney q < 0.05",
        len(result.tested), result.twins.n_collapsed, panel_label(primary_panel),
        int((mw["qvalue"] < 0.05).sum()),
    )


def _libraries_table(
    features: pd.DataFrame, *, clinical: pd.DataFrame, unit: str, result: AssociationResult,
    responders: Sequence[str], excluded: Sequence[str], clinical_source: str,
) -> pd.DataFrame:
    """``association_libraries.tsv``: libraries as replicates with ``unit='library'``
    (the patient-level p-values beside), no rows with ``unit='patient'``."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
    if unit == "patient":
        return pd.DataFrame(columns=list(LIBRARY_COLUMNS))
    patient_p = result.association.query("test == 'mann_whitney'").set_index("feature")
    return library_association(
        features, clinical=clinical, responders=responders, excluded=excluded,
        patient_pvalues=patient_p["pvalue"], clinical_source=clinical_source,
    )
