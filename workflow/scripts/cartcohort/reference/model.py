"""The frozen cohort reference: genes and normalisation, HVGs and the PCA model
(loadings, the means and SDs that scaled each HVG), and the cohort cells with their
PCA coordinates, integrated embedding and final calls (``results/reference/model.h5ad``,
rule ``reference``).

New libraries are placed in it by :mod:`.project`: normalised the same way, projected
with the frozen PCA, then mapped onto the cohort cells by kNN in that PCA space
(``scanpy.tl.ingest``-style). The reference cells' PCA is the uncorrected one, as for
every integration method, so one model serves harmony, scVI, scanorama, bbknn and
``none`` alike; the integration's correction is carried to the new cells from their
nearest cohort cells of the same batch (see :func:`~.project.corrected_embedding`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import CartCohortError
from .lineage import lineage_model
from .markers import marker_models
from .states import state_scale

#: The cell calls of ``cells.tsv.gz`` frozen with the reference cells (the labels
#: transferred to new cells are ``state`` and ``cd4_cd8``).
CALL_COLUMNS = ("sample", "patient", "timepoint", "compartment", "batch", "state",
                "state_confidence", "cd4_cd8", "lineage_state", "car_positive")

#: Labels transferred to new cells by the kNN vote.
TRANSFER_LABELS = ("state", "cd4_cd8")

TARGET_SUM = 1e4
"""Total counts per cell before ``log1p`` (:func:`cartcohort.pp.log_normalise`)."""


def hvg_scaling(x: sp.spmatrix, *, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means and SDs of the selected genes in the log-normalised matrix, as
    :func:`cartcohort.pp.run_pca` scaled them (SD with ``n - 1``; 0 where constant).

    Parameters
    ----------
    x
        Cells x genes, log-normalised (sparse).
    genes
        Boolean mask of the HVGs.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Mean and SD of each selected gene (float64).
    """
    sub = sp.csr_matrix(x[:, np.asarray(genes, dtype=bool)], dtype=np.float64)
    n = sub.shape[0]
    mean = np.asarray(sub.mean(axis=0)).ravel()
    sq = np.asarray(sub.multiply(sub).mean(axis=0)).ravel()
    var = np.maximum(sq - mean**2, 0.0) * n / max(n - 1, 1)
    return mean, np.sqrt(var)


def projection_model(
    prepared: ad.AnnData, *, x_integrated: np.ndarray, calls: pd.DataFrame
) -> ad.AnnData:
    """The part of the reference that places new cells: genes, normalisation, PCA model
    and the cohort cells' coordinates and calls.

    Parameters
    ----------
    prepared
        :func:`cartcohort.pp.prepare_cohort` output (``X`` log-normalised,
        ``var['highly_variable']`` and ``is_car``, ``varm['PCs']``, ``obsm['X_pca']``).
    x_integrated
        The cells' integrated embedding (cells x dimensions).
    calls
        The cells' labels (rows in ``prepared``'s order); string columns are stored
        as strings.

    Returns
    -------
    AnnData
        ``var`` ``is_car``, ``highly_variable``, ``pca_mean``, ``pca_sd``; ``varm['PCs']``;
        ``obs`` = ``calls``; ``obsm`` ``X_pca``, ``X_integrated``; ``uns['preprocessing']``
        with ``target_sum``.
    """
    hv = prepared.var["highly_variable"].to_numpy(dtype=bool)
    mean, sd = hvg_scaling(prepared.X, genes=hv)
    var = pd.DataFrame(index=prepared.var_names.astype(str))
    var["is_car"] = prepared.var["is_car"].astype(bool).to_numpy()
    var["highly_variable"] = hv
    var["pca_mean"], var["pca_sd"] = np.nan, np.nan
    var.loc[hv, "pca_mean"], var.loc[hv, "pca_sd"] = mean, sd
    obs = calls.copy()
    obs.index = prepared.obs_names
    for col in obs.columns:
        if obs[col].dtype == object or col in TRANSFER_LABELS:
            obs[col] = obs[col].astype(str)
    out = ad.AnnData(obs=obs, var=var)
    out.varm["PCs"] = np.asarray(prepared.varm["PCs"], dtype=np.float32)
    out.obsm["X_pca"] = np.asarray(prepared.obsm["X_pca"], dtype=np.float32)
    out.obsm["X_integrated"] = np.asarray(x_integrated, dtype=np.float32)
    out.uns["preprocessing"] = dict(prepared.uns.get("preprocessing", {}))
    out.uns["preprocessing"]["target_sum"] = TARGET_SUM
    out.uns["preprocessing"]["log1p"] = True
    return out


def build_reference(
    prepared: ad.AnnData,
    integrated: ad.AnnData,
    cells: pd.DataFrame,
    *,
    signatures: Any,
    settings: Mapping[str, Any],
) -> ad.AnnData:
    """The reference model of a cohort run.

    Parameters
    ----------
    prepared
        ``integrate/merged.h5ad`` (:func:`cartcohort.pp.prepare_cohort`): ``X``
        log-normalised, ``var['highly_variable']``, ``varm['PCs']``, ``obsm['X_pca']``.
    integrated
        ``integrate/{integrate.use}.h5ad``: the same cells, ``obsm['X_integrated']``.
    cells
        ``tables/cells.tsv.gz`` (rule ``annotate``): the final calls, one row per cell.
        ``prepared`` needs ``layers['counts']`` (checkpoint-marker models).
    signatures
        The marker programs annotation used (:func:`cartcohort.tl.annotate.load_signatures`).
    settings
        The run's settings recorded with the model (``uns['settings']``): what a new
        library must be processed with; ``settings['annotate']`` gives the smoothing and
        SD floor of the state scale (:func:`.states.state_scale`).

    Returns
    -------
    AnnData
        No expression matrix. ``var``: every gene of the cohort with ``is_car``,
        ``highly_variable``, ``pca_mean`` and ``pca_sd`` (NaN off the HVGs);
        ``varm['PCs']``; ``obs``: :data:`CALL_COLUMNS`; ``obsm`` ``X_pca``,
        ``X_integrated`` and ``X_signature`` (log expression of the signature genes);
        ``uns`` ``preprocessing``, ``integration``, ``settings`` and ``state_scale``
        (signature genes, cohort mean and SD of their smoothed expression), ``markers``
        (JSON of the checkpoint-marker count models, :func:`.markers.marker_models`),
        ``lineage`` (JSON of the lineage count model, :func:`.lineage.lineage_model`).
    """
    if not prepared.obs_names.equals(integrated.obs_names):
        raise CartCohortError(
            "integrate/merged.h5ad and the integrated embedding hold different cells. "
            "Fix: re-run merge_samples and integrate together")
    for key, where in (("PCs", prepared.varm), ("X_pca", prepared.obsm),
                       ("X_integrated", integrated.obsm), ("connectivities", integrated.obsp)):
        if key not in where:
            raise CartCohortError(
                f"the cohort's integration output lacks '{key}'. Fix: re-run the "
                "merge_samples and integrate rules")
    table = cells.assign(cell=cells["cell"].astype(str)).set_index("cell")
    missing = prepared.obs_names.difference(table.index)
    if len(missing):
        raise CartCohortError(
            f"tables/cells.tsv.gz: {len(missing)} integrated cell(s) have no row (first: "
            f"{missing[0]}). Fix: re-run rule annotate")
    absent = [c for c in CALL_COLUMNS if c not in table.columns]
    if absent:
        raise CartCohortError(
            f"tables/cells.tsv.gz: column(s) {absent} missing. Fix: re-run rule annotate")
    obs = table.loc[prepared.obs_names, list(CALL_COLUMNS)].copy()
    out = projection_model(prepared, x_integrated=integrated.obsm["X_integrated"], calls=obs)
    out.uns["integration"] = {k: v for k, v in integrated.uns.get("integration", {}).items()
                              if k != "samples"}
    out.uns["settings"] = _json_safe(settings)
    ann = settings["annotate"]
    names, s_mean, s_sd, expr = state_scale(
        prepared.X, integrated.obsp["connectivities"], genes=prepared.var_names,
        signatures=signatures, smoothing=float(ann["smoothing"]), sd_floor=float(ann["sd_floor"]))
    out.obsm["X_signature"] = expr
    out.uns["state_scale"] = {"genes": names, "mean": s_mean, "sd": s_sd}
    # the count models' neighbour agreement (rho) over each library's own graph, as the
    # cohort's calls (tl.annotate.annotate) and a new product's
    from ..tl.annotate import library_graph

    own_graph = library_graph(integrated, n_neighbors=int(settings["n_neighbors"]),
                              seed=int(settings["seed"]))
    _count_models(out, prepared, graph=own_graph, signatures=signatures)
    return out


def _count_models(out: ad.AnnData, prepared: ad.AnnData, *, graph: Any, signatures: Any) -> None:
    """The cohort's checkpoint-marker and lineage count models, added to the reference
    ``out`` in place (:func:`build_reference`)."""
    counts, genes = prepared.layers["counts"], prepared.var_names
    is_car = out.var["is_car"].to_numpy()
    out.uns["markers"] = json.dumps(
        marker_models(counts, graph, genes=genes, is_car=is_car, signatures=signatures))
    out.uns["lineage"] = json.dumps(lineage_model(
        counts, genes=genes, is_car=is_car, signatures=signatures,
        is_gd=(out.obs["cd4_cd8"].astype(str) == "gd").to_numpy()))


def _json_safe(value: Any) -> Any:
    """``value`` with ``None`` as ``""`` (h5ad cannot store ``None``) - for settings."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return "" if value is None else value


def reference_samples(model: ad.AnnData) -> list[str]:
    """The cohort samples in a reference."""
    return sorted(model.obs["sample"].astype(str).unique())


def read_model(path: str | os.PathLike) -> ad.AnnData:
    """Read ``reference/model.h5ad`` and check it holds what projection needs."""
    if not os.path.exists(path):
        raise CartCohortError(
            f"{path}: no such reference model. Fix: give config reference= the "
            "results/reference folder of a cohort run (rule reference writes it)")
    model = ad.read_h5ad(path)
    need = [k for k in ("X_pca", "X_integrated", "X_signature") if k not in model.obsm]
    need += [k for k in ("state_scale", "settings", "markers", "lineage")
             if k not in model.uns]
    need += [k for k in ("PCs",) if k not in model.varm]
    need += [c for c in ("pca_mean", "pca_sd", "highly_variable", "is_car")
             if c not in model.var]
    if need:
        raise CartCohortError(
            f"{path}: lacks {need}; it is not a reference written by rule reference. "
            "Fix: re-run the cohort workflow (target all) to freeze the reference")
    return model


def gene_mismatch(model: ad.AnnData, genes: Sequence[str], *, source: str) -> None:
    """Refuse a library whose genes do not cover the reference's.

    Raises
    ------
    CartCohortError
        Naming the missing genes (first 10 and the count) and, separately, CAR
        features of the reference that the library lacks.
    """
    have = set(map(str, genes))
    car = [g for g in model.var_names[model.var["is_car"].to_numpy(dtype=bool)]
           if g not in have]
    if car:
        raise CartCohortError(
            f"{source}: lacks the reference's CAR feature(s) {car}. Fix: quantify the "
            "library with the same CAR construct (feature name) as the cohort, or build "
            "a reference whose car_features match")
    missing = [g for g in model.var_names if g not in have]
    if missing:
        raise CartCohortError(
            f"{source}: {len(missing)} of the reference's {model.n_vars} genes are "
            f"missing (first: {', '.join(missing[:10])}). Fix: map the library to the "
            "same genome reference (gene annotation) as the cohort")


def chemistry_end(description: str) -> str:
    """``"5'"``, ``"3'"`` or ``""`` (unknown) from a chemistry description such as
    Cell Ranger's ``Single Cell 5' PE v2`` or ``Single Cell 3' v3``."""
    text = str(description).lower().replace("prime", "'").replace(" ", "")
    ends = [e for e in ("5'", "3'") if e in text]
    return ends[0] if len(ends) == 1 else ""


def read_chemistry(h5mu: str | os.PathLike) -> str:
    """The chemistry the load step recorded for a library (``mod/gex/uns/library``);
    ``""`` where none was recorded."""
    import h5py

    with h5py.File(h5mu, "r") as f:
        key = "mod/gex/uns/library/chemistry"
        if key not in f:
            return ""
        value = f[key][()]
    return value.decode() if isinstance(value, bytes) else str(value)


def chemistry_mismatch(chemistry: str, cohort: Mapping[str, str], *, source: str) -> None:
    """Refuse a library whose 5'/3' chemistry differs from the reference's libraries.

    Parameters
    ----------
    chemistry
        The new library's chemistry (:func:`read_chemistry`).
    cohort
        Reference sample -> chemistry (``settings.json`` ``library_chemistry``).
    source
        The new library's file, for the message.

    Raises
    ------
    CartCohortError
        The library is 5' and the reference's libraries 3' (or the reverse), naming both
        descriptions. Unknown chemistries (formats that do not record it) pass.
    """
    end = chemistry_end(chemistry)
    known = {s: c for s, c in cohort.items() if chemistry_end(c)}
    other = {s: c for s, c in known.items() if chemistry_end(c) != end}
    if end and other:
        first = min(other)
        raise CartCohortError(
            f"{source}: chemistry {chemistry!r} ({end}) differs from the reference's "
            f"libraries ({len(other)} of {len(known)} with a recorded chemistry, e.g. "
            f"{first}: {other[first]!r}); 5' and 3' libraries capture different transcript "
            "ends and their expression is not comparable. Fix: score the product against a "
            "reference built from libraries of the same chemistry")
