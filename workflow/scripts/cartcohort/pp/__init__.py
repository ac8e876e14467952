"""Preprocessing: per-library QC and doublet evidence, merging the cohort.

- :mod:`cartcohort.pp.qc` - the QC step of one library (:func:`run_sample_qc`),
  the pass decision, per-sample and cohort summaries;
- :mod:`cartcohort.pp.metrics` - per-cell metrics, MAD or fixed thresholds, flags;
- :mod:`cartcohort.pp.doublets` - Scrublet on expression, scirpy chain QC on the TCR;
- :mod:`cartcohort.pp.merge` - the QC-passing cells merged, normalised, HVGs (no
  V(D)J/mito/ribo/CAR genes) and PCA, shared by every integration method, in memory;
- :mod:`cartcohort.pp.stream` - the same written out of core, library by library (rule
  ``merge_samples``: ``stream.merge_samples``), with :mod:`cartcohort.pp.pca` (PCA from
  the Gram matrix of the HVGs); not re-exported here (it needs scikit-misc, via hvg);
- :mod:`cartcohort.pp.hvg` - scanpy's ``seurat_v3`` HVGs from a cohort read chunk by
  chunk (``seurat_v3_chunked``), never holding the whole matrix; imported from its
  module, not re-exported here, so that the per-library steps' envs need no scikit-misc.
"""

from __future__ import annotations

from .doublets import (
    CHAIN_PAIRINGS,
    DOUBLET_DEFAULTS,
    DoubletMethod,
    annotate_chain_qc,
    resolve_doublet_settings,
    score_doublets,
    tcr_flags,
    threshold_minimum,
)
from .metrics import (
    FIXED_DEFAULTS,
    MAD_SCALES,
    METRICS,
    MadScale,
    QCMode,
    compute_thresholds,
    flag_cells,
    mad_bounds,
    mito_genes,
    qc_metrics,
)
from .merge import (
    EXCLUDE_PATTERNS,
    HVG_SPANS,
    GeneJoin,
    HvgFlavor,
    PCAResult,
    concat_samples,
    gene_exclusions,
    load_qc_cells,
    log_normalise,
    prepare_cohort,
    run_pca,
    select_hvgs,
    stringify_obs,
)
from .qc import (
    REASONS,
    combine_summaries,
    failing_matrix,
    included_samples,
    qc_pass_and_reason,
    run_sample_qc,
    sample_summary,
)

__all__ = [
    # qc
    "REASONS",
    "combine_summaries",
    "failing_matrix",
    "included_samples",
    "qc_pass_and_reason",
    "run_sample_qc",
    "sample_summary",
    # metrics
    "FIXED_DEFAULTS",
    "MAD_SCALES",
    "METRICS",
    "MadScale",
    "QCMode",
    "compute_thresholds",
    "flag_cells",
    "mad_bounds",
    "mito_genes",
    "qc_metrics",
    # doublets
    "CHAIN_PAIRINGS",
    "DOUBLET_DEFAULTS",
    "DoubletMethod",
    "annotate_chain_qc",
    "resolve_doublet_settings",
    "score_doublets",
    "tcr_flags",
    "threshold_minimum",
    # merge
    "EXCLUDE_PATTERNS",
    "HVG_SPANS",
    "GeneJoin",
    "HvgFlavor",
    "PCAResult",
    "concat_samples",
    "gene_exclusions",
    "load_qc_cells",
    "log_normalise",
    "prepare_cohort",
    "run_pca",
    "select_hvgs",
    "stringify_obs",
]
