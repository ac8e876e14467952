"""CD4 / CD8 / double-negative (DN) / double-positive (DP) lineage calls, and gamma-delta.

The CD4 and CD8A+CD8B UMIs of each cell follow the four-class latent-class count model of
:mod:`.mixture` (classes CD4/CD8/DN/DP), with library-size offsets: under a class whose
marker is "off" the marker's UMIs are ambient Poisson, so a zero is weak evidence whose
weight grows with the cell's depth. Then:

1. **Per-library priors.** With the rates fixed, each library's class proportions are
   fitted by EM (a Dirichlet prior of :data:`LIBRARY_PRIOR_STRENGTH` cells pulls them to
   the cohort's). This is where DN is told from dropout: a library has DN cells only as
   far as its double-zero cells exceed what its depth and the markers' detection rates in
   CD4 and CD8 cells predict.
2. **Neighbourhood prior** (``cd4_cd8_cell``): each cell's prior is the class mixture
   fitted to its kNN neighbours (:func:`.pooling.local_class_prior`), and its posterior
   that prior times its own likelihood. A neighbourhood that consistently lacks both
   markers raises DN; it never imputes CD4 or CD8 from the neighbours' majority.
3. **Clone pooling** (``cd4_cd8``): members of a clone (>= 2 cells) share one lineage; the
   clone posterior multiplies the members' own likelihoods (so a clone whose cells all
   lack both markers is DN) with the mean of their neighbourhood priors.

``cd4_cd8_source`` says what decided each call: ``own`` (the cell's own counts under
its library prior reach posterior :data:`~.pooling.CONFIDENT`), ``clone`` or
``neighbours``. Gamma-delta cells (:mod:`.gd`) are called first, left out of the fit and
get the class ``gd``. ``cd4_cd8_naive`` is the naive rule beside it: CD8 when any CD8 UMI
and no CD4 UMI, CD4 the reverse, DN when neither, DP when both.
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
from ._utils import gene_counts, normalise_log
from .gd import AB_CONSTANT_GENES, GdResult, call_gd, gd_counts_of, tcr_evidence
from .mixture import LatentClassFit, fit_latent_classes
from .pooling import CONFIDENT, local_class_prior, pool_by_clone
from .signatures import Signatures

logger = logging.getLogger(__name__)

#: Classes of the lineage count model (DESIGN.md vocabulary), in this order everywhere.
LINEAGES: tuple[str, ...] = ("CD4", "CD8", "DN", "DP")
#: All lineage calls: the model's classes and gamma-delta.
LINEAGE_CALLS: tuple[str, ...] = (*LINEAGES, "gd")
#: Which marker set is "high" in each lineage class (columns: CD4 genes, CD8 genes).
LINEAGE_DESIGN = np.array([[1, 0], [0, 1], [0, 0], [1, 1]], dtype=bool)
#: Initial weights of the CD4-like and CD8-like transcriptional profiles in each class:
#: CD4 and CD8 cells are tied to their profile, DN and DP cells learn theirs.
LINEAGE_PROFILE_WEIGHT = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5]])
#: Pseudo-cells of the cohort prior in each library's prior.
LIBRARY_PRIOR_STRENGTH = 20.0
#: Where a lineage call came from (``cd4_cd8_source``).
LINEAGE_SOURCES: tuple[str, ...] = ("own", "neighbours", "clone", "gd")


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
    library_prior: pd.DataFrame
    source: np.ndarray


def library_priors(log_lik: np.ndarray, *, library: np.ndarray, prior: np.ndarray,
                   strength: float = LIBRARY_PRIOR_STRENGTH,
                   n_iter: int = 200) -> pd.DataFrame:
    """Class proportions of each library with the count model's rates fixed (EM, MAP).

    Returns
    -------
    pandas.DataFrame
        One row per library (sorted), one column per class.
    """
    libs, code = np.unique(np.asarray(library, dtype=object).astype(str), return_inverse=True)
    n_lib = np.bincount(code, minlength=len(libs)).astype(float)
    pi = np.tile(np.asarray(prior, dtype=float), (len(libs), 1))
    lik = np.exp(log_lik - log_lik.max(axis=1, keepdims=True))
    for _ in range(n_iter):
        r = pi[code] * lik
        r /= r.sum(axis=1, keepdims=True)
        acc = np.column_stack([np.bincount(code, weights=r[:, c], minlength=len(libs))
                               for c in range(r.shape[1])])
        new = (acc + strength * np.asarray(prior)[None, :]) / (n_lib + strength)[:, None]
        done = float(np.abs(new - pi).max()) < 1e-6
        pi = new
        if done:
            break
    return pd.DataFrame(pi, index=pd.Index(libs, name="sample"))


def naive_lineage(cd4_counts: np.ndarray, *, cd8_counts: np.ndarray) -> np.ndarray:
    """The naive rule: CD8 if any CD8 UMI and no CD4 UMI, CD4 the reverse, DN if neither,
    DP if both."""
    cd4 = np.asarray(cd4_counts) > 0
    cd8 = np.asarray(cd8_counts) > 0
    return np.select([cd4 & cd8, cd4, cd8], ["DP", "CD4", "CD8"], default="DN").astype(object)


def fit_lineage(counts: np.ndarray, library_size: np.ndarray, program_counts: np.ndarray | None,
                ab: np.ndarray) -> LatentClassFit:
    """The lineage count model of :func:`call_lineage` fitted on the alpha-beta cells
    ``ab`` (``counts`` and ``library_size`` already restricted to them)."""
    prog = None if program_counts is None else program_counts[ab]
    return fit_latent_classes(counts, library_size=library_size, design=LINEAGE_DESIGN,
                              classes=LINEAGES, free_counts=prog,
                              profile_weight=None if prog is None else LINEAGE_PROFILE_WEIGHT)


def call_lineage(
    cd4_counts: np.ndarray,
    *,
    cd8_counts: np.ndarray,
    library_size: np.ndarray,
    library: np.ndarray,
    graph: sparse.spmatrix,
    clone_id: pd.Series | np.ndarray | None = None,
    clone_aware: bool = True,
    is_gd: np.ndarray | None = None,
    program_counts: np.ndarray | None = None,
    fit: LatentClassFit | None = None,
) -> LineageResult:
    """CD4 / CD8 / DN / DP calls that tell DN from dropout (module docstring).

    Parameters
    ----------
    cd4_counts, cd8_counts
        Per-cell UMIs of the CD4 genes and of the CD8 genes (CD8A + CD8B), summed.
    library_size
        Total UMIs per cell.
    library
        Library (sample) of each cell.
    graph
        kNN weights (no self loops).
    clone_id
        Clone of each cell (missing for cells without TCR).
    clone_aware
        Pool members of each clone (>= 2 cells) for the final call.
    is_gd
        Gamma-delta cells: left out of the fit and called ``gd``.
    program_counts
        ``(n_cells, n_programs)`` summed UMIs of lineage-associated genes (e.g. the CD4
        and CD8 programs of the signature file): free columns of the count model, one
        rate per class learned from the data.
    fit
        A fitted count model (a frozen reference's) instead of fitting one here.

    Returns
    -------
    LineageResult
        ``cell_call``: own counts + neighbourhood prior; ``final_call``: clone-aware.
    """
    counts = np.column_stack([cd4_counts, cd8_counts]).astype(float)
    lib = np.asarray(library_size, dtype=float)
    n = len(lib)
    gd = np.zeros(n, dtype=bool) if is_gd is None else np.asarray(is_gd, dtype=bool)
    ab = ~gd
    if not ab.any():
        raise CartCohortError("every cell was called gamma-delta: no alpha-beta T cell is "
                              "left to call CD4/CD8 on. Check the gd genes of the signature "
                              "file's 'lineage' section")
    prog = None if program_counts is None else np.asarray(program_counts, dtype=float)
    fit = fit if fit is not None else fit_lineage(counts[ab], lib[ab], prog, ab)
    ll = fit.log_likelihood(counts, library_size=lib, free_counts=prog)
    lib_prior = library_priors(ll[ab], library=np.asarray(library)[ab], prior=fit.prior)
    cell_lib_prior = lib_prior.reindex(np.asarray(library, dtype=object).astype(str))
    cell_lib_prior = cell_lib_prior.fillna(pd.Series(fit.prior, index=lib_prior.columns))
    base = cell_lib_prior.to_numpy()
    own = normalise_log(ll + np.log(base))
    g = sparse.csr_matrix(graph)
    if gd.any():  # gamma-delta neighbours carry no alpha-beta lineage evidence
        g = sparse.csr_matrix(g @ sparse.diags((~gd).astype(float)))
    local = local_class_prior(ll, base_prior=base, graph=g)
    post = normalise_log(ll + np.log(local))
    names = np.array(LINEAGES, dtype=object)
    final_post = post.copy()
    pooled = np.zeros(n, dtype=bool)
    if clone_aware and clone_id is not None:
        cid = pd.Series(np.asarray(clone_id, dtype=object)).where(pd.Series(ab)).to_numpy()
        cpost, pooled = pool_by_clone(ll, clone_id=cid, prior=local)
        final_post[pooled] = cpost[pooled]
    cell_call = names[post.argmax(axis=1)]
    final_call = names[final_post.argmax(axis=1)]
    source = np.where(own.max(axis=1) >= CONFIDENT, "own",
                      np.where(pooled, "clone", "neighbours")).astype(object)
    cell_call[gd] = final_call[gd] = source[gd] = "gd"
    _log_fit(fit, source)
    return LineageResult(cell_call, post, ll, final_call, final_post, pooled, fit, lib_prior,
                         source)


def _log_fit(fit: LatentClassFit, source: np.ndarray) -> None:
    """Log the lineage model's rates, priors, program profiles and call sources."""
    logger.info(
        "lineage model: rates per 10k UMIs CD4 low %.3g high %.3g, CD8 low %.3g high %.3g; "
        "cohort priors %s; calls from own counts %.1f%%, neighbours %.1f%%, clones %.1f%%",
        fit.low_rate[0] * 1e4, fit.high_rate[0] * 1e4, fit.low_rate[1] * 1e4,
        fit.high_rate[1] * 1e4, dict(zip(LINEAGES, np.round(fit.prior, 3))),
        100 * np.mean(source == "own"), 100 * np.mean(source == "neighbours"),
        100 * np.mean(source == "clone"))
    if fit.free_rate is not None:
        logger.info("lineage programs (CD4, CD8) per 10k UMIs: CD4-like %s, CD8-like %s; "
                    "DN cells CD8-like %.2f", np.round(fit.free_rate[0] * 1e4, 2),
                    np.round(fit.free_rate[1] * 1e4, 2), fit.profile_weight[2, 1])


def check_lineage_genes(signatures: Signatures, *, var_names: pd.Index) -> None:
    """Warn about absent lineage genes; fail when CD4 or CD8 has none in the data.

    Raises
    ------
    CartCohortError
        None of the CD4 (or CD8) genes of the signature file is in ``var_names``.
    """
    missing_lineage = {lin: [g for g in genes if g not in var_names]
                       for lin, genes in signatures.lineage.items()}
    for lin, miss in missing_lineage.items():
        if len(miss) == len(signatures.lineage[lin]) and lin.endswith("_program"):
            logger.warning("none of the %s genes %s is in the data: lineage calls use the "
                           "markers alone", lin, list(signatures.lineage[lin]))
            continue
        if len(miss) == len(signatures.lineage[lin]) and lin != "gd":
            raise CartCohortError(
                f"{signatures.source}: none of the {lin} lineage genes "
                f"{list(signatures.lineage[lin])} "
                "is in the data, so CD4/CD8 cannot be called. Fix: use the gene symbols of your "
                "reference in the signature file's 'lineage' section")
        if len(miss) == len(signatures.lineage[lin]):
            logger.warning("none of the gamma-delta genes %s is in the data: no cell is called "
                           "gd", list(signatures.lineage[lin]))
        elif miss:
            logger.warning("%s lineage genes absent from the data: %s", lin, miss)


def _program_counts(counts: Any, var_names: pd.Index,
                    signatures: Signatures) -> np.ndarray | None:
    """Summed UMIs of the CD4 and CD8 program genes (columns), or None when the signature
    file has no programs or the data lack every gene of one of them."""
    lists = [signatures.lineage.get(k, ()) for k in ("CD4_program", "CD8_program")]
    if not all(any(g in var_names for g in genes) for genes in lists):
        return None
    return np.column_stack([gene_counts(counts, var_names, list(genes)) for genes in lists])


def _annotate_gd(gex: ad.AnnData, counts: Any, *, signatures: Signatures,
                 airr: ad.AnnData | None, clone_id: pd.Series | None) -> GdResult | None:
    """γδ calls (``gd_posterior``), or None without γδ genes in the signatures or data."""
    genes = signatures.lineage.get("gd", ())
    gd_counts = gd_counts_of(counts, gex.var_names, genes) if genes else None
    if gd_counts is None:
        gex.obs["gd_posterior"] = np.nan
        return None
    has_tcr, ab_pair, gd_contig = tcr_evidence(gex.obs_names, airr)
    res = call_gd(gd_counts, ab_constant_counts=gene_counts(counts, gex.var_names,
                                                           AB_CONSTANT_GENES),
                  library=gex.obs["sample"].astype(str).to_numpy(), has_tcr=has_tcr,
                  ab_pair=ab_pair, gd_contig=gd_contig, clone_id=clone_id)
    gex.obs["gd_posterior"] = res.posterior
    return res


def annotate_lineage(
    gex: ad.AnnData,
    counts: Any,
    *,
    signatures: Signatures,
    library_size: np.ndarray,
    graph: sparse.spmatrix,
    clone_id: pd.Series,
    clone_aware: bool,
    airr: ad.AnnData | None = None,
) -> tuple[LineageResult, GdResult | None]:
    """Lineage and γδ calls of every cell, added to ``gex.obs`` in place.

    Adds ``gd_posterior``, ``cd4_cd8_cell`` (own counts + neighbourhood prior),
    ``cd4_cd8`` (clone-aware when ``clone_aware``), ``cd4_cd8_confidence`` (posterior of
    the final call), ``cd4_cd8_source`` and ``cd4_cd8_naive``.

    Returns
    -------
    (LineageResult, GdResult or None)
        The lineage calls and model; the γδ calls (None without γδ genes).
    """
    cd4 = gene_counts(counts, gex.var_names, signatures.lineage["CD4"])
    cd8 = gene_counts(counts, gex.var_names, signatures.lineage["CD8"])
    gd = _annotate_gd(gex, counts, signatures=signatures, airr=airr,
                      clone_id=clone_id if clone_aware else None)
    lin = call_lineage(
        cd4, cd8_counts=cd8, library_size=library_size,
        library=gex.obs["sample"].astype(str).to_numpy(), graph=graph, clone_id=clone_id,
        clone_aware=clone_aware, is_gd=None if gd is None else gd.is_gd,
        program_counts=_program_counts(counts, gex.var_names, signatures))
    obs = gex.obs
    obs["cd4_cd8_cell"] = pd.Categorical(lin.cell_call, categories=LINEAGE_CALLS)
    obs["cd4_cd8"] = pd.Categorical(lin.final_call, categories=LINEAGE_CALLS)
    conf = lin.final_posterior.max(axis=1)
    if gd is not None:
        conf = np.where(gd.is_gd, gd.posterior, conf)
    obs["cd4_cd8_confidence"] = conf
    obs["cd4_cd8_source"] = pd.Categorical(lin.source, categories=LINEAGE_SOURCES)
    obs["cd4_cd8_naive"] = pd.Categorical(naive_lineage(cd4, cd8_counts=cd8),
                                          categories=LINEAGES)
    return lin, gd
