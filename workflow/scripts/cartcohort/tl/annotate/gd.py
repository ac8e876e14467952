"""Gamma-delta (γδ) T cells: TCRγδ expression and the absence of a productive αβ pair.

Three pieces of evidence are multiplied per cell (independent given the class):

* the share of γδ-gene UMIs (``lineage.gd`` of the signature file: TRDC, TRGC1/2,
  TRDV/TRGV) among the cell's TCR constant-region and γδ UMIs (γδ genes + TRAC, TRBC1,
  TRBC2): binomial with a small share ``p_ab`` in αβ cells (ambient, germline
  transcripts) and a share ``p_gd >=`` :data:`GD_MIN_SHARE` in γδ cells, fitted by EM.
  The share does not depend on depth, and a cohort without γδ cells cannot turn noise
  into a γδ component: a γδ cell's TCR transcripts are mostly γδ by definition;
* whether the cell has a productive αβ pair (TRA + TRB) in its library's contigs: a γδ
  cell has one with probability :data:`GD_AB_PAIR_RATE` (doublets, ambient contigs), an αβ
  cell with its library's pairing rate (estimated from cells without γδ UMIs). Libraries
  without TCR data add nothing;
* in libraries with TRG/TRD contigs, whether the cell has a productive TRG or TRD contig
  (rates estimated from the cells the first two pieces call confidently).

Each library's γδ fraction is fitted by EM (MAP, pulled towards the cohort fraction by
:data:`~.lineage.LIBRARY_PRIOR_STRENGTH` cells); a cell is γδ when its posterior is at
least 0.5. γδ cells get the lineage class ``gd`` and leave the CD4/CD8/DN denominators;
their states are scored like every other cell's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from ._utils import gene_counts
from .pooling import pool_by_clone

logger = logging.getLogger(__name__)

#: P(productive αβ pair | γδ cell): doublets and ambient contigs only.
GD_AB_PAIR_RATE = 0.02
#: Cells of prior in each library's γδ fraction.
GD_LIBRARY_STRENGTH = 20.0
#: Lowest share of γδ UMIs among the TCR constant-region + γδ UMIs of a γδ cell.
GD_MIN_SHARE = 0.5
#: The αβ TCR constant-region genes (the denominator of the γδ share).
AB_CONSTANT_GENES: tuple[str, ...] = ("TRAC", "TRBC1", "TRBC2")
_AB_PAIRED = ("single pair", "extra VJ", "extra VDJ", "two full chains")


@dataclass(frozen=True)
class GdResult:
    """γδ calls (see :func:`call_gd`)."""

    posterior: np.ndarray
    is_gd: np.ndarray
    library_fraction: pd.Series
    count_model: dict[str, float]


def tcr_evidence(obs_names: pd.Index, airr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: has TCR data, has a productive αβ pair, has a productive TRG/TRD contig.

    Parameters
    ----------
    obs_names
        The cells.
    airr
        scirpy AIRR AnnData (``obs['receptor_subtype']``, ``obs['chain_pairing']``,
        ``obsm['airr']``) or None.

    Returns
    -------
    (has_tcr, ab_pair, gd_contig)
        Boolean arrays on ``obs_names``.
    """
    n = len(obs_names)
    none = np.zeros(n, dtype=bool)
    if airr is None or "chain_pairing" not in airr.obs:
        return none, none.copy(), none.copy()
    obs = airr.obs.reindex(obs_names)
    pairing = obs["chain_pairing"].astype(object).fillna("no IR").astype(str)
    subtype = obs.get("receptor_subtype", pd.Series("", index=obs.index))
    subtype = subtype.astype(object).fillna("").astype(str)
    has_tcr = ~pairing.isin(["no IR", "nan"]).to_numpy()
    ab_pair = (subtype.eq("TRA+TRB") & pairing.isin(_AB_PAIRED)).to_numpy()
    gd_contig = subtype.str.contains("TRG|TRD", regex=True).to_numpy()
    if "airr" in airr.obsm:
        gd_contig = gd_contig | _gd_loci(airr).reindex(obs_names).fillna(False).to_numpy(bool)
    return has_tcr, ab_pair, gd_contig


def _gd_loci(airr) -> pd.Series:
    """Cells of ``airr`` with a productive TRG or TRD chain in ``obsm['airr']``."""
    import awkward as ak

    arr = airr.obsm["airr"]
    fields = set(ak.fields(arr))
    if "locus" not in fields:
        return pd.Series(False, index=airr.obs_names)
    locus = ak.fill_none(arr["locus"], "")
    hit = (locus == "TRG") | (locus == "TRD")
    if "productive" in fields:
        hit = hit & ak.fill_none(arr["productive"] == True, False)  # noqa: E712
    return pd.Series(ak.to_numpy(ak.any(hit, axis=1)), index=airr.obs_names)


def _library_rate(flag: np.ndarray, weight: np.ndarray, code: np.ndarray, n_lib: int,
                  ) -> np.ndarray:
    """Per-library weighted rate of ``flag`` (add-one smoothed)."""
    num = np.bincount(code, weights=weight * flag, minlength=n_lib)
    den = np.bincount(code, weights=weight, minlength=n_lib)
    return (num + 1.0) / (den + 2.0)


def fit_gd_share(gd_counts: np.ndarray, *, total: np.ndarray, n_iter: int = 200,
                 ) -> dict[str, object]:
    """Two-class binomial mixture of the γδ share ``gd_counts / total`` (module docstring).

    Returns
    -------
    dict
        ``p_ab``, ``p_gd``, ``prior`` (γδ) and per-cell ``llr`` (γδ vs αβ; 0 when
        ``total`` is 0).
    """
    k = np.asarray(gd_counts, dtype=float)
    n = np.asarray(total, dtype=float)
    r = np.where((n > 0) & (k >= GD_MIN_SHARE * n), 0.9, 0.01)
    p_ab, p_gd, prior = 0.01, 0.9, 0.01
    llr = np.zeros(len(k))
    for _ in range(n_iter):
        p_gd = float(np.clip(np.sum(r * k) / max(np.sum(r * n), 1e-12), GD_MIN_SHARE,
                             1 - 1e-6))
        p_ab = float(np.clip(np.sum((1 - r) * k) / max(np.sum((1 - r) * n), 1e-12), 1e-6,
                             0.5 * p_gd))
        new_prior = float(np.clip(r.mean(), 1e-4, 1 - 1e-4))
        llr = k * np.log(p_gd / p_ab) + (n - k) * np.log((1 - p_gd) / (1 - p_ab))
        r = expit(llr + np.log(new_prior / (1 - new_prior)))
        done = abs(new_prior - prior) < 1e-8
        prior = new_prior
        if done:
            break
    return {"p_ab": p_ab, "p_gd": p_gd, "prior": prior, "llr": llr}


def call_gd(
    gd_counts: np.ndarray,
    *,
    ab_constant_counts: np.ndarray,
    library: np.ndarray,
    has_tcr: np.ndarray,
    ab_pair: np.ndarray,
    gd_contig: np.ndarray,
    clone_id: pd.Series | np.ndarray | None = None,
    n_iter: int = 200,
) -> GdResult:
    """γδ posterior and call of every cell (module docstring).

    Parameters
    ----------
    gd_counts
        Summed UMIs of the γδ genes per cell.
    ab_constant_counts
        Summed UMIs of TRAC, TRBC1 and TRBC2 per cell.
    library
        Library (sample) of each cell.
    has_tcr, ab_pair, gd_contig
        :func:`tcr_evidence`.
    clone_id
        Clone of each cell: members of a clone (>= 2 cells) share one call, from the sum
        of their (clipped) log-likelihood ratios and the mean of their libraries' priors.
    n_iter
        EM iterations of the library fractions.

    Returns
    -------
    GdResult
        Posterior, call (posterior >= 0.5), each library's fitted γδ fraction and the
        share model (:func:`fit_gd_share`) and cohort prior.
    """
    c = np.asarray(gd_counts, dtype=float)
    total = c + np.asarray(ab_constant_counts, dtype=float)
    libs, code = np.unique(np.asarray(library, dtype=object).astype(str), return_inverse=True)
    n_lib = len(libs)
    fit = fit_gd_share(c, total=total)
    llr = fit["llr"]
    # αβ pairing rate of each library, from its cells without γδ UMIs
    tcr_lib = np.bincount(code, weights=has_tcr.astype(float), minlength=n_lib) > 0
    p_ab = _library_rate(ab_pair.astype(float), (c == 0).astype(float), code, n_lib)
    pair_llr = np.where(ab_pair, np.log(GD_AB_PAIR_RATE / p_ab[code]),
                        np.log((1 - GD_AB_PAIR_RATE) / (1 - p_ab[code])))
    llr = llr + np.where(tcr_lib[code], pair_llr, 0.0)
    gdc_lib = np.bincount(code, weights=gd_contig.astype(float), minlength=n_lib) > 0
    if gdc_lib.any():
        sure = expit(llr + np.log(fit["prior"] / (1 - fit["prior"])))
        use = gdc_lib[code]
        p_gd = (np.sum(sure * gd_contig * use) + 1) / (np.sum(sure * use) + 2)
        p_not = (np.sum((1 - sure) * gd_contig * use) + 1) / (np.sum((1 - sure) * use) + 2)
        contig_llr = np.where(gd_contig, np.log(p_gd / p_not), np.log((1 - p_gd) / (1 - p_not)))
        llr = llr + np.where(use, contig_llr, 0.0)
    cohort = float(np.clip(fit["prior"], 1e-4, 1 - 1e-4))
    frac = np.full(n_lib, cohort)
    n_cells = np.bincount(code, minlength=n_lib)
    for _ in range(n_iter):
        post = expit(llr + np.log(frac[code] / (1 - frac[code])))
        new = (np.bincount(code, weights=post, minlength=n_lib) + GD_LIBRARY_STRENGTH * cohort) / (
            n_cells + GD_LIBRARY_STRENGTH)
        new = np.clip(new, 1e-4, 1 - 1e-4)
        done = float(np.abs(new - frac).max()) < 1e-7
        frac = new
        if done:
            break
    post = expit(llr + np.log(frac[code] / (1 - frac[code])))
    if clone_id is not None:
        cpost, pooled = pool_by_clone(np.column_stack([np.zeros(len(llr)), llr]), clone_id=clone_id,
                                      prior=np.column_stack([1.0 - frac[code], frac[code]]))
        post = np.where(pooled, cpost[:, 1], post)
    is_gd = post >= 0.5
    model = {"share_ab": fit["p_ab"], "share_gd": fit["p_gd"], "cohort_prior": cohort,
             "n_called": int(is_gd.sum())}
    logger.info("gamma-delta: γδ share of TCR constant + γδ UMIs %.3g in αβ vs %.3g in γδ "
                "cells; %d cells (%.1f%%) called γδ; libraries with TRG/TRD contigs: %d",
                model["share_ab"], model["share_gd"], model["n_called"], 100 * is_gd.mean(),
                int(gdc_lib.sum()))
    return GdResult(post, is_gd, pd.Series(frac, index=pd.Index(libs, name="sample")), model)


def gd_counts_of(counts, var_names: pd.Index, genes: Sequence[str]) -> np.ndarray | None:
    """Summed UMIs of the γδ genes present in the data, or None when none is."""
    present = [g for g in genes if g in var_names]
    if not present:
        return None
    return gene_counts(counts, var_names, present)
