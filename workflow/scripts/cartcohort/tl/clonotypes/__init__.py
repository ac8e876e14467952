"""Clonotypes of the cohort: scirpy clonotype definition within each patient.

The AIRR data of the QC-passing cells of every library are assembled into one
cohort AnnData; clonotypes are defined within each patient (the same CDR3 in two
patients is two clones), optionally grouped into clusters of similar CDR3s, and
flagged public when their CDR3 amino-acid pair occurs in several patients.
:func:`cohort_clonotypes` is the workflow step (rule ``clonotypes``).
"""

from ._airr import META_COLUMNS, concat_airr, merge_airr_arrays, read_qc_airr, select_qc_cells
from ._cohort import ClusterSettings, CohortClonotypes, cohort_clonotypes, define_clonotypes
from ._define import (
    DualIR,
    Metric,
    ReceptorArms,
    SequenceKind,
    call_clonotype_clusters,
    call_clonotypes,
    clone_table,
    flag_public,
    summarise_airr_obs,
)

__all__ = [
    "META_COLUMNS",
    "ClusterSettings",
    "CohortClonotypes",
    "DualIR",
    "Metric",
    "ReceptorArms",
    "SequenceKind",
    "call_clonotype_clusters",
    "call_clonotypes",
    "clone_table",
    "cohort_clonotypes",
    "concat_airr",
    "define_clonotypes",
    "flag_public",
    "merge_airr_arrays",
    "read_qc_airr",
    "select_qc_cells",
    "summarise_airr_obs",
]
