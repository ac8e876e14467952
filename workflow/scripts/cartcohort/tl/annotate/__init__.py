"""CAR-T cell-state annotation: lineage (CD4/CD8/DN/DP), memory/exhaustion states,
checkpoint-receptor positivity and CAR+ cells, with clone-aware final calls.

:func:`annotate` is the step of rule ``annotate``; :func:`assemble_cohort` builds the final
MuData of rule ``cohort``. The methods are described in the modules: :mod:`.signatures`
(marker programs), :mod:`.mixture` (latent-class count model), :mod:`.pooling`
(neighbourhood and clone pooling), :mod:`.lineage`, :mod:`.car` and :mod:`.states`.
"""

from .car import (
    CarMethod,
    CarModel,
    call_car_cells,
    car_feature_mask,
    car_warnings,
    clone_aware_car,
    fdr_calls,
    fit_car_model,
    is_sorted_library,
)
from .cohort import CELL_COLUMNS, assemble_cohort, attach_calls, cells_table, write_cohort
from .gd import GdResult, call_gd, tcr_evidence
from .lineage import (
    LINEAGE_CALLS,
    LINEAGE_DESIGN,
    LINEAGES,
    LineageResult,
    call_lineage,
    library_priors,
    naive_lineage,
)
from .mixture import LatentClassFit, fit_latent_classes
from .pipeline import AnnotationResult, agreement_table, annotate, annotation_genes
from .pooling import (
    CLONE_CLIP,
    CONFIDENT,
    library_graph,
    neighbour_agreement,
    neighbour_graph,
    local_class_prior,
    pool_by_clone,
    pool_neighbour_evidence,
    smoothing_operator,
)
from .signatures import (
    KNOWN_STATES,
    MARKER_COLUMNS,
    MIN_PRESENT_GENES,
    UNASSIGNED,
    Signatures,
    StateSignature,
    load_signatures,
    parse_signatures,
    restrict_signatures,
)
from .summary import LIBRARY_COLUMNS, library_table
from .states import (
    call_states,
    cluster_consensus_states,
    marker_positivity,
    run_celltypist,
    score_states,
)

__all__ = [
    "AnnotationResult",
    "GdResult",
    "LIBRARY_COLUMNS",
    "LINEAGE_CALLS",
    "call_gd",
    "car_warnings",
    "fdr_calls",
    "is_sorted_library",
    "library_priors",
    "library_table",
    "local_class_prior",
    "naive_lineage",
    "tcr_evidence",
    "CELL_COLUMNS",
    "CLONE_CLIP",
    "CONFIDENT",
    "CarMethod",
    "CarModel",
    "KNOWN_STATES",
    "LINEAGES",
    "LINEAGE_DESIGN",
    "LatentClassFit",
    "LineageResult",
    "MARKER_COLUMNS",
    "MIN_PRESENT_GENES",
    "Signatures",
    "StateSignature",
    "UNASSIGNED",
    "agreement_table",
    "annotate",
    "annotation_genes",
    "assemble_cohort",
    "write_cohort",
    "attach_calls",
    "call_car_cells",
    "call_lineage",
    "call_states",
    "car_feature_mask",
    "cells_table",
    "clone_aware_car",
    "cluster_consensus_states",
    "fit_car_model",
    "fit_latent_classes",
    "load_signatures",
    "marker_positivity",
    "neighbour_agreement",
    "library_graph",
    "neighbour_graph",
    "parse_signatures",
    "pool_by_clone",
    "pool_neighbour_evidence",
    "restrict_signatures",
    "run_celltypist",
    "score_states",
    "smoothing_operator",
]
