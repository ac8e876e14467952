"""Patient-level statistics: association of product features with clinical response.

The statistical unit is the **patient** (cells are never replicates for a
patient-level claim). Test families (``test`` column of ``association.tsv``, see
:data:`FAMILIES`), with Benjamini–Hochberg q-values within each test and
multiple-testing family (the pre-specified ``primary`` panel, ``exploratory``) across
product features (:mod:`~cartcohort.stats.scopes`; in vivo features apart, twins
collapsed first, :mod:`~cartcohort.stats.twins`):

- :mod:`~cartcohort.stats.response` - ``mann_whitney`` (exact or asymptotic,
  rank-biserial effect) and oriented ``auroc``, both with Newcombe's score interval;
- :mod:`~cartcohort.stats.logistic` - ``logistic``: ML, or Firth on separation or
  few events, with the odds ratio per stated unit;
- :mod:`~cartcohort.stats.composition` - ``compositional``: propeller-style
  per-state test of proportions.

Further analyses with their own tables: :func:`longitudinal_models` (mixed-model
contrasts over the categorical blood timepoints), :func:`survival_models` (Cox models
of the endpoint of ``associate.survival``: product features from infusion, in vivo
features from a landmark) and :func:`pseudobulk_de` (DESeq2 per state). The rule steps are :func:`associate`
and :func:`pseudobulk_de`.
"""

from ._utils import ASSOCIATION_COLUMNS, NOTE_COLUMNS
from .association import (
    AssociateResult,
    AssociationResult,
    associate,
    notes_from,
    run_association,
    run_families,
)
from .composition import COMPOSITION_TRANSFORMS, CompositionTransform, compositional_tests
from .families import FAMILIES, TESTS, Family, FamilyInputs
from .labels import (
    PATIENT_ID_COLUMNS,
    composition_states,
    encode_covariates,
    feature_columns,
    labelled_patients,
    patient_table,
    response_labels,
    testable_features,
)
from .logistic import LogisticFit, firth_logistic, logistic_association, logistic_tests
from .longitudinal import LONGITUDINAL_COLUMNS, longitudinal_models
from .panel import PanelFeature, PrimaryPanel, load_primary_panel, parse_primary_panel
from .pseudobulk import DE_COLUMNS, pseudobulk_counts, pseudobulk_de, pseudobulk_de_matrix
from .response import (
    add_qvalues,
    auroc,
    bh_qvalues,
    exact_rank_sum_pvalue,
    mann_whitney,
    newcombe_auc_interval,
    oriented_auroc,
    rank_biserial,
    univariate_tests,
)
from .scopes import IN_VIVO_NOTE, finish_table, split_scopes
from .survival import SURVIVAL_COLUMNS, survival_models
from .twins import Twins, collapse_twins, spearman_matrix
from .typeone import FwerResult, clopper_pearson, permutation_fwer

__all__ = [
    "ASSOCIATION_COLUMNS",
    "COMPOSITION_TRANSFORMS",
    "DE_COLUMNS",
    "FAMILIES",
    "IN_VIVO_NOTE",
    "LONGITUDINAL_COLUMNS",
    "NOTE_COLUMNS",
    "PATIENT_ID_COLUMNS",
    "SURVIVAL_COLUMNS",
    "TESTS",
    "AssociateResult",
    "AssociationResult",
    "CompositionTransform",
    "Family",
    "FamilyInputs",
    "FwerResult",
    "LogisticFit",
    "PanelFeature",
    "PrimaryPanel",
    "Twins",
    "add_qvalues",
    "associate",
    "auroc",
    "bh_qvalues",
    "clopper_pearson",
    "collapse_twins",
    "composition_states",
    "compositional_tests",
    "encode_covariates",
    "exact_rank_sum_pvalue",
    "feature_columns",
    "finish_table",
    "firth_logistic",
    "labelled_patients",
    "load_primary_panel",
    "logistic_association",
    "logistic_tests",
    "longitudinal_models",
    "mann_whitney",
    "newcombe_auc_interval",
    "notes_from",
    "oriented_auroc",
    "parse_primary_panel",
    "patient_table",
    "permutation_fwer",
    "pseudobulk_counts",
    "pseudobulk_de",
    "pseudobulk_de_matrix",
    "rank_biserial",
    "response_labels",
    "run_association",
    "run_families",
    "spearman_matrix",
    "split_scopes",
    "survival_models",
    "testable_features",
    "univariate_tests",
]
