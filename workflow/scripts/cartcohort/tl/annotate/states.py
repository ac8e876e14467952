"""Memory/exhaustion state scores and calls, and checkpoint-receptor positivity.

``score_<state>``: for each program, mean over its ``up`` genes minus ``down_weight`` x
mean over its ``down`` genes of the standardised, kNN-smoothed log expression
(:func:`score_states`). Smoothing is one step of a lazy random walk on the graph
(``smoothing`` = weight of the neighbours). Genes are centred and divided by
``sqrt(var + sd_floor**2)`` (a SAM-style fudge term): plain z-scores would blow genes
without biological variation (e.g. TRDC in a cohort without gamma-delta cells) up to the
scale of true markers and let programs of absent populations win by noise.

The call is the best-scoring program allowed in the cell's lineage (Treg only in CD4
cells: FOXP3+ CD8 T cells are not Tregs in this vocabulary); ``state_confidence`` is the
margin to the second best; a cell is ``unassigned`` when its best score is below
``min_state_score`` or the margin below ``min_confidence_margin`` (:func:`call_states`).
Optionally the majority state of each Leiden cluster replaces the per-cell call
(``cluster_consensus``; per-cell call kept in ``state_cell``).

``pd1_pos``, ``tim3_pos``, ``lag3_pos``: the two-state count model of :mod:`.mixture` of
the gene (PDCD1, HAVCR2, LAG3 from ``exhaustion_markers``) with neighbourhood pooling,
positive when the posterior of the high state is >= 0.5; ``triple_pos`` = all three.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ...errors import CartCohortError
from ._utils import dense_columns, gene_counts
from .mixture import LatentClassFit, fit_latent_classes
from .pooling import pool_neighbour_evidence, smoothing_operator
from .signatures import MARKER_COLUMNS, UNASSIGNED, Signatures

logger = logging.getLogger(__name__)


def score_states(
    adata: ad.AnnData,
    *,
    signatures: Signatures,
    smoother: sparse.spmatrix | None,
    down_weight: float = 0.5,
    sd_floor: float = 0.5,
    layer: str | None = None,
) -> pd.DataFrame:
    """Per-cell score of every marker program.

    Score = mean standardised smoothed expression of the ``up`` genes minus
    ``down_weight`` times that of the ``down`` genes. Expression is ``X`` (log
    normalised) or ``layers[layer]``, smoothed with ``smoother`` (see
    :func:`smoothing_operator`), centred per gene and divided by
    ``sqrt(var + sd_floor**2)`` over all cells (``sd_floor`` in log units keeps
    genes without real variation from being inflated to unit variance).

    Returns
    -------
    pandas.DataFrame
        Columns ``score_<state>`` in the signature order, index = obs_names.
    """
    genes = sorted({g for s in signatures.states for g in (*s.up, *s.down)})
    idx = adata.var_names.get_indexer(genes)
    if (idx < 0).any():
        missing = [g for g, i in zip(genes, idx) if i < 0]
        raise CartCohortError(
            f"genes {missing} are not in the data; call restrict_signatures first")
    mat = adata.X if layer is None else adata.layers[layer]
    expr = dense_columns(mat, idx)
    if smoother is not None:
        expr = np.asarray(smoother @ expr)
    mean = expr.mean(axis=0)
    sd = np.sqrt(expr.var(axis=0) + sd_floor**2)
    z = (expr - mean) / sd
    col = {g: i for i, g in enumerate(genes)}
    out = {}
    for s in signatures.states:
        up = z[:, [col[g] for g in s.up]].mean(axis=1)
        if s.down:
            up = up - down_weight * z[:, [col[g] for g in s.down]].mean(axis=1)
        out[f"score_{s.id}"] = up
    return pd.DataFrame(out, index=adata.obs_names)


def call_states(
    scores: pd.DataFrame,
    *,
    lineage: Sequence[str] | np.ndarray,
    restrictions: Mapping[str, str | None],
    min_score: float,
    min_margin: float,
) -> pd.DataFrame:
    """Best program per cell, with margin and ``unassigned``.

    Parameters
    ----------
    scores
        ``score_<state>`` columns.
    lineage
        Lineage call per cell (``CD4``/``CD8``/``DN``/``DP``).
    restrictions
        State id -> the only lineage it can be called in (or None).
    min_score, min_margin
        A cell is ``unassigned`` when its best allowed score is below
        ``min_score`` or the margin to the second best is below ``min_margin``.

    Returns
    -------
    pandas.DataFrame
        ``state``, ``state_best`` (best allowed program even when unassigned),
        ``state_confidence`` (margin; best minus ``min_score`` when only one
        program is allowed).
    """
    ids = [c[len("score_"):] for c in scores.columns]
    vals = scores.to_numpy(dtype=float).copy()
    lineage = np.asarray(lineage, dtype=object)
    for j, sid in enumerate(ids):
        lin = restrictions.get(sid)
        if lin is not None:
            vals[lineage != lin, j] = -np.inf
    order = np.argsort(-vals, axis=1, kind="mergesort")
    rows = np.arange(len(vals))
    best = vals[rows, order[:, 0]]
    second = vals[rows, order[:, 1]] if vals.shape[1] > 1 else np.full(len(vals), -np.inf)
    margin = np.where(np.isfinite(second), best - second, best - min_score)
    best_id = np.array(ids, dtype=object)[order[:, 0]]
    state = np.where((best >= min_score) & (margin >= min_margin), best_id, UNASSIGNED)
    return pd.DataFrame({"state": state, "state_best": best_id, "state_confidence": margin},
                        index=scores.index)


def cluster_consensus_states(
    state: pd.Series,
    *,
    cluster: pd.Series,
    lineage: pd.Series,
    restrictions: Mapping[str, str | None],
) -> pd.Series:
    """Majority state of each cluster for its cells (ties and restricted states keep the cell call).

    The majority is taken over assigned cells; a cluster's state is used only
    when it covers at least half of them, and never for cells whose lineage the
    state is not allowed in.
    """
    out = state.copy()
    df = pd.DataFrame({"state": state.astype(str), "cluster": cluster.astype(str)})
    assigned = df[df["state"] != UNASSIGNED]
    for cl, grp in assigned.groupby("cluster", sort=True):
        counts = grp["state"].value_counts()
        top = counts.index[0]
        if counts.iloc[0] * 2 < len(grp) or (len(counts) > 1 and counts.iloc[1] == counts.iloc[0]):
            continue
        cells = df.index[df["cluster"] == cl]
        lin = restrictions.get(top)
        ok = cells if lin is None else cells[lineage.loc[cells].to_numpy() == lin]
        out.loc[ok] = top
    return out


def annotate_states(
    gex: ad.AnnData,
    *,
    signatures: Signatures,
    graph: sparse.spmatrix,
    smoothing: float,
    down_weight: float,
    sd_floor: float,
    min_state_score: float,
    min_confidence_margin: float,
    cluster_consensus: bool,
) -> None:
    """State scores and calls of every cell, added to ``gex.obs`` in place.

    Needs ``obs['cd4_cd8']``; adds the ``score_<state>`` columns, ``state`` (with
    ``state_cell``, the per-cell call, when ``cluster_consensus``),
    ``state_confidence`` and ``lineage_state``.
    """
    obs = gex.obs
    smoother = smoothing_operator(graph, smoothing=smoothing) if smoothing > 0 else None
    scores = score_states(gex, signatures=signatures, smoother=smoother,
                          down_weight=down_weight, sd_floor=sd_floor)
    restrictions = {s.id: s.lineage for s in signatures.states}
    calls = call_states(scores, lineage=obs["cd4_cd8"].astype(str).to_numpy(),
                        restrictions=restrictions, min_score=min_state_score,
                        min_margin=min_confidence_margin)
    for c in scores.columns:
        obs[c] = scores[c].to_numpy()
    state = calls["state"]
    categories = [*signatures.state_ids, UNASSIGNED]
    if cluster_consensus:
        if "leiden" not in obs:
            raise CartCohortError("annotate.cluster_consensus is true but obs['leiden'] is "
                                  "missing. Fix: re-run rule integrate or set it to false")
        obs["state_cell"] = pd.Categorical(state, categories=categories)
        state = cluster_consensus_states(state, cluster=obs["leiden"],
                                         lineage=obs["cd4_cd8"].astype(str),
                                         restrictions=restrictions)
    obs["state"] = pd.Categorical(state.to_numpy(), categories=categories)
    obs["state_confidence"] = calls["state_confidence"].to_numpy()
    obs["lineage_state"] = (obs["cd4_cd8"].astype(str) + " " + obs["state"].astype(str))


# ---------------------------------------------------------------- checkpoint markers


def marker_positivity(
    counts: np.ndarray, *, library_size: np.ndarray, graph: sparse.spmatrix
) -> tuple[np.ndarray, np.ndarray, LatentClassFit, float]:
    """Positive / negative call of one marker gene with neighbourhood pooling.

    Returns
    -------
    (positive, posterior, fit, rho)
        Boolean calls (posterior of the high state >= 0.5), that posterior,
        the fitted two-state model and the neighbour agreement used.
    """
    lib = np.asarray(library_size, dtype=float)
    design = np.array([[False], [True]])
    fit = fit_latent_classes(np.asarray(counts, dtype=float), library_size=lib, design=design,
                             classes=("neg", "pos"))
    ll = fit.log_likelihood(counts, library_size=lib)
    post, _, rho = pool_neighbour_evidence(ll, prior=fit.prior, graph=graph)
    return post[:, 1] >= 0.5, post[:, 1], fit, rho


def annotate_markers(
    gex: ad.AnnData,
    counts: Any,
    *,
    signatures: Signatures,
    library_size: np.ndarray,
    graph: sparse.spmatrix,
) -> dict[str, dict[str, Any]]:
    """Checkpoint-receptor calls of every cell, added to ``gex.obs`` in place.

    Adds ``pd1_pos``, ``tim3_pos``, ``lag3_pos`` (missing when the gene is not in the
    data) and ``triple_pos``.

    Returns
    -------
    dict
        Per fitted column: ``gene``, ``low_rate``, ``high_rate``, ``rho`` and
        ``fraction_positive``.
    """
    obs = gex.obs
    marker_fits = {}
    for col in MARKER_COLUMNS:
        gene = signatures.exhaustion_markers.get(col)
        if gene is None or gene not in gex.var_names:
            logger.warning("%s: marker gene %s is not in the data; column left missing", col, gene)
            obs[col] = pd.array([pd.NA] * gex.n_obs, dtype="boolean")
            continue
        pos, _, fit, rho = marker_positivity(gene_counts(counts, gex.var_names, [gene]),
                                             library_size=library_size, graph=graph)
        obs[col] = pd.array(pos, dtype="boolean")
        marker_fits[col] = {"gene": gene, "low_rate": float(fit.low_rate[0]),
                            "high_rate": float(fit.high_rate[0]), "rho": rho,
                            "fraction_positive": float(pos.mean())}
        logger.info("%s (%s): %.1f%% positive (rho=%.2f)", col, gene, 100 * pos.mean(), rho)
    obs["triple_pos"] = (obs["pd1_pos"] & obs["tim3_pos"] & obs["lag3_pos"]).astype("boolean")
    return marker_fits


# ---------------------------------------------------------------- celltypist


def run_celltypist(adata: ad.AnnData, *, model_path: str) -> pd.DataFrame:
    """Annotate with a user-provided celltypist model (``annotate.celltypist_model``).

    Returns
    -------
    pandas.DataFrame
        ``celltypist_label`` and ``celltypist_conf`` per cell.

    Raises
    ------
    CartCohortError
        celltypist is not installed or the model file is missing.
    """
    try:
        import celltypist  # type: ignore[import-not-found]
    except ImportError:
        raise CartCohortError(
            f"annotate.celltypist_model is set ({model_path}) but the celltypist package is not "
            "installed in the annotate environment. Fix: add celltypist to envs/annotate.yaml "
            "(and requirements.lock) or set annotate.celltypist_model to an empty string") from None
    if not Path(model_path).is_file():
        raise CartCohortError(f"annotate.celltypist_model: {model_path} does not exist. Fix: give "
                              "the path of a celltypist .pkl model or an empty string to skip")
    model = celltypist.models.Model.load(model_path)
    pred = celltypist.annotate(adata, model=model, majority_voting=False)
    labels = pred.predicted_labels["predicted_labels"].astype(str)
    conf = pred.probability_matrix.max(axis=1)
    return pd.DataFrame({"celltypist_label": labels.to_numpy(), "celltypist_conf": conf.to_numpy()},
                        index=adata.obs_names)


def annotate_celltypist(gex: ad.AnnData, *, model_path: str | None) -> None:
    """``celltypist_label`` and ``celltypist_conf`` in ``gex.obs`` (skipped without a model)."""
    if model_path:
        ct = run_celltypist(gex, model_path=model_path)
        gex.obs["celltypist_label"] = ct["celltypist_label"].to_numpy()
        gex.obs["celltypist_conf"] = ct["celltypist_conf"].to_numpy()
    else:
        logger.info("celltypist skipped (annotate.celltypist_model is empty)")
