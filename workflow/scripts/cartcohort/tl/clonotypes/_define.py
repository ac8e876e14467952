"""Clonotype definition with scirpy, within each patient, and public clonotypes.

Clonotypes are defined *within each patient*: the same CDR3 in two patients is two
clones. Clone ids are ``<patient>_<k>``, numbered by size (descending) then by
sequence, so the same cells always get the same ids whatever their input order.
A clonotype is public when its CDR3 amino-acid pair occurs in another patient.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from ...errors import CartCohortError
from ..._utils import load_scirpy

log = logging.getLogger(__name__)

#: Receptor arms compared (as scirpy's ``receptor_arms``).
ReceptorArms = Literal["VJ", "VDJ", "all", "any"]
#: Use of secondary chains (as scirpy's ``dual_ir``).
DualIR = Literal["primary_only", "all", "any"]
#: CDR3 sequence compared: nucleotides or amino acids.
SequenceKind = Literal["nt", "aa"]
#: Distance metrics of :func:`scirpy.pp.ir_dist`.
Metric = Literal[
    "identity", "levenshtein", "hamming", "normalized_hamming", "alignment",
    "fastalignment", "tcrdist",
]

_VALID_ARMS: tuple[str, ...] = get_args(ReceptorArms)
_VALID_DUAL: tuple[str, ...] = get_args(DualIR)


def _check_params(receptor_arms: str, dual_ir: str, sequence: str) -> None:
    problems = []
    if receptor_arms not in _VALID_ARMS:
        problems.append(f"receptor_arms={receptor_arms!r} (valid: {', '.join(_VALID_ARMS)})")
    if dual_ir not in _VALID_DUAL:
        problems.append(f"dual_ir={dual_ir!r} (valid: {', '.join(_VALID_DUAL)})")
    if sequence not in ("aa", "nt"):
        problems.append(f"sequence={sequence!r} (valid: aa, nt)")
    if problems:
        raise CartCohortError(
            "config clonotypes: invalid " + "; ".join(problems) + ". Fix: use a valid value."
        )


def _sequence_keys(adata: Any, *, sequence: str) -> pd.Series:
    """One string per cell: its junction sequences (VJ_1|VDJ_1|VJ_2|VDJ_2), for sorting."""
    ir = load_scirpy()

    col = "junction" if sequence == "nt" else "junction_aa"
    seqs = ir.get.airr(adata, col, ["VJ_1", "VDJ_1", "VJ_2", "VDJ_2"])
    seqs = seqs.astype(object).where(seqs.notna(), "")
    return seqs.astype(str).agg("|".join, axis=1)


def _renumber(
    raw: pd.Series, *, keys: pd.Series, patient: str, infix: str = ""
) -> pd.Series:
    """Map raw scirpy ids to ``<patient>_<infix><k>`` by size desc, then sequence key."""
    valid = raw.notna() & (raw.astype(str) != "nan")
    df = pd.DataFrame({"raw": raw[valid].astype(str), "key": keys[valid]})
    if df.empty:
        return pd.Series(pd.NA, index=raw.index, dtype=object)
    summary = df.groupby("raw", sort=False).agg(size=("key", "size"), key=("key", "min"))
    summary = summary.sort_values(["size", "key"], ascending=[False, True], kind="mergesort")
    mapping = {r: f"{patient}_{infix}{k}" for k, r in enumerate(summary.index, start=1)}
    out = pd.Series(pd.NA, index=raw.index, dtype=object)
    out[valid] = df["raw"].map(mapping)
    return out


def _has_ir(adata: Any) -> np.ndarray:
    import awkward as ak

    idx = adata.obsm["chain_indices"]
    return (
        ak.to_numpy(ak.count(idx["VJ"], axis=1)) + ak.to_numpy(ak.count(idx["VDJ"], axis=1))
    ) > 0


def _effective_arms(adata: Any, receptor_arms: str) -> str | None:
    """The arms to compare (None: nothing to compare).

    scirpy fails when an arm it is asked to compare has no chain at all (e.g. a
    cohort whose libraries only have TRB). With ``all``/``any`` and one arm absent
    everywhere, comparing the present arm alone gives the same clonotypes.
    """
    import awkward as ak

    idx = adata.obsm["chain_indices"]
    n = {arm: int(ak.sum(ak.count(idx[arm], axis=1))) for arm in ("VJ", "VDJ")}
    if receptor_arms in ("VJ", "VDJ"):
        if n[receptor_arms] == 0:
            log.warning("no %s chain in any cell: no clonotypes with receptor_arms=%s",
                        receptor_arms, receptor_arms)
            return None
        return receptor_arms
    if n["VJ"] == 0 or n["VDJ"] == 0:
        present = "VDJ" if n["VJ"] == 0 else "VJ"
        log.info("no %s chain in any cell; comparing %s chains only",
                 "VJ" if present == "VDJ" else "VDJ", present)
        return present
    return receptor_arms


def _patients(adata: Any, patient_key: str | None) -> pd.Series:
    if patient_key is None:
        return pd.Series("all", index=adata.obs_names)
    if patient_key not in adata.obs.columns:
        raise CartCohortError(
            f"AIRR obs lacks the patient column {patient_key!r}. Fix: add it before calling "
            "clonotypes."
        )
    pat = adata.obs[patient_key]
    if pat.isna().any():
        raise CartCohortError(
            f"{int(pat.isna().sum())} AIRR cells have no {patient_key!r}. Fix: give every "
            "library a patient in the sample sheet."
        )
    return pat.astype(str)


def _scirpy_groups(
    adata: Any,
    *,
    patient_key: str | None,
    receptor_arms: ReceptorArms,
    dual_ir: DualIR,
    sequence: SequenceKind,
    metric: Metric,
    cutoff: int | None,
    n_jobs: int,
    infix: str,
) -> pd.Series:
    """Run ir_dist + define_clonotype_clusters once, grouped within patient; renumber.

    One scirpy run over the whole cohort (``within_group`` = receptor type and
    patient) rather than one per patient: scirpy compiles its distance kernels
    at every call, which costs more than the cross-patient comparisons saved.
    """
    ir = load_scirpy()

    _check_params(receptor_arms, dual_ir, sequence)
    adata = adata.copy()
    if "chain_indices" not in adata.obsm:
        ir.pp.index_chains(adata)
    if "receptor_type" not in adata.obs.columns:
        ir.tl.chain_qc(adata)
    patients = _patients(adata, patient_key)
    out = pd.Series(pd.NA, index=adata.obs_names, dtype=object)
    has_ir = _has_ir(adata)
    if not has_ir.any():
        log.warning("no cell with a productive TCR chain: no clonotypes")
        return out
    sub = adata[has_ir].copy()
    arms = _effective_arms(sub, receptor_arms)
    if arms is None:
        return out
    sub.obs["_group"] = patients[sub.obs_names].to_numpy()
    ir.pp.ir_dist(sub, metric=metric, sequence=sequence, cutoff=cutoff, n_jobs=n_jobs)
    raw, _, _ = ir.tl.define_clonotype_clusters(
        sub,
        sequence=sequence,
        metric=metric,
        receptor_arms=arms,
        dual_ir=dual_ir,
        within_group=["receptor_type", "_group"],
        inplace=False,
        n_jobs=n_jobs,
    )
    raw = raw.reindex(sub.obs_names)
    keys = _sequence_keys(sub, sequence=sequence)
    sub_pat = sub.obs["_group"]
    for patient in sorted(sub_pat.unique()):
        cells = sub.obs_names[(sub_pat == patient).to_numpy()]
        out[cells] = _renumber(raw[cells], keys=keys[cells], patient=patient, infix=infix)
    return out


def call_clonotypes(
    adata: Any,
    *,
    patient_key: str | None = "patient",
    receptor_arms: ReceptorArms = "all",
    dual_ir: DualIR = "primary_only",
    sequence: SequenceKind = "nt",
    metric: Metric = "identity",
    cutoff: int | None = None,
    n_jobs: int = 1,
) -> Any:
    """Define clonotypes within each patient with scirpy.

    :func:`scirpy.pp.ir_dist` and :func:`scirpy.tl.define_clonotypes`-equivalent
    clustering are run with ``within_group`` = receptor type and patient, so a
    CDR3 shared by two patients never forms one clone. Raw scirpy ids are then
    renumbered ``<patient>_<k>``: ``k = 1`` is the largest clone, ties broken by
    the junction sequences (deterministic, independent of cell order).

    Parameters
    ----------
    adata
        scirpy AIRR AnnData (with or without ``chain_indices``; computed if absent).
    patient_key
        obs column with the patient; ``None`` treats all cells as one patient
        (ids then read ``all_<k>``).
    receptor_arms, dual_ir
        As in :func:`scirpy.tl.define_clonotypes` (default: both arms must match,
        primary chains only). The workflow passes ``dual_ir="any"``
        (``clonotypes.dual_ir``) because it calls clonotypes on QC-passing cells: a
        dual-alpha cell then joins its clone on either alpha (``primary_only`` split
        those clones, ARI 0.68 on them). On unfiltered data keep ``primary_only``:
        with ``any`` one doublet carrying two clones' chains merges both clones
        (ARI 0.28 on the unfiltered demo).
    sequence, metric, cutoff
        As in :func:`scirpy.pp.ir_dist` (default: CDR3 nucleotide identity).
    n_jobs
        Worker processes / threads for scirpy.

    Returns
    -------
    AnnData
        A copy of ``adata`` with obs ``clone_id`` (NA for cells without a
        productive chain) and ``clone_size`` (cells of the clone in ``adata``),
        plus ``receptor_type``, ``receptor_subtype``, ``chain_pairing``.
    """
    ir = load_scirpy()

    _check_params(receptor_arms, dual_ir, sequence)
    adata = adata.copy()
    if "chain_indices" not in adata.obsm:
        ir.pp.index_chains(adata)
    if "chain_pairing" not in adata.obs.columns:
        ir.tl.chain_qc(adata)
    clone_id = _scirpy_groups(
        adata, patient_key=patient_key, receptor_arms=receptor_arms, dual_ir=dual_ir,
        sequence=sequence, metric=metric, cutoff=cutoff, n_jobs=n_jobs, infix="",
    )
    adata.obs["clone_id"] = clone_id.astype(object)
    adata.obs["clone_size"] = pd.array(clone_id.map(clone_id.value_counts()), dtype="Int64")
    log.info("%d cells with a clone, %d clonotypes", int(clone_id.notna().sum()),
             clone_id.nunique())
    adata.uns["clonotypes"] = {
        "patient_key": str(patient_key),
        "receptor_arms": receptor_arms,
        "dual_ir": dual_ir,
        "sequence": sequence,
        "metric": metric,
        "cutoff": -1 if cutoff is None else int(cutoff),
    }
    return adata


def call_clonotype_clusters(
    adata: Any,
    *,
    patient_key: str | None = "patient",
    metric: Metric = "hamming",
    sequence: SequenceKind = "aa",
    cutoff: int | None = 1,
    receptor_arms: ReceptorArms = "all",
    dual_ir: DualIR = "primary_only",
    n_jobs: int = 1,
) -> Any:
    """Group clonotypes into clusters of similar CDR3s, within each patient.

    Runs :func:`scirpy.pp.ir_dist` with ``metric``/``sequence``/``cutoff`` and
    :func:`scirpy.tl.define_clonotype_clusters` (``within_group`` = receptor type
    and patient).

    Returns
    -------
    AnnData
        Copy with obs ``clone_cluster_id`` (``<patient>_cc<k>``, by size then
        sequence) and ``clone_cluster_size``.
    """
    adata = adata.copy()
    cluster = _scirpy_groups(
        adata, patient_key=patient_key, receptor_arms=receptor_arms, dual_ir=dual_ir,
        sequence=sequence, metric=metric, cutoff=cutoff, n_jobs=n_jobs, infix="cc",
    )
    adata.obs["clone_cluster_id"] = cluster.astype(object)
    adata.obs["clone_cluster_size"] = pd.array(
        cluster.map(cluster.value_counts()), dtype="Int64"
    )
    adata.uns["clonotype_clusters"] = {
        "metric": metric, "sequence": sequence, "cutoff": -1 if cutoff is None else int(cutoff),
    }
    return adata


def _public_keys(adata: Any, *, receptor_arms: ReceptorArms) -> pd.Series:
    """Per cell: the CDR3 aa of the arms that define identity ('VJ|VDJ'), NA if incomplete."""
    ir = load_scirpy()

    arms = {"VJ": ["VJ_1"], "VDJ": ["VDJ_1"]}.get(receptor_arms, ["VJ_1", "VDJ_1"])
    aa = ir.get.airr(adata, "junction_aa", arms)
    if isinstance(aa, pd.Series):
        aa = aa.to_frame()
    complete = aa.notna().all(axis=1) & adata.obs["clone_id"].notna().to_numpy()
    key = aa.astype(object).where(aa.notna(), "").astype(str).agg("|".join, axis=1)
    return key.where(complete)


def flag_public(
    adata: Any, *, patient_key: str = "patient", receptor_arms: ReceptorArms = "all"
) -> tuple[Any, pd.DataFrame]:
    """Flag clonotypes whose CDR3 amino-acid pair occurs in two or more patients.

    A cell's key is the CDR3 aa of its primary VJ and VDJ chains (only the arm
    used when ``receptor_arms`` is ``VJ`` or ``VDJ``); cells lacking an arm are
    never public. A clone is public when any of its cells' keys occurs in
    another patient.

    Returns
    -------
    (AnnData, DataFrame)
        Copy of ``adata`` with obs ``is_public`` (bool), and the public table: one
        row per CDR3 aa pair seen in two or more patients, with ``cdr3_aa_vj,
        cdr3_aa_vdj, n_patients, n_cells, patients, clone_ids`` (patients and
        clone ids comma-joined, sorted).
    """
    adata = adata.copy()
    key = _public_keys(adata, receptor_arms=receptor_arms)
    df = pd.DataFrame(
        {
            "key": key,
            "patient": adata.obs[patient_key].astype(str),
            "clone_id": adata.obs["clone_id"],
        }
    ).dropna(subset=["key"])
    n_pat = df.groupby("key")["patient"].nunique()
    public_keys = n_pat.index[n_pat >= 2]
    public_clones = set(df.loc[df["key"].isin(public_keys), "clone_id"])
    adata.obs["is_public"] = adata.obs["clone_id"].isin(public_clones).to_numpy(dtype=bool)
    pub = df[df["key"].isin(public_keys)]
    rows = []
    for k, grp in pub.groupby("key", sort=True):
        parts = k.split("|")
        vj, vdj = (parts + [""])[:2] if receptor_arms not in ("VJ", "VDJ") else (
            (parts[0], "") if receptor_arms == "VJ" else ("", parts[0])
        )
        rows.append(
            {
                "cdr3_aa_vj": vj or pd.NA,
                "cdr3_aa_vdj": vdj or pd.NA,
                "n_patients": grp["patient"].nunique(),
                "n_cells": len(grp),
                "patients": ",".join(sorted(grp["patient"].unique())),
                "clone_ids": ",".join(sorted(grp["clone_id"].unique())),
            }
        )
    table = pd.DataFrame(
        rows,
        columns=["cdr3_aa_vj", "cdr3_aa_vdj", "n_patients", "n_cells", "patients", "clone_ids"],
    )
    log.info("%d public CDR3 pairs, %d public clonotypes", len(table), len(public_clones))
    return adata, table


def _group_mode(df: pd.DataFrame, key: str, col: str) -> pd.Series:
    """Per ``key``: the most frequent non-missing ``col`` value, ties broken alphabetically."""
    sub = df[[key, col]].dropna()
    sub = sub.assign(**{col: sub[col].astype(str)})
    cnt = sub.groupby([key, col], sort=False, observed=True).size().rename("_n").reset_index()
    cnt = cnt.sort_values([key, "_n", col], ascending=[True, False, True], kind="mergesort")
    return cnt.drop_duplicates(key).set_index(key)[col]


def clone_table(adata: Any, *, samples: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per clonotype: chains, cluster, public flag and size per sample.

    Parameters
    ----------
    adata
        Output of :func:`call_clonotypes` (optionally also
        :func:`call_clonotype_clusters` and :func:`flag_public`).
    samples
        Samples to give a ``size_<sample>`` column (default: those in ``adata``).

    Returns
    -------
    DataFrame
        Columns ``clone_id, patient, clone_cluster_id, is_public,
        receptor_subtype, cdr3_aa_vj, cdr3_nt_vj, v_gene_vj, j_gene_vj,
        cdr3_aa_vdj, cdr3_nt_vdj, v_gene_vdj, j_gene_vdj, n_samples, size,
        size_<sample>...`` (primary chains; the most frequent value per clone).
    """
    ir = load_scirpy()

    chains = ir.get.airr(adata, ["junction_aa", "junction", "v_call", "j_call"], ["VJ_1", "VDJ_1"])
    rename = {}
    for arm, suffix in (("VJ_1", "vj"), ("VDJ_1", "vdj")):
        rename[f"{arm}_junction_aa"] = f"cdr3_aa_{suffix}"
        rename[f"{arm}_junction"] = f"cdr3_nt_{suffix}"
        rename[f"{arm}_v_call"] = f"v_gene_{suffix}"
        rename[f"{arm}_j_call"] = f"j_gene_{suffix}"
    chains = chains.rename(columns=rename)
    obs = adata.obs
    df = chains.assign(
        clone_id=obs["clone_id"].to_numpy(),
        patient=obs["patient"].astype(str).to_numpy() if "patient" in obs else "all",
        sample=obs["sample"].astype(str).to_numpy() if "sample" in obs else "all",
        receptor_subtype=obs["receptor_subtype"].astype(str).to_numpy(),
        clone_cluster_id=(
            obs["clone_cluster_id"].to_numpy() if "clone_cluster_id" in obs else pd.NA
        ),
        is_public=obs["is_public"].to_numpy() if "is_public" in obs else pd.NA,
    )
    df = df[df["clone_id"].notna()]
    chain_cols = list(rename.values())
    first = ["patient", "clone_cluster_id", "is_public", "receptor_subtype"]
    g = df.groupby("clone_id", sort=False)
    out = pd.DataFrame(index=pd.Index(df["clone_id"].unique(), name="clone_id"))
    for col in first + chain_cols:
        out[col] = _group_mode(df, "clone_id", col).reindex(out.index)
    out["is_public"] = out["is_public"].map(lambda v: v if pd.isna(v) else str(v) == "True")
    out["n_samples"] = g["sample"].nunique()
    out["size"] = g.size()
    if samples is None:
        samples = sorted(df["sample"].unique())
    per_sample = pd.crosstab(df["clone_id"], df["sample"]).reindex(
        columns=list(samples), fill_value=0
    )
    per_sample.columns = [f"size_{s}" for s in per_sample.columns]
    out = out.join(per_sample).fillna({c: 0 for c in per_sample.columns})
    out = out.reset_index()
    out["_k"] = out["clone_id"].str.rsplit("_", n=1).str[-1].astype(int)
    out = out.sort_values(["patient", "_k"], kind="mergesort").drop(columns="_k")
    return out.reset_index(drop=True)


def summarise_airr_obs(adata: Any) -> Mapping[str, int]:
    """Counts for the log: cells, cells with a clone, clones, public clones."""
    obs = adata.obs
    public = obs["is_public"].astype(bool) if "is_public" in obs else pd.Series(False, obs.index)
    return {
        "cells": int(adata.n_obs),
        "cells_with_clone": int(obs["clone_id"].notna().sum()),
        "clones": int(obs["clone_id"].nunique()),
        "public_clones": int(obs.loc[public, "clone_id"].nunique()),
    }

