"""A frozen cohort reference and the scoring of new infusion products against it
(issue #20): rule ``reference`` freezes ``results/reference/`` (:mod:`.freeze`,
:mod:`.model`), new libraries are projected and labelled by :mod:`.project` and scored
by :mod:`.score` (rule ``score_product``); :mod:`.sheet` reads their sample sheet.

Names load lazily (PEP 562): the workflow reads the new sheet while Snakemake parses
the DAG, which must not import scanpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "COPIED": "freeze",
    "freeze_reference": "freeze",
    "read_reference_dir": "freeze",
    "sha256": "freeze",
    "CALL_COLUMNS": "model",
    "TRANSFER_LABELS": "model",
    "build_reference": "model",
    "projection_model": "model",
    "gene_mismatch": "model",
    "chemistry_end": "model",
    "chemistry_mismatch": "model",
    "read_chemistry": "model",
    "corrected_embedding": "project",
    "joint_graph": "project",
    "hvg_scaling": "model",
    "read_model": "model",
    "reference_samples": "model",
    "Mapping": "project",
    "align_counts": "project",
    "knn_vote": "project",
    "map_to_reference": "project",
    "project_pca": "project",
    "MATCHED_SETTINGS": "score",
    "ScoredProduct": "score",
    "check_settings": "score",
    "score_new_product": "score",
    "summarise_products": "score",
    "SUMMARY_COLUMNS": "score",
    "prepare_new_samples": "sheet",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'cartcohort.reference' has no attribute {name!r}")
