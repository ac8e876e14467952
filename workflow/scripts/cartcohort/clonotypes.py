"""Clonotypes and repertoire dynamics.

Two halves:

* **Clonotype calling** on scirpy AIRR AnnData (:func:`collect_qc_airr`,
  :func:`call_clonotypes`, :func:`call_clonotype_clusters`, :func:`flag_public`,
  :func:`clone_table`, :func:`public_clonotype_table`). Clonotypes are defined
  *within each patient*: the same CDR3 in two patients is two clones. Clone ids
  are ``<patient>_<k>``, numbered by size (descending) then by sequence, so the
  same cells always get the same ids whatever their input order.
* **Repertoire metrics** on the per-cell table ``cells.tsv.gz``
  (:func:`diversity_indices`, :func:`rarefied_diversity`,
  :func:`repertoire_by_sample`, :func:`persistence_by_sample`,
  :func:`track_clones`, :func:`clone_states`, :func:`repertoire_tables`):
  expansion, diversity rarefied to a common depth with bootstrap intervals,
  overlap with the infusion product and persistence of product clones.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._scirpy import load_scirpy
from .errors import CartCohortError

log = logging.getLogger(__name__)

#: obs columns copied from ``gex.obs`` onto the AIRR cells.
META_COLUMNS: tuple[str, ...] = ("patient", "sample", "timepoint", "timepoint_day")
#: expansion categories: label -> (min, max) clone size within a sample (inclusive).
EXPANSION_CATEGORIES: dict[str, tuple[int, float]] = {
    "1": (1, 1),
    "2": (2, 2),
    "3_10": (3, 10),
    "gt10": (11, np.inf),
}
DIVERSITY_INDICES: tuple[str, ...] = ("richness", "shannon", "pielou", "gini_simpson", "gini")
_VALID_ARMS = ("VJ", "VDJ", "all", "any")
_VALID_DUAL = ("primary_only", "all", "any")


# ----------------------------------------------------------------------------------------
# collecting AIRR cells of the cohort
# ----------------------------------------------------------------------------------------


def read_qc_airr(path: str | Path, *, sample: str) -> Any | None:
    """Read the ``airr`` modality and ``gex.obs`` of one QC'd library.

    Only the AIRR modality and the GEX ``obs`` table are read (not the count
    matrix), which keeps memory low for large cohorts.

    Parameters
    ----------
    path
        ``results/qc/{sample}.h5mu``.
    sample
        Sample id (for messages).

    Returns
    -------
    AnnData or None
        AIRR AnnData of the QC-passing cells with TCR (see :func:`select_qc_cells`),
        or ``None`` when the library has no ``airr`` modality.
    """
    import anndata as ad
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as f:
        if "mod" not in f or "gex" not in f["mod"]:
            raise CartCohortError(
                f"{path}: no 'gex' modality. Fix: re-run the qc_sample rule for {sample}."
            )
        gex_obs = ad.io.read_elem(f["mod/gex/obs"])
        if "airr" not in f["mod"]:
            log.info("%s: no airr modality (library without TCR); skipped", sample)
            return None
        g = f["mod/airr"]
        airr = ad.AnnData(
            obs=ad.io.read_elem(g["obs"]),
            obsm={k: ad.io.read_elem(g["obsm"][k]) for k in g.get("obsm", {}).keys()},
            uns=ad.io.read_elem(g["uns"]) if "uns" in g else {},
        )
    return select_qc_cells(airr, gex_obs=gex_obs, sample=sample, source=str(path))


def select_qc_cells(
    airr: Any, *, gex_obs: pd.DataFrame, sample: str, source: str = "<memory>"
) -> Any:
    """Keep the QC-passing cells of one library's AIRR data and add metadata.

    Parameters
    ----------
    airr
        scirpy AIRR AnnData of one library (obs names ``<sample>_<barcode>``).
    gex_obs
        ``gex.obs`` of the same library with ``qc_pass`` and the
        :data:`META_COLUMNS`.
    sample
        Sample id.
    source
        File name used in error messages.

    Returns
    -------
    AnnData
        Copy of ``airr`` restricted to cells with ``qc_pass`` True, with obs
        columns ``patient, sample, timepoint, timepoint_day``.
    """
    missing = [c for c in ("qc_pass", *META_COLUMNS) if c not in gex_obs.columns]
    if missing:
        raise CartCohortError(
            f"{source}: gex.obs lacks column(s) {missing}. Fix: re-run qc_sample for {sample} "
            "with the current workflow version."
        )
    unknown = airr.obs_names.difference(gex_obs.index)
    if len(unknown) and len(unknown) == airr.n_obs:
        raise CartCohortError(
            f"{source}: none of the {airr.n_obs} airr cells is a gex cell (e.g. "
            f"{unknown[0]!r} vs {gex_obs.index[0] if len(gex_obs) else None!r}); the airr obs "
            "names must be '<sample>_<barcode>' of GEX cells. Fix: re-run load_sample and "
            f"qc_sample for {sample}."
        )
    if len(unknown):
        log.warning("%s: %d of %d TCR barcodes are not GEX cells (e.g. %s); left out",
                    sample, len(unknown), airr.n_obs, unknown[0])
        airr = airr[airr.obs_names.isin(gex_obs.index)]
    qc_pass = gex_obs["qc_pass"].astype(bool)
    keep = airr.obs_names[qc_pass.reindex(airr.obs_names).to_numpy()]
    out = airr[keep].copy()
    # chain indices / chain QC are recomputed on the cohort; keep only the AIRR data
    for key in [k for k in out.obsm.keys() if k != "airr"]:
        del out.obsm[key]
    out.obs = out.obs.drop(
        columns=[c for c in ("receptor_type", "receptor_subtype", "chain_pairing", *META_COLUMNS)
                 if c in out.obs.columns]
    )
    out.uns = {k: v for k, v in out.uns.items() if k == "scirpy_version"}
    meta = gex_obs.loc[keep, list(META_COLUMNS)]
    for col in META_COLUMNS:
        out.obs[col] = meta[col].to_numpy()
    out.obs["timepoint_day"] = pd.to_numeric(out.obs["timepoint_day"], errors="coerce").astype(
        float
    )
    for col in ("patient", "sample", "timepoint"):
        out.obs[col] = out.obs[col].astype(str)
    log.info("%s: %d of %d TCR cells pass QC", sample, out.n_obs, airr.n_obs)
    return out


def _unify_values(values: list) -> list:
    """Make one AIRR field's values a single type (None kept) so awkward needs no union."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds or kinds <= {str} or kinds <= {bool} or kinds <= {int}:
        return values
    if kinds <= {int, float}:
        return [None if v is None else float(v) for v in values]
    return [None if v is None else str(v) for v in values]


def merge_airr_arrays(arrays: Sequence[Any]) -> Any:
    """Concatenate per-library AIRR awkward arrays (cells x chains x fields) into one.

    Libraries read by different readers (10x CSV, AIRR TSV, ...) carry different
    fields and types (e.g. ``?unknown`` vs ``?string``); concatenating them as
    they are gives awkward union types that scirpy cannot index. Here every
    field of any library is kept, missing fields are filled with None and each
    field gets one type (ints+floats -> float, mixed others -> string).
    """
    import awkward as ak

    flats = [ak.flatten(a, axis=1) for a in arrays]
    counts = np.concatenate([ak.to_numpy(ak.num(a, axis=1)) for a in arrays])
    fields = sorted({f for fl in flats for f in ak.fields(fl)})
    columns = {}
    for field in fields:
        pieces = [
            fl[field] if field in ak.fields(fl) else ak.Array([None] * len(fl)) for fl in flats
        ]
        merged = ak.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        if "union" in str(ak.type(merged)):  # incompatible types: unify value by value
            values = [v for piece in pieces for v in ak.to_list(piece)]
            merged = ak.from_iter(_unify_values(values), highlevel=True)
        columns[field] = merged
    if not fields:
        raise CartCohortError("AIRR data without any chain field")
    records = ak.zip(columns, depth_limit=1)
    return ak.unflatten(records, counts)


def concat_airr(parts: Sequence[Any]) -> Any:
    """Concatenate per-library AIRR AnnData objects (obs names must be unique).

    The AIRR arrays are merged with :func:`merge_airr_arrays`; obs columns are
    joined (outer). Chain indices are (re)computed with
    :func:`scirpy.pp.index_chains` and chain QC (``receptor_type``,
    ``receptor_subtype``, ``chain_pairing``) with :func:`scirpy.tl.chain_qc`.
    """
    import anndata as ad
    ir = load_scirpy()

    parts = [p for p in parts if p is not None and p.n_obs > 0]
    if not parts:
        raise CartCohortError(
            "no QC-passing cell with TCR data in any library. Fix: check the 'vdj' column of "
            "the sample sheet and results/tables/qc_samples.tsv."
        )
    obs = pd.concat([p.obs for p in parts], join="outer")
    if not obs.index.is_unique:
        dup = obs.index[obs.index.duplicated()][0]
        raise CartCohortError(
            f"cell id {dup!r} occurs in two libraries. Fix: make sample ids unique in the sheet."
        )
    for col in obs.columns:
        if obs[col].dtype == object:
            obs[col] = obs[col].astype(str).where(obs[col].notna())
    obs = obs.drop(columns=[c for c in ("receptor_type", "receptor_subtype", "chain_pairing")
                            if c in obs.columns])
    airr = merge_airr_arrays([p.obsm["airr"] for p in parts])
    adata = ad.AnnData(obs=obs, obsm={"airr": airr},
                       uns={"scirpy_version": ir.__version__})
    ir.pp.index_chains(adata)
    ir.tl.chain_qc(adata)
    return adata


# ----------------------------------------------------------------------------------------
# clonotype calling
# ----------------------------------------------------------------------------------------


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
    receptor_arms: str,
    dual_ir: str,
    sequence: str,
    metric: str,
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
    receptor_arms: str = "all",
    dual_ir: str = "primary_only",
    sequence: str = "nt",
    metric: str = "identity",
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
    metric: str = "hamming",
    sequence: str = "aa",
    cutoff: int | None = 1,
    receptor_arms: str = "all",
    dual_ir: str = "primary_only",
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


def _public_keys(adata: Any, *, receptor_arms: str) -> pd.Series:
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
    adata: Any, *, patient_key: str = "patient", receptor_arms: str = "all"
) -> tuple[Any, pd.DataFrame]:
    """Flag clonotypes whose CDR3 amino-acid pair occurs in two or more patients.

    A cell's key is the CDR3 aa of its primary VJ and VDJ chains (only the arm
    used when ``receptor_arms`` is ``VJ`` or ``VDJ``); cells lacking an arm are
    never public. A clone is public when any of its cells' keys occurs in
    another patient.

    Returns
    -------
    (AnnData, DataFrame)
        Copy of ``adata`` with obs ``is_public`` (bool) and the public table of
        :func:`public_clonotype_table`.
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


# ----------------------------------------------------------------------------------------
# diversity
# ----------------------------------------------------------------------------------------


def _as_counts(counts: Any) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.ndim != 1:
        raise CartCohortError(f"clone counts must be one-dimensional, got shape {arr.shape}")
    if arr.size and (np.any(arr < 0) or np.any(arr != np.round(arr))):
        raise CartCohortError("clone counts must be non-negative integers")
    return arr[arr > 0].astype(np.int64)


def _indices_matrix(m: np.ndarray) -> dict[str, np.ndarray]:
    """Diversity indices of each row of a (draws x clones) count matrix."""
    m = np.asarray(m, dtype=float)
    n = m.sum(axis=1)
    p = m / n[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
    shannon = -(p * logp).sum(axis=1)
    richness = (m > 0).sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        pielou = np.where(richness > 1, shannon / np.log(np.maximum(richness, 2)), 0.0)
    gini_simpson = 1.0 - (p**2).sum(axis=1)
    # Gini coefficient of the observed clone sizes (zeros = unobserved, left out)
    s = np.sort(m, axis=1)
    nz = s > 0
    rank = np.cumsum(nz, axis=1) * nz  # 1..S over the non-zero sizes, ascending
    num = 2.0 * (rank * s).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        gini = num / (richness * n) - (richness + 1.0) / richness
    gini = np.where(richness > 0, gini, np.nan)
    return {
        "richness": richness,
        "shannon": shannon,
        "pielou": pielou,
        "gini_simpson": gini_simpson,
        "gini": np.clip(gini, 0.0, 1.0),
    }


def diversity_indices(counts: Any) -> dict[str, float]:
    """Diversity of one repertoire given its clone sizes.

    Parameters
    ----------
    counts
        Cells per clone (zeros ignored).

    Returns
    -------
    dict
        ``richness`` (number of clones), ``shannon`` (natural log),
        ``pielou`` (Shannon / ln(richness); 0 for a single clone),
        ``gini_simpson`` (1 - sum p^2) and ``gini`` (Gini coefficient of the clone
        sizes: 0 = all clones the same size, towards 1 = one clone dominates).
        All NaN when there are no cells.
    """
    arr = _as_counts(counts)
    if arr.sum() == 0:
        return {k: float("nan") for k in DIVERSITY_INDICES}
    return {k: float(v[0]) for k, v in _indices_matrix(arr[None, :]).items()}


def _bounds(name: str, depth: int) -> tuple[float, float]:
    return {
        "richness": (1.0, float(depth)),
        "shannon": (0.0, float(np.log(depth))),
        "pielou": (0.0, 1.0),
        "gini_simpson": (0.0, 1.0 - 1.0 / depth),
        "gini": (0.0, 1.0),
    }[name]


def rarefied_diversity(
    counts: Any,
    *,
    depth: int,
    n_bootstrap: int = 200,
    seed: int | np.random.SeedSequence = 0,
    ci: float = 0.95,
) -> dict[str, float]:
    """Diversity rarefied to ``depth`` cells, with a bootstrap confidence interval.

    * Value: mean of each index over ``n_bootstrap`` random subsamples of
      ``depth`` cells drawn **without** replacement from the repertoire
      (classical rarefaction: what a library of ``depth`` cells would show).
    * Interval: value ± z·sd, where sd is the standard deviation of the index
      over ``n_bootstrap`` bootstrap samples of ``depth`` cells drawn **with**
      replacement from the observed clone frequencies (the sampling variability
      of a ``depth``-cell sample; centred on the value as in iNEXT so that the
      bootstrap's loss of singletons does not shift it), clipped to the range
      the index can take at that depth. Intervals narrow as ``depth`` grows.

    Parameters
    ----------
    counts
        Cells per clone.
    depth
        Cells per subsample; must not exceed ``sum(counts)``.
    n_bootstrap
        Number of subsamples and of bootstrap samples.
    seed
        Seed of the random generator.
    ci
        Confidence level of the interval.

    Returns
    -------
    dict
        For each index in :data:`DIVERSITY_INDICES`: ``<index>``,
        ``<index>_ci_low``, ``<index>_ci_high``.
    """
    from scipy.stats import norm

    arr = _as_counts(counts)
    total = int(arr.sum())
    depth = int(depth)
    if depth < 1 or depth > total:
        raise CartCohortError(
            f"rarefaction depth {depth} must be between 1 and the number of cells ({total})"
        )
    if n_bootstrap < 2:
        raise CartCohortError(f"n_bootstrap must be at least 2, got {n_bootstrap}")
    rng = np.random.default_rng(seed)
    if depth == total:
        sub = np.tile(arr, (1, 1))
    else:
        sub = rng.multivariate_hypergeometric(arr, depth, size=n_bootstrap)
    boot = rng.multinomial(depth, arr / total, size=n_bootstrap)
    point = _indices_matrix(sub)
    spread = _indices_matrix(boot)
    z = float(norm.ppf(0.5 + ci / 2.0))
    out: dict[str, float] = {}
    for name in DIVERSITY_INDICES:
        value = float(np.mean(point[name]))
        sd = float(np.std(spread[name], ddof=1))
        lo_b, hi_b = _bounds(name, depth)
        out[name] = value
        out[f"{name}_ci_low"] = float(np.clip(value - z * sd, lo_b, hi_b))
        out[f"{name}_ci_high"] = float(np.clip(value + z * sd, lo_b, hi_b))
    return out


def choose_depth(
    n_cells: pd.Series, *, depth: int | str = "auto", min_cells: int = 50
) -> int | None:
    """Rarefaction depth shared by all samples.

    Parameters
    ----------
    n_cells
        Cells with a clone id per sample.
    depth
        ``"auto"`` (smallest sample with at least ``min_cells`` cells) or an int.
    min_cells
        Samples below this are not considered for ``"auto"``.

    Returns
    -------
    int or None
        None when ``auto`` finds no sample with ``min_cells`` cells.
    """
    if isinstance(depth, str):
        if depth != "auto":
            raise CartCohortError(
                f"config clonotypes.rarefaction_depth={depth!r}. Fix: use 'auto' or an integer."
            )
        eligible = n_cells[n_cells >= min_cells]
        if eligible.empty:
            log.warning("no sample has >= %d cells with TCR; rarefied diversity left NA",
                        min_cells)
            return None
        return int(eligible.min())
    if int(depth) < 1:
        raise CartCohortError(
            f"config clonotypes.rarefaction_depth={depth}. Fix: use 'auto' or an integer >= 1."
        )
    return int(depth)


def _sample_seed(seed: int, sample: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), zlib.crc32(str(sample).encode())])


# ----------------------------------------------------------------------------------------
# per-sample repertoire metrics
# ----------------------------------------------------------------------------------------

_REQUIRED = ("cell", "sample", "patient", "timepoint", "timepoint_day", "clone_id")


def _check_cells(cells: pd.DataFrame, extra: Sequence[str] = ()) -> None:
    missing = [c for c in (*_REQUIRED, *extra) if c not in cells.columns]
    if missing:
        raise CartCohortError(
            f"results/tables/cells.tsv.gz lacks column(s) {missing}. Fix: re-run the annotate "
            "rule with the current workflow version."
        )


def _sample_meta(cells: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("patient", "timepoint", "timepoint_day", "compartment") if c in cells]
    meta = cells.groupby("sample", sort=True)[cols].first()
    meta["n_cells"] = cells.groupby("sample", sort=True).size()
    return meta


def repertoire_by_sample(
    cells: pd.DataFrame,
    *,
    depth: int | str = "auto",
    min_cells: int = 50,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """Clonal expansion and diversity of each sample.

    Clone sizes are counted within the sample (cells with a ``clone_id``).

    Parameters
    ----------
    cells
        One row per QC-passing cell (``cells.tsv.gz``).
    depth, min_cells
        Rarefaction depth (see :func:`choose_depth`).
    n_bootstrap, seed
        For :func:`rarefied_diversity`; each sample's generator is seeded from
        ``seed`` and the sample id, so results do not depend on sample order.

    Returns
    -------
    DataFrame
        One row per sample: ``sample, patient, timepoint, timepoint_day,
        compartment, n_cells, n_cells_tcr, frac_tcr, n_clones, max_clone_size,
        n_clones_size_{1,2,3_10,gt10}, frac_cells_size_{1,2,3_10,gt10},
        frac_expanded, top1_fraction, top10_fraction``, unrarefied
        ``<index>`` and rarefied ``rarefied_<index>[_ci_low|_ci_high]`` for each
        index of :data:`DIVERSITY_INDICES`, ``rarefaction_depth`` and
        ``rarefaction_note`` (why a sample has no rarefied values).
    """
    _check_cells(cells)
    meta = _sample_meta(cells)
    tcr = cells[cells["clone_id"].notna()]
    sizes = {s: g.value_counts().sort_values(ascending=False, kind="mergesort")
             for s, g in tcr.groupby("sample", sort=True)["clone_id"]}
    n_tcr = pd.Series({s: int(sizes[s].sum()) if s in sizes else 0 for s in meta.index})
    d = choose_depth(n_tcr, depth=depth, min_cells=min_cells)
    rows = []
    for sample in meta.index:
        row: dict[str, Any] = {"sample": sample, **meta.loc[sample].to_dict()}
        counts = sizes.get(sample, pd.Series(dtype=int)).to_numpy()
        n = int(counts.sum())
        row["n_cells_tcr"] = n
        row["frac_tcr"] = n / row["n_cells"] if row["n_cells"] else np.nan
        row["n_clones"] = len(counts)
        row["max_clone_size"] = int(counts.max()) if n else np.nan
        for label, (lo, hi) in EXPANSION_CATEGORIES.items():
            in_cat = (counts >= lo) & (counts <= hi)
            row[f"n_clones_size_{label}"] = int(in_cat.sum())
            row[f"frac_cells_size_{label}"] = counts[in_cat].sum() / n if n else np.nan
        row["frac_expanded"] = counts[counts >= 2].sum() / n if n else np.nan
        row["top1_fraction"] = counts[:1].sum() / n if n else np.nan
        row["top10_fraction"] = counts[:10].sum() / n if n else np.nan
        row.update(diversity_indices(counts))
        row["rarefaction_depth"] = d if d is not None else np.nan
        note = ""
        if n == 0:
            note = "no cells with TCR"
        elif d is None:
            note = f"no sample has >= {min_cells} cells with TCR (clonotypes.rarefaction_min_cells)"
        elif n < d:
            note = f"{n} cells with TCR < rarefaction depth {d}"
        if note:
            rare = {f"{k}{s}": np.nan for k in DIVERSITY_INDICES for s in ("", "_ci_low",
                                                                              "_ci_high")}
            log.info("sample %s: rarefied diversity NA: %s", sample, note)
        else:
            rare = rarefied_diversity(
                counts, depth=d, n_bootstrap=n_bootstrap, seed=_sample_seed(seed, sample)
            )
        row.update({f"rarefied_{k}": v for k, v in rare.items()})
        row["rarefaction_note"] = note or pd.NA
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------
# overlap and persistence
# ----------------------------------------------------------------------------------------


def jaccard(a: pd.Series, b: pd.Series) -> float:
    """Jaccard index of the clone sets of two repertoires (clone -> cells); NaN if both empty."""
    sa, sb = set(a.index[a > 0]), set(b.index[b > 0])
    union = sa | sb
    return len(sa & sb) / len(union) if union else float("nan")


def morisita_horn(x: pd.Series, y: pd.Series) -> float:
    """Morisita–Horn overlap of two repertoires (clone -> cells).

    1 for identical clone frequencies, 0 for no shared clone; NaN if either is empty.
    """
    idx = x.index.union(y.index)
    xv = x.reindex(idx, fill_value=0).to_numpy(dtype=float)
    yv = y.reindex(idx, fill_value=0).to_numpy(dtype=float)
    nx, ny = xv.sum(), yv.sum()
    if nx == 0 or ny == 0:
        return float("nan")
    dx = (xv**2).sum() / nx**2
    dy = (yv**2).sum() / ny**2
    return float(2.0 * (xv * yv).sum() / ((dx + dy) * nx * ny))


def product_mask(cells_or_meta: pd.DataFrame, *, primary_timepoint: str) -> pd.Series:
    """True for rows of the infusion product: compartment ``product`` or the primary timepoint."""
    comp = cells_or_meta.get("compartment")
    is_prod = cells_or_meta["timepoint"].astype(str) == str(primary_timepoint)
    if comp is not None:
        is_prod = is_prod | (comp.astype(str).str.lower() == "product")
    return is_prod


def _car_mask(cells: pd.DataFrame) -> pd.Series | None:
    if "car_positive" not in cells.columns or cells["car_positive"].isna().all():
        return None
    v = cells["car_positive"]
    if v.dtype == object:
        v = v.map({"True": True, "False": False, True: True, False: False})
    return v.fillna(False).astype(bool)


def _sample_roles(meta: pd.DataFrame, *, primary_timepoint: str) -> pd.DataFrame:
    """Per sample: is_product and is_post_infusion (NA when it cannot be ordered)."""
    meta = meta.copy()
    meta["is_product"] = product_mask(meta, primary_timepoint=primary_timepoint).to_numpy()
    post = pd.Series(pd.NA, index=meta.index, dtype="boolean")
    for patient, grp in meta.groupby("patient", sort=True):
        prod = grp[grp["is_product"]]
        if prod.empty:
            continue
        prod_day = prod["timepoint_day"].max()
        if pd.isna(prod_day):
            log.info("patient %s: product has no timepoint_day; taken as day 0", patient)
            prod_day = 0.0
        for s, row in grp.iterrows():
            if row["is_product"]:
                post[s] = False
            elif pd.isna(row["timepoint_day"]):
                log.warning("sample %s has no timepoint_day: not counted as pre or post "
                            "infusion", s)
            else:
                post[s] = bool(row["timepoint_day"] > prod_day)
    meta["is_post_infusion"] = post
    return meta


def persistence_by_sample(cells: pd.DataFrame, *, primary_timepoint: str) -> pd.DataFrame:
    """Overlap with the infusion product and persistence of product clones.

    The product repertoire of a patient pools its product samples (compartment
    ``product`` or timepoint ``primary_timepoint``); post-infusion samples are
    the patient's other samples with a later ``timepoint_day``.

    Returns
    -------
    DataFrame
        One row per sample: ``sample, is_product, is_post_infusion,
        product_samples, jaccard_product, morisita_horn_product,
        n_product_clones_detected, frac_cells_from_product_clones,
        frac_car_cells_from_product_clones`` (non-product samples) and, on the
        product rows, the patient-level ``n_product_clones,
        n_product_clones_detected_later, frac_product_clones_detected_later,
        frac_post_cells_from_product_clones,
        frac_post_car_cells_from_product_clones, n_post_samples``.
    """
    _check_cells(cells)
    meta = _sample_roles(_sample_meta(cells), primary_timepoint=primary_timepoint)
    car = _car_mask(cells)
    tcr_mask = cells["clone_id"].notna()
    tcr = cells[tcr_mask]
    car_tcr = car[tcr_mask] if car is not None else None
    counts = {s: g.value_counts() for s, g in tcr.groupby("sample", sort=True)["clone_id"]}
    rows = []
    for patient, grp in meta.groupby("patient", sort=True):
        prod_samples = list(grp.index[grp["is_product"]])
        post_samples = list(grp.index[grp["is_post_infusion"].fillna(False).astype(bool)])
        prod_counts = (
            tcr[tcr["sample"].isin(prod_samples)]["clone_id"].value_counts()
            if prod_samples else pd.Series(dtype=int)
        )
        prod_clones = set(prod_counts.index)
        for s in grp.index:
            row: dict[str, Any] = {
                "sample": s,
                "is_product": bool(grp.loc[s, "is_product"]),
                "is_post_infusion": grp.loc[s, "is_post_infusion"],
                "product_samples": ",".join(prod_samples) if prod_samples else pd.NA,
            }
            c = counts.get(s, pd.Series(dtype=int))
            if prod_samples and not row["is_product"] and len(prod_counts):
                in_prod = c.index.isin(list(prod_clones))
                n = c.sum()
                row["jaccard_product"] = jaccard(c, prod_counts) if n else np.nan
                row["morisita_horn_product"] = morisita_horn(c, prod_counts) if n else np.nan
                row["n_product_clones_detected"] = int(in_prod.sum())
                row["frac_cells_from_product_clones"] = c[in_prod].sum() / n if n else np.nan
                if car_tcr is not None:
                    sm = (tcr["sample"] == s) & car_tcr
                    nc = int(sm.sum())
                    row["frac_car_cells_from_product_clones"] = (
                        tcr.loc[sm, "clone_id"].isin(prod_clones).sum() / nc if nc else np.nan
                    )
            if row["is_product"] and len(prod_counts):
                post = tcr[tcr["sample"].isin(post_samples)]
                later = set(post["clone_id"]) & prod_clones
                row["n_product_clones"] = len(prod_clones)
                row["n_post_samples"] = len(post_samples)
                if post_samples:
                    row["n_product_clones_detected_later"] = len(later)
                    row["frac_product_clones_detected_later"] = len(later) / len(prod_clones)
                    row["frac_post_cells_from_product_clones"] = (
                        post["clone_id"].isin(prod_clones).mean() if len(post) else np.nan
                    )
                    if car_tcr is not None:
                        pc = post[car_tcr[post.index]]
                        row["frac_post_car_cells_from_product_clones"] = (
                            pc["clone_id"].isin(prod_clones).mean() if len(pc) else np.nan
                        )
            rows.append(row)
    cols = [
        "sample", "is_product", "is_post_infusion", "product_samples", "jaccard_product",
        "morisita_horn_product", "n_product_clones_detected", "frac_cells_from_product_clones",
        "frac_car_cells_from_product_clones", "n_product_clones", "n_post_samples",
        "n_product_clones_detected_later", "frac_product_clones_detected_later",
        "frac_post_cells_from_product_clones", "frac_post_car_cells_from_product_clones",
    ]
    return pd.DataFrame(rows).reindex(columns=cols)


def track_clones(cells: pd.DataFrame, *, primary_timepoint: str) -> pd.DataFrame:
    """Size of every clone in every sample of its patient, with persistence flags.

    Returns
    -------
    DataFrame
        One row per patient × clone × sample where the clone was seen:
        ``patient, clone_id, sample, timepoint, timepoint_day, compartment,
        is_product, is_post_infusion, n_cells, frac_sample`` (of the sample's
        cells with TCR), ``n_car_positive``, ``clone_size`` (all samples),
        ``product_n_cells``, ``in_product``, ``n_samples_detected``,
        ``n_post_samples_detected`` and ``is_persistent`` (a product clone seen
        in a post-infusion sample). Sorted by patient, clone size (desc), clone,
        timepoint_day, sample.
    """
    _check_cells(cells)
    meta = _sample_roles(_sample_meta(cells), primary_timepoint=primary_timepoint)
    tcr = cells[cells["clone_id"].notna()].copy()
    car = _car_mask(cells)
    tcr["_car"] = car[tcr.index].astype(int) if car is not None else 0
    g = tcr.groupby(["patient", "clone_id", "sample"], sort=True)
    tab = g.size().rename("n_cells").to_frame()
    tab["n_car_positive"] = g["_car"].sum() if car is not None else pd.NA
    tab = tab.reset_index()
    tab = tab.join(
        meta[["timepoint", "timepoint_day", "compartment", "is_product", "is_post_infusion"]]
        if "compartment" in meta else
        meta[["timepoint", "timepoint_day", "is_product", "is_post_infusion"]],
        on="sample",
    )
    n_tcr = tcr.groupby("sample").size()
    tab["frac_sample"] = tab["n_cells"] / tab["sample"].map(n_tcr)
    by_clone = tab.groupby(["patient", "clone_id"])
    tab["clone_size"] = by_clone["n_cells"].transform("sum")
    tab["product_n_cells"] = (tab["n_cells"] * tab["is_product"]).groupby(
        [tab["patient"], tab["clone_id"]]).transform("sum")
    tab["in_product"] = tab["product_n_cells"] > 0
    tab["n_samples_detected"] = by_clone["sample"].transform("nunique")
    post = tab["is_post_infusion"].fillna(False).astype(bool)
    tab["n_post_samples_detected"] = post.astype(int).groupby(
        [tab["patient"], tab["clone_id"]]).transform("sum")
    tab["is_persistent"] = tab["in_product"] & (tab["n_post_samples_detected"] > 0)
    tab = tab.sort_values(
        ["patient", "clone_size", "clone_id", "timepoint_day", "sample"],
        ascending=[True, False, True, True, True], kind="mergesort",
    )
    cols = ["patient", "clone_id", "sample", "timepoint", "timepoint_day", "compartment",
            "is_product", "is_post_infusion", "n_cells", "frac_sample", "n_car_positive",
            "clone_size", "product_n_cells", "in_product", "n_samples_detected",
            "n_post_samples_detected", "is_persistent"]
    return tab.reindex(columns=cols).reset_index(drop=True)


def clone_states(cells: pd.DataFrame, *, min_size: int = 3) -> pd.DataFrame:
    """Cell-state composition of expanded clones.

    Parameters
    ----------
    cells
        ``cells.tsv.gz`` with ``state``.
    min_size
        A clone is expanded when it has at least this many cells (all samples).

    Returns
    -------
    DataFrame
        Long table: ``patient, clone_id, clone_size, n_samples, frac_car_positive,
        state, n_cells, fraction, dominant_state`` (one row per state present).
    """
    _check_cells(cells, extra=("state",))
    tcr = cells[cells["clone_id"].notna()].copy()
    car = _car_mask(cells)
    tcr["_car"] = car[tcr.index].astype(float) if car is not None else np.nan
    size = tcr.groupby("clone_id").size()
    expanded = size.index[size >= min_size]
    tcr = tcr[tcr["clone_id"].isin(expanded)]
    cols = ["patient", "clone_id", "clone_size", "n_samples", "frac_car_positive", "state",
            "n_cells", "fraction", "dominant_state"]
    if tcr.empty:
        return pd.DataFrame(columns=cols)
    per = tcr.groupby(["patient", "clone_id", "state"], sort=True).size().rename("n_cells")
    per = per.reset_index()
    clone_g = tcr.groupby("clone_id")
    per["clone_size"] = per["clone_id"].map(size)
    per["n_samples"] = per["clone_id"].map(clone_g["sample"].nunique())
    per["frac_car_positive"] = per["clone_id"].map(clone_g["_car"].mean())
    per["fraction"] = per["n_cells"] / per["clone_size"]
    dom = per.sort_values(["clone_id", "n_cells", "state"], ascending=[True, False, True],
                          kind="mergesort").groupby("clone_id")["state"].first()
    per["dominant_state"] = per["clone_id"].map(dom)
    per = per.sort_values(["patient", "clone_size", "clone_id", "n_cells", "state"],
                          ascending=[True, False, True, False, True], kind="mergesort")
    return per.reindex(columns=cols).reset_index(drop=True)


@dataclass(frozen=True)
class RepertoireTables:
    """The three tables of the ``repertoire`` rule."""

    samples: pd.DataFrame
    tracking: pd.DataFrame
    states: pd.DataFrame


def repertoire_tables(
    cells: pd.DataFrame,
    *,
    primary_timepoint: str,
    depth: int | str = "auto",
    min_cells: int = 50,
    n_bootstrap: int = 200,
    seed: int = 0,
    expanded_min_size: int = 3,
) -> RepertoireTables:
    """All repertoire outputs from ``cells.tsv.gz``.

    ``samples`` = :func:`repertoire_by_sample` joined with
    :func:`persistence_by_sample`; ``tracking`` = :func:`track_clones`;
    ``states`` = :func:`clone_states` (empty when ``cells`` has no ``state``).
    """
    _check_cells(cells)
    cells = cells.copy()
    cells["clone_id"] = cells["clone_id"].astype(object).where(cells["clone_id"].notna())
    rep = repertoire_by_sample(cells, depth=depth, min_cells=min_cells,
                               n_bootstrap=n_bootstrap, seed=seed)
    pers = persistence_by_sample(cells, primary_timepoint=primary_timepoint)
    samples = rep.merge(pers, on="sample", how="left", validate="one_to_one")
    tracking = track_clones(cells, primary_timepoint=primary_timepoint)
    if "state" in cells.columns:
        states = clone_states(cells, min_size=expanded_min_size)
    else:
        log.warning("cells table has no 'state' column; clone_states is empty")
        states = pd.DataFrame(columns=["patient", "clone_id", "state", "n_cells"])
    return RepertoireTables(samples=samples, tracking=tracking, states=states)


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
