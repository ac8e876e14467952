"""The ``clonotypes`` workflow step: AIRR assembly, clonotypes, clusters, public flags."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import pandas as pd

from ._airr import concat_airr, read_qc_airr
from ._define import (
    DualIR,
    Metric,
    ReceptorArms,
    SequenceKind,
    call_clonotype_clusters,
    call_clonotypes,
    clone_table,
    flag_public,
    summarise_airr_obs,
)

log = logging.getLogger(__name__)


class ClusterSettings(TypedDict):
    """``clonotypes.clusters`` of the config: clusters of similar CDR3s."""

    enabled: bool
    metric: Metric
    sequence: SequenceKind
    cutoff: int | None


@dataclass(frozen=True)
class CohortClonotypes:
    """Outputs of :func:`cohort_clonotypes` (rule ``clonotypes``)."""

    #: AIRR AnnData of the QC-passing cells with obs ``clone_id``, ``clone_size``,
    #: ``clone_cluster_id``, ``clone_cluster_size`` and ``is_public``.
    airr: Any
    #: :func:`clone_table`: one row per clonotype.
    clonotypes: pd.DataFrame
    #: Public table of :func:`flag_public`: one row per shared CDR3 aa pair.
    public: pd.DataFrame


def cohort_clonotypes(
    h5mu: Sequence[str | os.PathLike],
    *,
    samples: Sequence[str],
    qc_samples: pd.DataFrame,
    receptor_arms: ReceptorArms,
    dual_ir: DualIR,
    sequence: SequenceKind,
    metric: Metric,
    cutoff: int | None,
    clusters: ClusterSettings,
    n_jobs: int = 1,
) -> CohortClonotypes:
    """Clonotypes, clonotype clusters and public clonotypes of the whole cohort.

    The AIRR data of the QC-passing cells of every library not excluded at QC are
    read (:func:`read_qc_airr`) and concatenated (:func:`concat_airr`); clonotypes
    are then called within each patient (:func:`call_clonotypes`), grouped into
    clusters (:func:`call_clonotype_clusters`, or one cluster per clonotype when
    ``clusters["enabled"]`` is false) and flagged public (:func:`flag_public`).

    Parameters
    ----------
    h5mu
        ``results/qc/{sample}.h5mu`` of the cohort's samples, in the order of ``samples``.
    samples
        Sample ids of ``h5mu`` (sample-sheet order, excluded samples left out).
    qc_samples
        ``results/tables/qc_samples.tsv``: samples excluded at QC are skipped.
    receptor_arms, dual_ir, sequence, metric, cutoff
        Clonotype definition, see :func:`call_clonotypes`.
    clusters
        ``enabled``, ``metric``, ``sequence``, ``cutoff`` of the clonotype
        clusters, see :func:`call_clonotype_clusters`.
    n_jobs
        Worker processes / threads for scirpy.

    Returns
    -------
    CohortClonotypes
        ``airr`` (the cohort's AIRR AnnData with clone annotations),
        ``clonotypes`` (:func:`clone_table` with a ``size_<sample>`` column per
        sample kept at QC) and ``public`` (the public CDR3 pairs).
    """
    from ...pp import included_samples

    included = set(included_samples(qc_samples))
    parts = []
    for sample, path in zip(samples, h5mu, strict=True):
        if sample not in included:
            log.info("%s: excluded by QC (qc_samples.tsv sample_excluded); skipped", sample)
            continue
        parts.append(read_qc_airr(path, sample=sample))
    return define_clonotypes(
        parts, samples=[s for s in samples if s in included], receptor_arms=receptor_arms,
        dual_ir=dual_ir, sequence=sequence, metric=metric, cutoff=cutoff, clusters=clusters,
        n_jobs=n_jobs)


def define_clonotypes(
    parts: Sequence[Any],
    *,
    samples: Sequence[str],
    receptor_arms: ReceptorArms,
    dual_ir: DualIR,
    sequence: SequenceKind,
    metric: Metric,
    cutoff: int | None,
    clusters: ClusterSettings,
    n_jobs: int = 1,
) -> CohortClonotypes:
    """Clonotypes, clusters and public flags of per-library AIRR AnnData objects (the
    part of :func:`cohort_clonotypes` after reading; also the published entry point's).

    Parameters
    ----------
    parts
        One AIRR AnnData per library (obs :data:`META_COLUMNS`; None: no TCR data).
    samples
        The libraries of the clone table's ``size_<sample>`` columns.
    receptor_arms, dual_ir, sequence, metric, cutoff, clusters, n_jobs
        As :func:`cohort_clonotypes`.

    Returns
    -------
    CohortClonotypes
        As :func:`cohort_clonotypes`.
    """
    adata = concat_airr(parts)
    common = dict(receptor_arms=receptor_arms, dual_ir=dual_ir, n_jobs=n_jobs)
    adata = call_clonotypes(adata, sequence=sequence, metric=metric, cutoff=cutoff, **common)
    if clusters["enabled"]:
        adata = call_clonotype_clusters(
            adata, metric=clusters["metric"], sequence=clusters["sequence"],
            cutoff=clusters["cutoff"], **common,
        )
    else:
        log.info("clonotype clusters disabled (clonotypes.clusters.enabled: false)")
        adata.obs["clone_cluster_id"] = adata.obs["clone_id"]
        adata.obs["clone_cluster_size"] = adata.obs["clone_size"]
    adata, public = flag_public(adata, receptor_arms=receptor_arms)
    log.info("clonotypes: %s", dict(summarise_airr_obs(adata)))
    table = clone_table(adata, samples=list(samples))
    return CohortClonotypes(airr=adata, clonotypes=table, public=public)
