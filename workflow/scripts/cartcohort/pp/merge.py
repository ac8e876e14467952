"""The cohort shared by every integration method: QC-passing cells of the included
samples merged, log-normalised, highly variable genes chosen without V(D)J,
mitochondrial, ribosomal, CAR and user-listed genes, and one sparse-aware PCA, in
memory (:func:`load_qc_cells`, :func:`prepare_cohort`). Rule ``merge_samples`` writes
the same ``results/integrate/merged.h5ad`` out of core with
:func:`cartcohort.pp.stream.merge_samples`, which reuses the pieces of this module; the
in-memory functions are its reference (tests) and serve small cohorts held in memory.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import CartCohortError, InputError, Problem
from ..genesets import EXCLUDE_PATTERNS, gene_exclusions  # noqa: F401 (re-exported)
from .qc import included_samples

logger = logging.getLogger(__name__)

GeneJoin = Literal["intersect", "union"]
"""How genes of samples mapped to different references are combined (``load.gene_join``)."""

HvgFlavor = Literal["seurat_v3", "seurat"]
"""HVG flavours of :func:`select_hvgs`."""

# --------------------------------------------------------------------------- loading


def _qc_included_samples(
    samples: Sequence[str], qc_table: pd.DataFrame | None, *, qc_table_path: str
) -> list[str]:
    """Samples of ``samples`` that the QC summary does not exclude (all of them without a
    summary); an error when none is left."""
    keep = list(samples) if qc_table is None else _not_excluded(
        samples, qc_table, qc_table_path=qc_table_path)
    if not keep:
        raise CartCohortError(
            f"{qc_table_path}: every sample is excluded by QC, nothing to integrate. "
            "Fix: check the QC summary and relax qc thresholds or qc.min_cells_per_sample"
        )
    return keep


def _not_excluded(
    samples: Sequence[str], qc_table: pd.DataFrame, *, qc_table_path: str
) -> list[str]:
    """Samples of ``samples`` that the QC summary does not exclude."""
    problems = []
    for col in ("sample", "sample_excluded"):
        if col not in qc_table.columns:
            problems.append(
                Problem(
                    qc_table_path,
                    f"column '{col}'",
                    "is missing",
                    "re-run the qc_summary rule (it writes 'sample' and 'sample_excluded')",
                )
            )
    if problems:
        raise InputError(problems)
    table = qc_table.assign(sample=qc_table["sample"].astype(str)).set_index("sample")
    missing = [s for s in samples if s not in table.index]
    if missing:
        raise InputError(
            [
                Problem(
                    qc_table_path,
                    f"sample '{s}'",
                    "has no row although its QC file is an input of integration",
                    "re-run the qc_summary rule so every cohort sample has a row",
                )
                for s in missing
            ]
        )
    included = set(included_samples(qc_table))
    keep = [s for s in samples if s in included]
    dropped = [s for s in samples if s not in included]
    if dropped:
        logger.info("QC summary excludes %d sample(s): %s", len(dropped), ", ".join(dropped))
    return keep


def _read_gex(path: str | os.PathLike) -> ad.AnnData:
    """Only the ``gex`` modality of a ``.h5mu`` file (``airr`` is not read)."""
    import mudata

    try:
        return mudata.read_h5ad(path, mod="gex")
    except KeyError as err:
        raise CartCohortError(
            f"{path}: has no 'gex' modality ({err}). Fix: re-run load_sample/qc_sample "
            "for this sample."
        ) from None


def _library_name(a: ad.AnnData, i: int) -> str:
    """The sample id of a library's cells (``obs['sample']``), else its position."""
    if "sample" in a.obs and a.n_obs:
        return str(a.obs["sample"].iloc[0])
    return f"library {i + 1}"


def concat_samples(adatas: Sequence[ad.AnnData], *, join: GeneJoin) -> ad.AnnData:
    """Stack samples (cells) after giving them the same genes with
    :func:`cartcohort.io.harmonise_genes` (``intersect`` or ``union``).

    Parameters
    ----------
    adatas
        One AnnData of raw counts per sample. A list is emptied as its samples are
        merged, so that one copy of the cells is held.
    join
        ``"intersect"`` or ``"union"`` (``load.gene_join``).

    Returns
    -------
    AnnData
        ``X`` raw counts (CSR float32), the samples' ``obs``, the harmonised ``var``;
        ``uns['merge_warnings']``: the warning rows of the join
        (:func:`cartcohort.io.gene_join_warnings`; none when every sample has the
        same genes).

    Raises
    ------
    CartCohortError
        When the samples share no gene besides the CAR features (intersect).
    """
    from ..io import gene_join_warnings, harmonise_genes
    from ..sheets import WARNING_COLUMNS

    libraries = [_library_name(a, i) for i, a in enumerate(adatas)]
    warnings = gene_join_warnings(adatas, join=join, libraries=libraries)
    harmonised, report = harmonise_genes(list(adatas), join=join)
    if isinstance(adatas, list):
        adatas.clear()  # the harmonised copies replace them: hold one copy of the cells
    if not (~harmonised[0].var["is_car"].astype(bool)).any():
        raise CartCohortError(
            "the samples share no gene (besides the CAR features), so they cannot be "
            "integrated. Fix: map all samples to the same reference, or set "
            "load.gene_join: union"
        )
    if len(report):
        logger.info(
            "gene join %s: %d genes dropped, %d zero-filled", join,
            int((report["action"] == "dropped").sum()),
            int((report["action"] == "zero_filled").sum()),
        )
    var = harmonised[0].var.copy()
    merged = ad.concat(harmonised, join="inner", merge=None)
    harmonised.clear()
    out = ad.AnnData(X=sp.csr_matrix(merged.X, dtype=np.float32), obs=merged.obs.copy(),
                     var=var)
    out.uns["merge_warnings"] = pd.DataFrame(warnings, columns=list(WARNING_COLUMNS))
    return out


def _qc_passing(path: str | os.PathLike, sample: str) -> ad.AnnData:
    """The QC-passing cells of one sample's ``gex`` modality (CSR float32 counts)."""
    gex = _read_gex(path)
    if "qc_pass" not in gex.obs:
        raise CartCohortError(
            f"{path}: gex.obs has no 'qc_pass' column. Fix: produce this "
            "file with the qc_sample rule"
        )
    keep = gex.obs["qc_pass"].astype(bool).to_numpy()
    if not keep.any():
        raise CartCohortError(
            f"{path}: no QC-passing cell although the QC summary keeps "
            f"sample '{sample}'. Fix: re-run qc_summary or exclude the sample "
            "(config exclude_samples)"
        )
    part = gex[keep]
    x = part.X
    if not sp.issparse(x):
        x = sp.csr_matrix(x)
    logger.info("%s: %d of %d cells pass QC", sample, int(keep.sum()), gex.n_obs)
    return ad.AnnData(X=sp.csr_matrix(x, dtype=np.float32), obs=part.obs.copy(),
                      var=part.var.copy())


def load_qc_cells(
    paths: Mapping[str, str | os.PathLike],
    *,
    qc_table: pd.DataFrame | None = None,
    qc_table_path: str = "results/tables/qc_samples.tsv",
    join: GeneJoin = "intersect",
) -> ad.AnnData:
    """Read QC-passing cells of the included samples and merge them.

    Parameters
    ----------
    paths
        Sample id -> ``results/qc/{sample}.h5mu``. Only the ``gex`` modality is read.
    qc_table
        The QC summary (``qc_samples.tsv``); samples with ``sample_excluded`` true are
        skipped. ``None`` keeps every sample.
    qc_table_path
        Name of the QC summary used in error messages.
    join
        ``"intersect"`` (genes present in every sample) or ``"union"`` (all genes,
        zero counts where a sample lacks a gene); see
        :func:`cartcohort.io.harmonise_genes` (``load.gene_join``).

    Returns
    -------
    AnnData
        ``X`` raw counts (CSR float32), all ``obs`` columns of the QC files, ``var``
        with ``is_car``, ``uns['merge_warnings']`` (see :func:`concat_samples`).
    """
    samples = _qc_included_samples(list(paths), qc_table, qc_table_path=qc_table_path)
    parts = [_qc_passing(paths[sample], sample) for sample in samples]
    merged = concat_samples(parts, join=join)  # empties `parts` as it goes
    if not merged.obs_names.is_unique:
        raise CartCohortError(
            "cell ids are not unique across samples; ids must be '<sample>_<barcode>'. "
            "Fix: re-run load_sample"
        )
    logger.info(
        "merged %d cells x %d genes from %d samples (gene join %s)",
        merged.n_obs, merged.n_vars, len(samples), join,
    )
    return merged


# --------------------------------------------------------------------------- preprocessing


def log_normalise(counts: sp.spmatrix, *, target_sum: float = 1e4) -> sp.csr_matrix:
    """Scale every cell to ``target_sum`` total counts and take ``log1p``.

    Parameters
    ----------
    counts
        Cells x genes raw counts (sparse).
    target_sum
        Total counts per cell after scaling.

    Returns
    -------
    scipy.sparse.csr_matrix
        float32, same sparsity pattern; cells with zero counts stay zero.
    """
    x = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    totals = np.asarray(x.sum(axis=1)).ravel().astype(np.float64)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    x.data = np.log1p(x.data * np.repeat(scale, np.diff(x.indptr))).astype(np.float32)
    return x


HVG_SPANS = (0.3, 0.5, 1.0)
"""LOESS spans tried in turn by ``seurat_v3`` (0.3 is scanpy's default; larger spans
avoid the "near singularities" failure of small batches)."""


def _hvg_scores(
    sub: ad.AnnData,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    *,
    n_top: int,
    batch_key: str | None,
    counts_layer: str,
    flavor: HvgFlavor,
) -> tuple[pd.DataFrame, str, float | None, list[str]]:
    """scanpy's HVG table of the eligible genes ``sub``: ``seurat_v3`` with each span of
    :data:`HVG_SPANS` in turn, else ``seurat``; also the flavour and span used and why
    the requested ones were not."""
    import scanpy as sc

    notes: list[str] = []
    res = None
    span = None
    if flavor == "seurat_v3" and importlib.util.find_spec("skmisc") is None:
        notes.append("scikit-misc (skmisc) cannot be imported")
    elif flavor == "seurat_v3":
        tmp = ad.AnnData(X=sub.layers[counts_layer], obs=obs, var=var)
        for span in HVG_SPANS:
            try:
                res = sc.pp.highly_variable_genes(
                    tmp, flavor="seurat_v3", n_top_genes=n_top, batch_key=batch_key,
                    span=span, inplace=False,
                )
                break
            except ValueError as err:
                notes.append(f"seurat_v3 LOESS with span {span} failed ({err!s})")
                logger.warning("HVG: %s", notes[-1])
    if res is None:
        if flavor == "seurat_v3":
            logger.warning("HVG: using flavour 'seurat' on log-normalised data because %s",
                           "; ".join(notes))
        flavor, span = "seurat", None
        tmp = ad.AnnData(X=sub.X, obs=obs, var=var)
        res = sc.pp.highly_variable_genes(
            tmp, flavor="seurat", n_top_genes=n_top, batch_key=batch_key, inplace=False
        )
    res = pd.DataFrame(res)
    res.index = sub.var_names
    return res, flavor, span, notes


def select_hvgs(
    adata: ad.AnnData,
    *,
    n_top_genes: int,
    batch_key: str | None,
    exclude: pd.Series | None = None,
    counts_layer: str = "counts",
    flavor: HvgFlavor = "seurat_v3",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Highly variable genes among the eligible (not excluded) genes.

    Parameters
    ----------
    adata
        ``layers[counts_layer]`` raw counts and ``X`` log-normalised.
    n_top_genes
        Number of HVGs (capped at the number of eligible genes).
    batch_key
        ``obs`` column; genes are ranked within each batch and combined (scanpy).
    exclude
        Output of :func:`gene_exclusions`; non-empty reasons are not eligible.
    counts_layer
        Layer with raw counts (``seurat_v3`` models counts).
    flavor
        ``"seurat_v3"`` (needs scikit-misc) or ``"seurat"`` (log data).
        ``seurat_v3`` fits a LOESS of variance on mean per batch; when that fit fails
        (small batches: "near singularities") it is retried with the larger spans of
        :data:`HVG_SPANS`; when scikit-misc cannot be imported or every span fails,
        ``seurat`` is used. Each such change is logged with its reason and reported.

    Returns
    -------
    (pandas.DataFrame, dict)
        Table indexed like ``var`` with ``highly_variable`` (bool), ``hvg_rank``
        (float, NaN if not ranked) and ``hvg_excluded`` (reason); and
        ``{"flavor": used flavour, "span": LOESS span or None, "note": why the
        requested flavour/span was not used ("" if it was)}``.
    """
    if flavor not in ("seurat_v3", "seurat"):
        raise CartCohortError(f"unknown HVG flavour {flavor!r}; use 'seurat_v3' or 'seurat'")
    if exclude is None:
        exclude = pd.Series("", index=adata.var_names)
    eligible = (exclude.reindex(adata.var_names).fillna("") == "").to_numpy()
    if eligible.sum() < 2:
        raise CartCohortError(
            "fewer than 2 genes are eligible for HVG selection after excluding "
            "V(D)J/mito/ribo/CAR/config genes. Fix: check integrate.exclude_genes"
        )
    n_top = int(min(n_top_genes, eligible.sum()))
    sub = adata[:, eligible]
    if batch_key is not None and sub.obs[batch_key].nunique() < 2:
        batch_key = None
    obs = pd.DataFrame(index=sub.obs_names)
    if batch_key is not None:
        obs[batch_key] = sub.obs[batch_key].astype(str).to_numpy()
    res, flavor, span, notes = _hvg_scores(
        sub, obs, pd.DataFrame(index=sub.var_names), n_top=n_top, batch_key=batch_key,
        counts_layer=counts_layer, flavor=flavor,
    )
    out = pd.DataFrame(index=adata.var_names)
    out["highly_variable"] = False
    out.loc[res.index, "highly_variable"] = res["highly_variable"].astype(bool).to_numpy()
    out["hvg_rank"] = np.nan
    if "highly_variable_rank" in res:
        out.loc[res.index, "hvg_rank"] = res["highly_variable_rank"].astype(float).to_numpy()
    out["hvg_excluded"] = exclude.reindex(adata.var_names).fillna("").astype(str).to_numpy()
    logger.info(
        "selected %d HVGs (flavour %s%s, batch_key %s); %d genes excluded beforehand (%s)",
        int(out["highly_variable"].sum()), flavor, f", span {span}" if span else "",
        batch_key, int((~eligible).sum()),
        ", ".join(f"{k}: {v}" for k, v in
                  out.loc[out["hvg_excluded"] != "", "hvg_excluded"].value_counts().items()),
    )
    return out, {"flavor": flavor, "span": span, "note": "; ".join(notes)}


@dataclass(frozen=True)
class PCAResult:
    """PCA output.

    Attributes
    ----------
    scores
        Cells x PCs, float32.
    loadings
        Selected genes x PCs, float32.
    variance_ratio
        Explained variance ratio of each PC, float32.
    """

    scores: np.ndarray
    loadings: np.ndarray
    variance_ratio: np.ndarray


def run_pca(
    x: sp.spmatrix,
    *,
    genes: np.ndarray,
    n_pcs: int,
    scale: bool = True,
    seed: int = 0,
) -> PCAResult:
    """Sparse-aware PCA of the selected genes.

    Parameters
    ----------
    x
        Cells x genes log-normalised matrix (sparse; never densified).
    genes
        Boolean mask of the genes to use (the HVGs).
    n_pcs
        Number of components (capped at ``min(cells, genes) - 1``).
    scale
        Scale every gene to unit variance first (a sparse column scaling; PCA then
        centres implicitly), i.e. PCA of z-scores without densifying.
    seed
        Random state of the ARPACK solver.

    Returns
    -------
    PCAResult
        ``scores`` (cells x n_pcs, float32), ``loadings`` (selected genes x n_pcs).
    """
    from sklearn.decomposition import PCA

    sub = sp.csr_matrix(x[:, np.asarray(genes, dtype=bool)], dtype=np.float32)
    n_comps = int(min(n_pcs, min(sub.shape) - 1))
    if n_comps < 2:
        raise CartCohortError(
            f"PCA needs at least 3 cells and 3 genes; got {sub.shape[0]} cells, "
            f"{sub.shape[1]} HVGs"
        )
    if n_comps < n_pcs:
        logger.warning("n_pcs=%d capped at %d (cells x HVGs = %s)", n_pcs, n_comps, sub.shape)
    if scale:
        mean = np.asarray(sub.mean(axis=0), dtype=np.float64).ravel()
        sq = np.asarray(sub.multiply(sub).mean(axis=0), dtype=np.float64).ravel()
        var = np.maximum(sq - mean**2, 0.0) * sub.shape[0] / max(sub.shape[0] - 1, 1)
        std = np.sqrt(var)
        inv = np.divide(1.0, std, out=np.ones_like(std), where=std > 0)
        sub.data *= inv.astype(np.float32)[sub.indices]  # in place: no second copy
    pca = PCA(n_components=n_comps, svd_solver="arpack", random_state=seed)
    scores = pca.fit_transform(sub)
    # sign convention: the largest-|loading| gene of each PC is positive (stable output)
    comps = pca.components_
    signs = np.sign(comps[np.arange(n_comps), np.abs(comps).argmax(axis=1)])
    signs[signs == 0] = 1
    return PCAResult(
        scores=(scores * signs).astype(np.float32),
        loadings=(comps.T * signs).astype(np.float32),
        variance_ratio=pca.explained_variance_ratio_.astype(np.float32),
    )


def stringify_obs(adata: ad.AnnData) -> None:
    """Make object ``obs`` columns writable to h5ad, in place (strings; missing stays
    missing)."""
    for col in adata.obs.columns:
        s = adata.obs[col]
        if s.dtype == object:
            adata.obs[col] = s.map(lambda v: v if v is None or (isinstance(v, float) and v != v)
                                   else str(v))


def preprocessing_record(
    *,
    batch_key: str,
    n_top_genes: int,
    n_hvg: int,
    hvg_info: Mapping[str, Any],
    n_excluded: int,
    exclude_genes: Sequence[str],
    scale: bool,
    n_pcs: int,
    seed: int,
) -> dict[str, Any]:
    """``uns['preprocessing']`` of ``merged.h5ad``: the settings and what was used
    (HVG flavour, span and why the requested ones were not, number of PCs)."""
    return {
        "batch_key": batch_key,
        "n_top_genes": int(n_top_genes),
        "n_hvg": int(n_hvg),
        "hvg_flavor": hvg_info["flavor"],
        "hvg_span": float(hvg_info["span"]) if hvg_info["span"] else 0.0,
        "hvg_note": hvg_info["note"],
        "n_excluded_genes": int(n_excluded),
        "exclude_genes": [str(g) for g in exclude_genes],
        "scale": bool(scale),
        "n_pcs": int(n_pcs),
        "seed": int(seed),
    }


# --------------------------------------------------------------------------- the step


def prepare_cohort(
    adata: ad.AnnData,
    *,
    batch_key: str = "batch",
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    exclude_genes: Sequence[str] = (),
    scale: bool = True,
    hvg_flavor: HvgFlavor = "seurat_v3",
    seed: int = 0,
) -> ad.AnnData:
    """Normalise, select HVGs and compute the (unintegrated) PCA - the part of
    integration shared by every method, done once per cohort.

    Parameters
    ----------
    adata
        Merged cells (:func:`load_qc_cells`): ``X`` raw counts.
    batch_key
        ``obs`` column with the batch (HVGs are ranked per batch).
    n_top_genes, n_pcs
        Number of HVGs and of PCs (``integrate.n_top_genes``, ``integrate.n_pcs``).
    exclude_genes
        Extra gene symbols kept out of the HVGs.
    scale
        Unit-variance genes before PCA (see :func:`run_pca`).
    hvg_flavor
        ``seurat_v3`` (default) or ``seurat``.
    seed
        Random state of the PCA solver.

    Returns
    -------
    AnnData
        ``integrate/merged.h5ad``: ``layers['counts']`` raw counts (float32 CSR),
        ``X`` log1p-normalised, ``var`` ``highly_variable``/``hvg_rank``/
        ``hvg_excluded``, ``obsm['X_pca']``, ``varm['PCs']``, ``uns['pca']`` and
        ``uns['preprocessing']`` (settings and what was used).
    """
    counts = sp.csr_matrix(adata.X, dtype=np.float32)
    out = ad.AnnData(X=log_normalise(counts), obs=adata.obs.copy(), var=adata.var.copy())
    out.layers["counts"] = counts
    exclude = gene_exclusions(out.var, extra=exclude_genes)
    hvg, hvg_info = select_hvgs(
        out, n_top_genes=n_top_genes, batch_key=batch_key if batch_key in out.obs else None,
        exclude=exclude, flavor=hvg_flavor,
    )
    for col in hvg.columns:
        out.var[col] = hvg[col].to_numpy()
    hv = out.var["highly_variable"].to_numpy()
    pca = run_pca(out.X, genes=hv, n_pcs=n_pcs, scale=scale, seed=seed)
    out.obsm["X_pca"] = pca.scores
    loadings = np.zeros((out.n_vars, pca.loadings.shape[1]), dtype=np.float32)
    loadings[hv] = pca.loadings
    out.varm["PCs"] = loadings
    logger.info(
        "PCA: %d PCs on %d HVGs, %.1f%% variance explained",
        pca.scores.shape[1], int(hv.sum()), 100 * float(pca.variance_ratio.sum()),
    )
    out.uns["pca"] = {"variance_ratio": pca.variance_ratio}
    out.uns["preprocessing"] = preprocessing_record(
        batch_key=batch_key, n_top_genes=n_top_genes, n_hvg=int(hv.sum()), hvg_info=hvg_info,
        n_excluded=int((exclude != "").sum()), exclude_genes=exclude_genes, scale=scale,
        n_pcs=int(pca.scores.shape[1]), seed=seed,
    )
    stringify_obs(out)
    return out
