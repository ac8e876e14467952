"""CD4 / CD8 / double-negative (DN) / double-positive (DP) lineage calls.

The CD4 and CD8A+CD8B UMIs of each cell follow the four-class latent-class count model of
:mod:`.mixture` (classes CD4/CD8/DN/DP). Each cell's likelihood is pooled with its kNN
neighbours' (``cd4_cd8_cell``) and, for the final call ``cd4_cd8``, over the cells of its
TCR clone (:mod:`.pooling`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ...errors import CartCohortError
from ._utils import gene_counts
from .mixture import LatentClassFit, fit_latent_classes
from .pooling import pool_by_clone, pool_neighbour_evidence
from .signatures import Signatures

logger = logging.getLogger(__name__)

#: Lineage classes (DESIGN.md vocabulary), in this order everywhere.
LINEAGES: tuple[str, ...] = ("CD4", "CD8", "DN", "DP")
#: Which marker set is "high" in each lineage class (columns: CD4 genes, CD8 genes).
LINEAGE_DESIGN = np.array([[1, 0], [0, 1], [0, 0], [1, 1]], dtype=bool)


@dataclass(frozen=True)
class LineageResult:
    """Lineage calls (see :func:`call_lineage`)."""

    cell_call: np.ndarray
    cell_posterior: np.ndarray
    log_evidence: np.ndarray
    final_call: np.ndarray
    final_posterior: np.ndarray
    clone_pooled: np.ndarray
    fit: LatentClassFit
    rho: float


def call_lineage(
    cd4_counts: np.ndarray,
    *,
    cd8_counts: np.ndarray,
    library_size: np.ndarray,
    graph: sparse.spmatrix,
    clone_id: pd.Series | np.ndarray | None = None,
    clone_aware: bool = True,
) -> LineageResult:
    """CD4 / CD8 / DN / DP calls robust to dropout.

    Parameters
    ----------
    cd4_counts, cd8_counts
        Per-cell UMIs of the CD4 genes and of the CD8 genes (CD8A + CD8B), summed.
    library_size
        Total UMIs per cell.
    graph
        kNN weights (no self loops).
    clone_id
        Clone of each cell (missing for cells without TCR).
    clone_aware
        Pool members of each clone (>= 2 cells) for the final call.

    Returns
    -------
    LineageResult
        ``cell_call``: own counts + neighbourhood; ``final_call``: clone-aware.
    """
    counts = np.column_stack([cd4_counts, cd8_counts]).astype(float)
    lib = np.asarray(library_size, dtype=float)
    fit = fit_latent_classes(counts, library_size=lib, design=LINEAGE_DESIGN, classes=LINEAGES)
    ll = fit.log_likelihood(counts, library_size=lib)
    post, evidence, rho = pool_neighbour_evidence(ll, prior=fit.prior, graph=graph)
    names = np.array(LINEAGES, dtype=object)
    cell_call = names[post.argmax(axis=1)]
    final_post = post.copy()
    pooled = np.zeros(len(lib), dtype=bool)
    if clone_aware and clone_id is not None:
        cpost, pooled = pool_by_clone(evidence, clone_id=clone_id, prior=fit.prior)
        final_post[pooled] = cpost[pooled]
    final_call = names[final_post.argmax(axis=1)]
    logger.info(
        "lineage model: rates per 10k UMIs CD4 low %.3g high %.3g, CD8 low %.3g high %.3g; "
        "priors %s; neighbour agreement rho=%.2f",
        fit.low_rate[0] * 1e4, fit.high_rate[0] * 1e4, fit.low_rate[1] * 1e4,
        fit.high_rate[1] * 1e4, dict(zip(LINEAGES, np.round(fit.prior, 3))), rho)
    return LineageResult(cell_call, post, evidence, final_call, final_post, pooled, fit, rho)


def check_lineage_genes(signatures: Signatures, *, var_names: pd.Index) -> None:
    """Warn about absent lineage genes; fail when a lineage has none in the data.

    Raises
    ------
    CartCohortError
        None of the CD4 (or CD8) genes of the signature file is in ``var_names``.
    """
    missing_lineage = {lin: [g for g in genes if g not in var_names]
                       for lin, genes in signatures.lineage.items()}
    for lin, miss in missing_lineage.items():
        if len(miss) == len(signatures.lineage[lin]):
            raise CartCohortError(
                f"{signatures.source}: none of the {lin} lineage genes "
                f"{list(signatures.lineage[lin])} "
                "is in the data, so CD4/CD8 cannot be called. Fix: use the gene symbols of your "
                "reference in the signature file's 'lineage' section")
        if miss:
            logger.warning("lineage genes absent from the data: %s", miss)


def annotate_lineage(
    gex: ad.AnnData,
    counts: Any,
    *,
    signatures: Signatures,
    library_size: np.ndarray,
    graph: sparse.spmatrix,
    clone_id: pd.Series,
    clone_aware: bool,
) -> LineageResult:
    """Lineage calls of every cell, added to ``gex.obs`` in place.

    Adds ``cd4_cd8_cell`` (own counts + neighbours), ``cd4_cd8`` (clone-aware when
    ``clone_aware``) and ``cd4_cd8_confidence`` (posterior of the final call).

    Returns
    -------
    LineageResult
        The calls, posteriors, the fitted count model and the neighbour agreement.
    """
    lin = call_lineage(
        gene_counts(counts, gex.var_names, signatures.lineage["CD4"]),
        cd8_counts=gene_counts(counts, gex.var_names, signatures.lineage["CD8"]),
        library_size=library_size, graph=graph, clone_id=clone_id, clone_aware=clone_aware)
    obs = gex.obs
    obs["cd4_cd8_cell"] = pd.Categorical(lin.cell_call, categories=LINEAGES)
    obs["cd4_cd8"] = pd.Categorical(lin.final_call, categories=LINEAGES)
    obs["cd4_cd8_confidence"] = lin.final_posterior.max(axis=1)
    return lin
