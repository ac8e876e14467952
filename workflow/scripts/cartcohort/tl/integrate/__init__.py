"""Integration of the cohort across batches: one method per job on the shared PCA
(:func:`cartcohort.pp.stream.merge_samples`), its kNN graph and Leiden clusterings, the UMAP
layout, and scib-style metrics that compare the methods.

Methods live in :data:`METHODS`, one :class:`Method` per module of this package
(harmony, bbknn, scanorama, scvi, none); a new method is one new module that registers
itself, plus its import below. The registry loads eagerly (it is light: the workflow
reads it while building the DAG); the rest loads on first use (PEP 562), so that a
dry run does not import anndata or scanpy.
"""

from __future__ import annotations

import importlib
from typing import Any

from .registry import EXACT_KNN_MAX_CELLS, METHODS, Method, get_method, method_batches, register
from . import harmony, bbknn, scanorama, scvi, none  # noqa: E402, F401  (each registers itself)

_LAZY = {
    "integrate_embedding": "core",
    "integrate_prepared": "core",
    "integrate_method": "core",
    "EmbeddingResult": "graph",
    "embed_and_cluster": "graph",
    "knn_graph": "graph",
    "leiden_key": "graph",
    "umap_layout": "umap",
    "METRIC_GROUPS": "metrics",
    "batch_asw": "metrics",
    "clisi": "metrics",
    "graph_connectivity": "metrics",
    "ilisi": "metrics",
    "integration_metrics": "metrics",
    "knn": "metrics",
    "knn_from_graph": "metrics",
    "label_asw": "metrics",
    "lisi": "metrics",
    "silhouette_samples": "metrics",
    "MethodScores": "compare",
    "reference_labels": "compare",
    "score_methods": "compare",
    "score_final_states": "compare",
    "subsample_for_metrics": "compare",
    "assemble_integrated": "read",
    "read_integrated": "read",
    "read_integrated_genes": "read",
    "read_integration": "read",
    "read_prepared": "read",
}

__all__ = [
    "EXACT_KNN_MAX_CELLS", "METHODS", "Method", "get_method", "method_batches", "register",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
