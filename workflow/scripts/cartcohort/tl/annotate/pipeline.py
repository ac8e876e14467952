"""The annotation step: every call of :mod:`cartcohort.tl.annotate` on the integrated cohort.

Input is the integrated AnnData of QC-passing cells (``layers['counts']`` raw UMIs, ``X``
log-normalised, ``obsp['connectivities']`` kNN graph, ``obs['leiden']``) and the scirpy
AIRR AnnData with patient-scoped ``clone_id``. Every call is added to ``gex.obs``; final
calls (``cd4_cd8``, ``car_positive``) are clone-aware, the per-cell calls stay in
``cd4_cd8_cell`` and ``car_positive_cell``. No random numbers are drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ...errors import CartCohortError
from .car import CarMethod, annotate_car, car_counts, car_feature_mask, car_warnings
from .cohort import cells_table
from .gd import AB_CONSTANT_GENES, GdResult
from .lineage import LINEAGES, LineageResult, annotate_lineage, check_lineage_genes
from .summary import library_table
from .pooling import cell_clones, library_graph, neighbour_graph
from .signatures import Signatures, restrict_signatures
from .states import annotate_celltypist, annotate_markers, annotate_states

logger = logging.getLogger(__name__)


@dataclass
class AnnotationResult:
    """Output of :func:`annotate`.

    Attributes
    ----------
    gex
        Copy of the input with every call in ``obs`` and ``uns['annotation']``
        (signature version, states, settings and genes of each program).
    agreement
        Per sample and call (``cd4_cd8``, ``car_positive``): cells by per-cell call
        and final (clone-aware) call, ``n_cells``.
    signature_genes
        One row per program: genes listed and present, ``used``.
    car_models
        One row per sample: its CAR model (empty without a CAR feature).
    libraries
        One row per library: lineage and CAR+ fractions beside the naive rule's, and
        where the lineage calls came from (:func:`~.summary.library_table`).
    warnings
        Rows of ``warnings.tsv`` (:func:`~.car.car_warnings`).
    summary
        Fitted quantities for the provenance (lineage rho and priors, clone CAR
        parameters, checkpoint-marker fits) and the settings.
    cells
        The per-cell table of DESIGN.md (:func:`cells_table`).
    input_obsm
        ``obsm`` keys of the input (those not repeated in :attr:`calls`).
    """

    gex: ad.AnnData
    agreement: pd.DataFrame
    signature_genes: pd.DataFrame
    car_models: pd.DataFrame
    libraries: pd.DataFrame | None = None
    warnings: pd.DataFrame | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    cells: pd.DataFrame | None = None
    input_obsm: tuple[str, ...] = ()

    @property
    def calls(self) -> ad.AnnData:
        """The calls without the expression matrix (``results/annotate/calls.h5ad``):
        ``obs``, ``uns`` and the ``obsm`` entries annotation added."""
        calls = ad.AnnData(obs=self.gex.obs.copy(), uns=dict(self.gex.uns))
        for key in self.gex.obsm:
            if key not in self.input_obsm:
                calls.obsm[key] = self.gex.obsm[key]
        return calls


def _check_input(gex: ad.AnnData, *, airr: ad.AnnData | None, signatures: Signatures) -> None:
    problems = []
    if "counts" not in gex.layers:
        problems.append("layers['counts'] (raw UMI counts)")
    for col in ("sample", "patient"):
        if col not in gex.obs:
            problems.append(f"obs['{col}']")
    if problems:
        raise CartCohortError("the integrated AnnData lacks " + ", ".join(problems)
                              + ". Fix: re-run rule integrate on the QC'd libraries")
    logger.info("signatures %s (version %s): %s", signatures.source, signatures.version,
                signatures.state_ids)
    logger.info("%d cells, %d genes; %d cells with AIRR data", gex.n_obs, gex.n_vars,
                0 if airr is None else airr.n_obs)


def _raw_counts(gex: ad.AnnData) -> Any:
    counts = gex.layers["counts"]
    if sparse.issparse(counts):
        counts = sparse.csr_matrix(counts)
    return counts


def _contingency(sample: pd.Series, cell: pd.Series, final: pd.Series, call: str) -> pd.DataFrame:
    df = pd.DataFrame({"sample": sample.astype(str).to_numpy(),
                       "cell_call": cell.astype(str).to_numpy(),
                       "final_call": final.astype(str).to_numpy()})
    out = df.groupby(["sample", "cell_call", "final_call"], sort=True).size().rename("n_cells")
    out = out.reset_index()
    out.insert(1, "call", call)
    return out


def agreement_table(obs: pd.DataFrame, *, car: bool) -> pd.DataFrame:
    """Per-cell vs final (clone-aware) calls of lineage (and CAR when ``car``).

    Returns
    -------
    pandas.DataFrame
        ``sample, call, cell_call, final_call, n_cells``: one contingency table per
        sample and call.
    """
    agreement = [_contingency(obs["sample"], obs["cd4_cd8_cell"], obs["cd4_cd8"], "cd4_cd8")]
    if car:
        agreement.append(_contingency(obs["sample"], obs["car_positive_cell"],
                                      obs["car_positive"], "car_positive"))
    agreement_df = pd.concat(agreement, ignore_index=True)
    n_lin = int((obs["cd4_cd8_cell"].astype(str) != obs["cd4_cd8"].astype(str)).sum())
    logger.info("clone-aware lineage changed %d of %d per-cell calls", n_lin, len(obs))
    if car:
        cell_pos = obs["car_positive_cell"].astype(bool)
        final_pos = obs["car_positive"].astype(bool)
        gained = int((~cell_pos & final_pos).sum())
        lost = int((cell_pos & ~final_pos).sum())
        logger.info("clone-aware CAR: %d cells CAR- on their own evidence called CAR+, %d cells "
                    "CAR+ on their own evidence called CAR-", gained, lost)
    return agreement_df


def _record(gex: ad.AnnData, *, signatures: Signatures, used: Signatures, lin: LineageResult,
            gd: GdResult | None, clone_aware: bool, car_params: dict[str, float],
            marker_fits: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The summary of the fitted models; its settings and genes go to ``uns['annotation']``."""
    summary = {
        "signatures_version": used.version,
        "signatures_file": signatures.source,
        "states": used.state_ids,
        "lineage_prior": dict(zip(LINEAGES, map(float, lin.fit.prior))),
        "lineage_sources": {k: float((lin.source == k).mean())
                            for k in ("own", "neighbours", "clone", "gd")},
        "gd_model": {} if gd is None else gd.count_model,
        "clone_aware": clone_aware,
        "car_clone_params": {k: float(v) for k, v in car_params.items()},
        "markers": marker_fits,
        "params": params,
    }
    gex.uns["annotation"] = {
        **{k: v for k, v in summary.items() if k not in ("markers", "lineage_prior",
                                                          "car_clone_params", "params",
                                                          "lineage_sources", "gd_model")},
        "params": summary["params"],
        "signature_genes": {s.id: list(s.up) for s in used.states},
        "signature_down_genes": {s.id: list(s.down) for s in used.states},
    }
    return summary


_SETTINGS: tuple[str, ...] = (
    "min_state_score", "min_confidence_margin", "cluster_consensus", "car_method",
    "car_min_umis", "car_fdr", "car_population_alpha", "car_sorted_patterns",
    "car_sorted_prior", "smoothing", "down_weight", "sd_floor", "clone_aware")


def _settings(values: dict[str, Any]) -> dict[str, Any]:
    """The settings of :func:`annotate` recorded in ``uns['annotation']['params']``."""
    out = {k: values[k] for k in _SETTINGS}
    out["car_sorted_patterns"] = list(out["car_sorted_patterns"])
    for k in ("min_state_score", "min_confidence_margin", "car_fdr", "car_population_alpha",
              "car_sorted_prior", "smoothing", "down_weight", "sd_floor"):
        out[k] = float(out[k])
    for k in ("cluster_consensus", "clone_aware"):
        out[k] = bool(out[k])
    out["car_min_umis"] = int(out["car_min_umis"])
    return out


def _cells(gex: ad.AnnData) -> pd.DataFrame:
    cells = cells_table(gex)
    logger.info("states: %s", cells["state"].value_counts().to_dict())
    logger.info("lineage: %s", cells["cd4_cd8"].value_counts().to_dict())
    return cells


def annotation_genes(signatures: Signatures, *, car_features: Sequence[str],
                     celltypist_model: str | None = "") -> Callable[[pd.DataFrame], np.ndarray]:
    """The genes :func:`annotate` reads, as a mask function of a ``var`` table (for
    :func:`cartcohort.tl.integrate.read_integrated_genes`).

    They are the genes of the state programs (up and down), the lineage, program and γδ
    lists, the exhaustion markers, the αβ constant genes and the CAR features. A
    celltypist model needs every gene: then every gene is read.

    Parameters
    ----------
    signatures
        The signature file.
    car_features, celltypist_model
        As :func:`annotate`.

    Returns
    -------
    callable
        ``var`` -> boolean mask of its rows.
    """
    wanted = {g for st in signatures.states for g in (*st.up, *st.down)}
    wanted |= {g for genes in signatures.lineage.values() for g in genes}
    wanted |= set(signatures.exhaustion_markers.values()) | set(AB_CONSTANT_GENES)

    def mask(var: pd.DataFrame) -> np.ndarray:
        if celltypist_model:
            return np.ones(len(var), dtype=bool)
        car = car_feature_mask(ad.AnnData(var=var), car_features=car_features)
        return var.index.isin(sorted(wanted)) | car

    return mask


def annotate(
    gex: ad.AnnData, *, airr: ad.AnnData | None, signatures: Signatures,
    car_features: Sequence[str], min_state_score: float = 0.0,
    min_confidence_margin: float = 0.05, cluster_consensus: bool = False,
    car_method: CarMethod = "mixture", car_min_umis: int = 1, car_fdr: float = 0.1,
    car_population_alpha: float = 1e-3, car_sorted_patterns: Sequence[str] = ("CAR+", "CAT+"),
    car_sorted_prior: float = 0.9, clone_aware: bool = True,
    smoothing: float = 0.25, down_weight: float = 0.5, sd_floor: float = 0.5,
    celltypist_model: str | None = "", counts_total: np.ndarray | None = None,
    car_clone_dropout: float | None = None, n_neighbors: int = 15, seed: int = 0,
) -> AnnotationResult:
    """Run every annotation step and add the calls to a copy of ``gex.obs``.

    Parameters
    ----------
    gex
        Integrated AnnData (see module docstring).
    airr
        scirpy AIRR AnnData with ``obs['clone_id']`` (and ``clone_size``); None without TCR.
    signatures
        Validated marker programs (:func:`~.signatures.load_signatures`).
    car_features
        ``config['car_features']``; with ``var['is_car']`` defines the CAR features.
    min_state_score, min_confidence_margin, cluster_consensus
        State-call thresholds (:func:`~.states.call_states`, ``cluster_consensus_states``).
    car_method, car_min_umis, car_fdr, car_population_alpha
        Per-cell CAR rule, its expected false-discovery rate and the level of each unsorted
        library's test for CAR+ cells (:func:`~.car.call_car_cells`).
    car_sorted_patterns, car_sorted_prior
        CAR-sorted libraries and their prior CAR+ fraction (:func:`~.car.annotate_car`).
    clone_aware
        Pool clone members for the final lineage and CAR calls.
    smoothing, down_weight, sd_floor
        State scores (:func:`~.states.score_states`): neighbour weight of the expression
        smoothing, weight of the ``down`` genes, floor (log units) on the per-gene SD.
    celltypist_model, counts_total, car_clone_dropout
        Celltypist model path (empty or None: skipped); total counts per cell when ``gex``
        holds some genes (:func:`annotation_genes`); a frozen clone CAR dropout (``car``).
    n_neighbors, seed
        Each library's own kNN graph (:func:`~.pooling.library_graph`), pooled over by the
        lineage and checkpoint calls (the states smooth over ``obsp['connectivities']``).

    Returns
    -------
    AnnotationResult
        The annotated copy, the cell table, the calls without the matrix and the tables.
    """
    _check_input(gex, airr=airr, signatures=signatures)
    input_obsm, gex = tuple(gex.obsm), gex.copy()
    graph, counts = neighbour_graph(gex), _raw_counts(gex)
    own_graph = library_graph(gex, n_neighbors=n_neighbors, seed=seed)  # per-sample calls
    car_mask, car_umis, library = car_counts(gex, counts, car_features=car_features,
                                             total=counts_total)
    clone, clone_size = cell_clones(gex.obs_names, airr)
    clone_aware_used = bool(clone_aware) and clone.notna().any()
    sig, sig_genes = restrict_signatures(signatures, genes=gex.var_names)
    check_lineage_genes(signatures, var_names=gex.var_names)
    lin, gd = annotate_lineage(gex, counts, signatures=signatures, library_size=library, airr=airr,
                               graph=own_graph, clone_id=clone, clone_aware=clone_aware_used)
    car_models, car_params = annotate_car(
        gex, car_umis, car_mask=car_mask, car_features=car_features, library_size=library,
        clone_id=clone, clone_aware=clone_aware_used, method=car_method, min_umis=car_min_umis,
        sorted_patterns=car_sorted_patterns, sorted_prior=car_sorted_prior, fdr=car_fdr,
        population_alpha=car_population_alpha, clone_dropout=car_clone_dropout)
    marker_fits = annotate_markers(gex, counts, signatures=signatures, library_size=library,
                                   graph=own_graph)
    annotate_states(gex, signatures=sig, graph=graph, smoothing=smoothing, down_weight=down_weight,
                    sd_floor=sd_floor, min_state_score=min_state_score,
                    min_confidence_margin=min_confidence_margin, cluster_consensus=cluster_consensus)
    gex.obs["clone_id"] = pd.Categorical(clone.to_numpy(dtype=object))
    gex.obs["clone_size"] = clone_size.to_numpy()
    annotate_celltypist(gex, model_path=celltypist_model)
    agreement = agreement_table(gex.obs, car=bool(car_mask.any()))
    summary = _record(gex, signatures=signatures, used=sig, lin=lin, gd=gd, params=_settings(locals()),
                      clone_aware=clone_aware_used, car_params=car_params, marker_fits=marker_fits)
    return AnnotationResult(gex=gex, agreement=agreement, signature_genes=sig_genes,
                            car_models=car_models, libraries=library_table(gex.obs, car_models),
                            warnings=car_warnings(car_models), summary=summary,
                            cells=_cells(gex), input_obsm=input_obsm)
