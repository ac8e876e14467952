"""CD4/CD8/DN/DP calls of new cells with the cohort's lineage count model.

Annotation fits one lineage count model on all the cohort's alpha-beta cells (CD4 and
CD8 counts plus the CD4-/CD8-like program columns; :func:`cartcohort.tl.annotate.call_lineage`);
each library then only learns its class proportions. Fitted on one new library, the
rates can drift (P15_IP on the demo, left out: 0.77 of cells as in the cohort). The
cohort's fit is frozen (:func:`lineage_model`) and the new cells are called with it
(:func:`frozen_lineage_calls`), their library's proportions, neighbour and clone
pooling as in the cohort.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .markers import _library_size


def _lineage_inputs(counts: sp.spmatrix, genes: pd.Index, signatures: Any
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """CD4 counts, CD8 counts and the program columns, as annotation computes them."""
    from ..tl.annotate._utils import gene_counts
    from ..tl.annotate.lineage import _program_counts

    c = sp.csr_matrix(counts)
    return (gene_counts(c, genes, signatures.lineage["CD4"]),
            gene_counts(c, genes, signatures.lineage["CD8"]),
            _program_counts(c, genes, signatures))


def lineage_model(counts: sp.spmatrix, *, genes: pd.Index, is_car: np.ndarray,
                  signatures: Any, is_gd: np.ndarray) -> dict[str, Any]:
    """The cohort's lineage count model (JSON-ready fields of its ``LatentClassFit``).

    Parameters
    ----------
    counts
        Cohort cells x genes, raw counts.
    genes, is_car
        ``var_names`` and the CAR mask (left out of the library size).
    signatures
        The marker programs (``lineage`` genes).
    is_gd
        Cells called gamma-delta (``cd4_cd8 == 'gd'``), left out of the fit as in
        annotation.
    """
    from ..tl.annotate.lineage import fit_lineage

    cd4, cd8, prog = _lineage_inputs(counts, genes, signatures)
    ab = ~np.asarray(is_gd, dtype=bool)
    lib = _library_size(counts, np.asarray(is_car, dtype=bool))
    fit = fit_lineage(np.column_stack([cd4, cd8])[ab], lib[ab], prog, ab)
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(fit).items()}


def frozen_lineage_calls(
    counts: sp.spmatrix,
    *,
    genes: pd.Index,
    is_car: np.ndarray,
    signatures: Any,
    model: dict[str, Any],
    sample: str,
    graph: sp.spmatrix,
    clone_id: pd.Series,
    clone_aware: bool,
    is_gd: np.ndarray,
) -> np.ndarray:
    """Final (clone-aware) lineage call of each new cell with the frozen model.

    Parameters
    ----------
    counts, genes, is_car, signatures
        As :func:`lineage_model`, for the new cells.
    model
        :func:`lineage_model` of the cohort.
    sample
        The new library (its own class proportions are learned).
    graph
        The new cells' kNN graph.
    clone_id, clone_aware
        Clones of the new cells and ``annotate.clone_aware``.
    is_gd
        The new cells' gamma-delta calls (kept ``gd``).
    """
    from ..tl.annotate import call_lineage
    from ..tl.annotate.mixture import LatentClassFit

    fields = {k: (np.asarray(v) if isinstance(v, list) and k != "classes" else v)
              for k, v in model.items()}
    fields["classes"] = tuple(model["classes"])
    fields["design"] = np.asarray(model["design"], dtype=bool)
    cd4, cd8, prog = _lineage_inputs(counts, genes, signatures)
    g = sp.csr_matrix(graph, dtype=np.float64)
    g.setdiag(0)
    g.eliminate_zeros()
    result = call_lineage(
        cd4, cd8_counts=cd8, library_size=_library_size(counts, np.asarray(is_car, bool)),
        library=np.full(len(cd4), sample, dtype=object), graph=g,
        clone_id=clone_id.to_numpy(dtype=object), clone_aware=clone_aware,
        is_gd=np.asarray(is_gd, dtype=bool), program_counts=prog,
        fit=LatentClassFit(**fields))
    return np.asarray(result.final_call, dtype=object)
