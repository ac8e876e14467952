"""Integration of QC-passing cells across patients, timepoints and batches.

Steps (each a pure function; :func:`integrate_cohort` chains them):

1. :func:`load_qc_cells` - read the ``gex`` modality of every included sample,
   keep QC-passing cells, merge genes (:func:`cartcohort.io.harmonise_genes`).
2. :func:`log_normalise` - total counts to 1e4 and ``log1p`` (raw counts kept).
3. :func:`gene_exclusions` + :func:`select_hvgs` - highly variable genes
   (``seurat_v3`` on counts, per batch) with TCR/BCR V(D)J/C, mitochondrial,
   ribosomal, CAR and user-listed genes excluded, so clonotype, cell quality and
   the transgene do not drive the embedding.
4. :func:`run_pca` - PCA on the HVGs of the log-normalised matrix, sparse-aware
   (implicit centring; genes scaled to unit variance by a sparse column scaling),
   never densifying the matrix.
5. :func:`integrate_embedding` - ``harmony`` (harmonypy, called directly),
   ``scanorama``, ``scvi`` or ``none``; ``bbknn`` corrects the graph instead
   (:func:`embed_and_cluster`).
6. :func:`embed_and_cluster` - kNN graph on ``X_integrated``, UMAP, Leiden at
   each resolution (igraph flavour, seeded).

Integration metrics (implemented here, scib-style, vectorised):
:func:`lisi`, :func:`ilisi`, :func:`clisi`, :func:`silhouette_samples`,
:func:`batch_asw`, :func:`label_asw`, :func:`graph_connectivity`, gathered by
:func:`integration_metrics`. All are "higher is better" and lie in [0, 1].
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import CartCohortError, InputError, Problem
from .integrated import (  # noqa: F401  (re-exported: part of this step's API)
    assemble_integrated,
    read_integrated,
    read_integration,
    read_prepared,
)
from .qc import included_samples

logger = logging.getLogger(__name__)

METHODS = ("harmony", "bbknn", "scanorama", "scvi", "none")
"""Integration methods known to :func:`integrate_cohort`."""

GRAPH_METHODS = ("bbknn",)
"""Methods whose output is a corrected kNN graph rather than an embedding."""

_INSTALL_HINT = {
    "bbknn": ("bbknn", "pip install bbknn  (or: conda install -c bioconda bbknn)"),
    "scanorama": ("scanorama", "pip install scanorama  (or: conda install -c bioconda scanorama)"),
    "scvi": ("scvi", "pip install scvi-tools  (or: conda install -c conda-forge scvi-tools)"),
}

# Gene classes kept out of the HVGs. Matched case-insensitively on gene symbols
# (human upper case, mouse title case). Patterns are anchored and specific so that
# look-alikes (TRADD, RPS6KA1, IGLON5, IGHMBP2) are NOT excluded.
EXCLUDE_PATTERNS: dict[str, str] = {
    # TCR V/D/J segments (TRAV1-2, TRBV12-3, TRDD1, Trav13-4-dv7) and constants
    # (TRAC, TRBC1, TRBC2, TRDC, TRGC1).
    "tcr_vdj": r"^TR[ABDG][VDJ]\d|^TR[ABDG]C\d*$",
    # BCR V/D/J segments (IGHV1-69, IGKV1D-39, IGLV3-21) and constants (IGKC, IGLC2,
    # IGHM, IGHD, IGHE, IGHG1-4, IGHA1/2, mouse Ighg2b/Ighg2c/Igha).
    "bcr_vdj": r"^IG[HKL][VDJ]\d|^IG[KL]C\d*$|^IGH[MDE]$|^IGH[GA]\d*[A-Z]?$",
    "mito": r"^MT-",
    # Cytosolic and mitochondrial ribosomal proteins (RPL10A, RPS4X, RPLP0, RPSA,
    # MRPL12, MRPS18A) - not the kinases RPS6KA*/RPS6KB*.
    "ribo": r"^RP[LS]\d+[A-Z]?\d*$|^RPLP\d$|^RPSA$|^MRP[LS]\d+[A-Z]?\d*$",
}


# --------------------------------------------------------------------------- loading


def _qc_included_samples(
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


def _concat_samples(adatas: Sequence[ad.AnnData], *, join: str) -> ad.AnnData:
    """Stack samples (cells) after giving them the same genes with
    :func:`cartcohort.io.harmonise_genes` (``intersect`` or ``union``)."""
    from .io import harmonise_genes

    harmonised, report = harmonise_genes(list(adatas), join=join)
    if isinstance(adatas, list):
        adatas.clear()  # the harmonised copies replace them: hold one copy of the cells
    if harmonised[0].n_vars == 0:
        raise CartCohortError(
            "the samples share no gene, so they cannot be integrated. Fix: map all "
            "samples to the same reference, or set load.gene_join: union"
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
    return ad.AnnData(X=sp.csr_matrix(merged.X, dtype=np.float32), obs=merged.obs.copy(),
                      var=var)


def load_qc_cells(
    paths: Mapping[str, str | os.PathLike],
    *,
    qc_table: pd.DataFrame | None = None,
    qc_table_path: str = "results/tables/qc_samples.tsv",
    join: str = "intersect",
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
        with ``is_car``.
    """
    samples = list(paths)
    if qc_table is not None:
        samples = _qc_included_samples(samples, qc_table, qc_table_path=qc_table_path)
    if not samples:
        raise CartCohortError(
            f"{qc_table_path}: every sample is excluded by QC, nothing to integrate. "
            "Fix: check the QC summary and relax qc thresholds or qc.min_cells_per_sample"
        )
    parts = []
    for sample in samples:
        gex = _read_gex(paths[sample])
        if "qc_pass" not in gex.obs:
            raise CartCohortError(
                f"{paths[sample]}: gex.obs has no 'qc_pass' column. Fix: produce this "
                "file with the qc_sample rule"
            )
        keep = gex.obs["qc_pass"].astype(bool).to_numpy()
        if not keep.any():
            raise CartCohortError(
                f"{paths[sample]}: no QC-passing cell although the QC summary keeps "
                f"sample '{sample}'. Fix: re-run qc_summary or exclude the sample "
                "(config exclude_samples)"
            )
        part = gex[keep]
        x = part.X
        if not sp.issparse(x):
            x = sp.csr_matrix(x)
        parts.append(
            ad.AnnData(X=sp.csr_matrix(x, dtype=np.float32), obs=part.obs.copy(),
                       var=part.var.copy())
        )
        logger.info("%s: %d of %d cells pass QC", sample, int(keep.sum()), gex.n_obs)
    merged = _concat_samples(parts, join=join)  # empties `parts` as it goes
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


def gene_exclusions(
    var: pd.DataFrame,
    *,
    extra: Sequence[str] = (),
    car_key: str = "is_car",
) -> pd.Series:
    """Why each gene is kept out of the HVGs (empty string: eligible).

    Parameters
    ----------
    var
        Gene table indexed by gene symbol (``var`` of the AnnData).
    extra
        Further gene symbols to exclude (``integrate.exclude_genes``), exact match.
    car_key
        Boolean ``var`` column flagging CAR transgene features (absent: none).

    Returns
    -------
    pandas.Series
        Indexed like ``var``: ``""`` or the reason (``tcr_vdj``, ``bcr_vdj``, ``mito``,
        ``ribo``, ``car``, ``config``).
    """
    symbols = pd.Series(var.index.astype(str), index=var.index)
    reason = pd.Series("", index=var.index, dtype=object)
    for name, pattern in EXCLUDE_PATTERNS.items():
        hit = symbols.str.contains(pattern, flags=re.IGNORECASE, regex=True).to_numpy()
        reason[hit & (reason == "").to_numpy()] = name
    if car_key in var:
        car = var[car_key].fillna(False).astype(bool).to_numpy()
        reason[car] = "car"
    extra = [str(g) for g in extra]
    if extra:
        in_data = symbols.isin(extra).to_numpy()
        reason[in_data & (reason == "").to_numpy()] = "config"
        absent = sorted(set(extra) - set(symbols))
        if absent:
            logger.info("integrate.exclude_genes not in the data: %s", ", ".join(absent))
    return reason


HVG_SPANS = (0.3, 0.5, 1.0)
"""LOESS spans tried in turn by ``seurat_v3`` (0.3 is scanpy's default; larger spans
avoid the "near singularities" failure of small batches)."""


def select_hvgs(
    adata: ad.AnnData,
    *,
    n_top_genes: int,
    batch_key: str | None,
    exclude: pd.Series | None = None,
    counts_layer: str = "counts",
    flavor: str = "seurat_v3",
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
    import scanpy as sc

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
    var = pd.DataFrame(index=sub.var_names)
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
    """PCA output: cell scores, gene loadings (HVGs only) and variance ratio."""

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


# --------------------------------------------------------------------------- integration


def _require(method: str) -> Any:
    """Import the package a method needs, or raise naming it and how to install it."""
    module, how = _INSTALL_HINT[method]
    if importlib.util.find_spec(module) is None:
        raise CartCohortError(
            f"integration method '{method}' needs the Python package '{module}', which is "
            f"not installed in this environment. Fix: install it ({how}) and add it to "
            f"envs/integrate.yaml, or remove '{method}' from integrate.methods (and "
            "integrate.use) in config/config.yaml"
        )
    return importlib.import_module(module)


def _batches(obs: pd.DataFrame, batch_key: str, method: str) -> pd.Series:
    if batch_key not in obs:
        raise CartCohortError(
            f"obs has no column '{batch_key}' (integrate.batch_key). Fix: set "
            "integrate.batch_key to a sample-sheet column such as 'batch' or 'sample'"
        )
    batches = obs[batch_key].astype(str)
    if batches.nunique() < 2 and method != "none":
        raise CartCohortError(
            f"integration method '{method}' needs at least 2 values of obs['{batch_key}'], "
            f"found only {sorted(batches.unique())}. Fix: set integrate.methods: [none] "
            "and integrate.use: none, or choose another integrate.batch_key"
        )
    return batches


def integrate_embedding(
    x_pca: np.ndarray,
    obs: pd.DataFrame,
    *,
    method: str,
    batch_key: str,
    seed: int = 0,
    n_threads: int = 1,
    counts: sp.spmatrix | None = None,
    params: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Batch-corrected embedding of the cells.

    Parameters
    ----------
    x_pca
        Cells x PCs.
    obs
        Cell table with ``batch_key``.
    method
        ``harmony``, ``scanorama``, ``scvi`` or ``none`` (``X_pca`` itself); ``bbknn``
        also returns ``X_pca`` (it corrects the graph, see :func:`embed_and_cluster`).
    batch_key
        ``obs`` column with the batch of each cell.
    seed
        Random seed.
    n_threads
        Threads for harmony.
    counts
        Raw counts of the HVGs (cells x HVGs); needed by ``scvi`` only.
    params
        Method-specific keyword arguments (``integrate.<method>`` in the config), e.g.
        harmony ``theta``, ``lamb``, ``sigma``, ``nclust``, ``max_iter_harmony``.

    Returns
    -------
    numpy.ndarray
        Cells x dimensions, float32.
    """
    params = dict(params or {})
    if method not in METHODS:
        raise CartCohortError(
            f"unknown integration method {method!r}; choose from {', '.join(METHODS)}"
        )
    x_pca = np.asarray(x_pca, dtype=np.float32)
    n = x_pca.shape[0]
    if method == "none":
        return x_pca.copy()
    batches = _batches(obs, batch_key, method)
    if method == "harmony":
        import harmonypy

        allowed = {"theta", "lamb", "sigma", "nclust", "tau", "block_size",
                   "max_iter_harmony", "max_iter_kmeans", "epsilon_cluster",
                   "epsilon_harmony", "alpha"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise CartCohortError(
                f"config integrate.harmony has unknown keys {unknown}; allowed: "
                f"{sorted(allowed)}"
            )
        meta = pd.DataFrame({batch_key: batches.to_numpy()}, index=obs.index)
        result = harmonypy.run_harmony(
            x_pca.astype(np.float64), meta, [batch_key], random_state=seed,
            verbose=False, ncores=max(1, int(n_threads)), **params,
        )
        z = np.asarray(result.Z_corr)
        # harmonypy >= 2 returns cells x PCs; 0.0.x returned PCs x cells
        if z.shape == x_pca.shape:
            out = z
        elif z.shape == x_pca.shape[::-1]:
            out = z.T
        else:
            raise CartCohortError(
                f"harmonypy returned an embedding of shape {z.shape} for {x_pca.shape} "
                "input; this harmonypy version is not supported (use 2.x)"
            )
        return np.ascontiguousarray(out, dtype=np.float32)
    if method == "bbknn":
        _require("bbknn")
        return x_pca.copy()
    if method == "scanorama":
        scanorama = _require("scanorama")
        order = sorted(batches.unique())
        idx = [np.flatnonzero((batches == b).to_numpy()) for b in order]
        kw = {"knn": 20, "sigma": 15, "approx": True, "alpha": 0.10, "batch_size": 5000}
        kw.update(params)
        parts = scanorama.assemble([x_pca[i] for i in idx], verbose=0, **kw)
        out = np.zeros((n, parts[0].shape[1]), dtype=np.float32)
        for i, part in zip(idx, parts, strict=True):
            out[i] = np.asarray(part, dtype=np.float32)
        return out
    # scvi
    scvi = _require("scvi")
    if counts is None:
        raise CartCohortError("method 'scvi' needs raw counts of the HVGs (counts=...)")
    scvi.settings.seed = int(seed)
    tmp = ad.AnnData(X=sp.csr_matrix(counts, dtype=np.float32),
                     obs=pd.DataFrame({batch_key: batches.to_numpy()}, index=obs.index))
    scvi.model.SCVI.setup_anndata(tmp, batch_key=batch_key)
    model_kw = {"n_latent": int(params.pop("n_latent", 30))}
    for key in ("n_layers", "n_hidden", "gene_likelihood"):
        if key in params:
            model_kw[key] = params.pop(key)
    model = scvi.model.SCVI(tmp, **model_kw)
    model.train(**params)
    return np.asarray(model.get_latent_representation(), dtype=np.float32)


def leiden_key(resolution: float) -> str:
    """``obs`` column of the Leiden clustering at ``resolution`` (``leiden_r0.5``)."""
    return f"leiden_r{resolution}"


@dataclass(frozen=True)
class EmbeddingResult:
    """kNN graph and Leiden clusterings of one embedding (UMAP: :func:`umap_layout`)."""

    connectivities: sp.csr_matrix
    distances: sp.csr_matrix
    clusters: pd.DataFrame
    neighbors_params: dict


def embed_and_cluster(
    x_integrated: np.ndarray,
    obs: pd.DataFrame,
    *,
    n_neighbors: int = 15,
    resolutions: Sequence[float] = (1.0,),
    seed: int = 0,
    bbknn_batch_key: str | None = None,
    exact_knn_max_cells: int = 100_000,
) -> EmbeddingResult:
    """kNN graph (exact, or batch-balanced with bbknn) and Leiden clusterings.

    Parameters
    ----------
    x_integrated
        Cells x dimensions embedding the graph is built on.
    obs
        Cell table (index = cell ids; needs ``bbknn_batch_key`` for bbknn).
    n_neighbors
        Neighbours per cell (for bbknn: in total, split evenly across batches).
    resolutions
        Leiden resolutions; one ``obs`` column per resolution (:func:`leiden_key`).
    seed
        Random state of Leiden.
    bbknn_batch_key
        Build the graph with bbknn on this batch column instead of a plain kNN graph.
    exact_knn_max_cells
        Up to this many cells the kNN graph is exact (brute force); above, scanpy's
        approximate pynndescent graph (seeded) is used to bound the run time.

    Returns
    -------
    EmbeddingResult
    """
    import scanpy as sc

    tmp = ad.AnnData(obs=pd.DataFrame(index=obs.index.copy()))
    tmp.obsm["X_integrated"] = np.asarray(x_integrated, dtype=np.float32)
    k = int(min(n_neighbors, tmp.n_obs - 1))
    if bbknn_batch_key is not None:
        bbknn = _require("bbknn")
        tmp.obs[bbknn_batch_key] = obs[bbknn_batch_key].astype(str).to_numpy()
        n_batches = tmp.obs[bbknn_batch_key].nunique()
        within = max(1, int(round(k / n_batches)))
        bbknn.bbknn(tmp, batch_key=bbknn_batch_key, use_rep="X_integrated",
                    neighbors_within_batch=within, n_pcs=tmp.obsm["X_integrated"].shape[1])
        params = {"method": "bbknn", "neighbors_within_batch": within}
    elif tmp.n_obs <= exact_knn_max_cells:
        # exact kNN (sklearn, brute force): deterministic, independent of threads
        sc.pp.neighbors(tmp, n_neighbors=k, use_rep="X_integrated", transformer="sklearn",
                        random_state=seed)
        params = {"method": "exact_knn", "n_neighbors": k}
    else:
        logger.info("%d cells > %d: approximate kNN (pynndescent, seeded)", tmp.n_obs,
                    exact_knn_max_cells)
        sc.pp.neighbors(tmp, n_neighbors=k, use_rep="X_integrated", random_state=seed)
        params = {"method": "pynndescent", "n_neighbors": k}
    clusters = pd.DataFrame(index=obs.index.copy())
    for res in resolutions:
        key = leiden_key(res)
        sc.tl.leiden(tmp, resolution=float(res), flavor="igraph", n_iterations=2,
                     directed=False, random_state=seed, key_added=key)
        values = tmp.obs[key].astype(str)
        cats = sorted(values.unique(), key=lambda v: (len(v), v))  # "2" before "10"
        clusters[key] = pd.Categorical(values.to_numpy(), categories=cats)
        logger.info("Leiden resolution %s: %d clusters", res, clusters[key].nunique())
    return EmbeddingResult(
        connectivities=sp.csr_matrix(tmp.obsp["connectivities"]),
        distances=sp.csr_matrix(tmp.obsp["distances"]),
        clusters=clusters,
        neighbors_params=params,
    )


def prepare_cohort(
    adata: ad.AnnData,
    *,
    batch_key: str = "batch",
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    exclude_genes: Sequence[str] = (),
    scale: bool = True,
    hvg_flavor: str = "seurat_v3",
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
        See ``integrate`` in config/config.yaml.
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
    out.uns["preprocessing"] = {
        "batch_key": batch_key,
        "n_top_genes": int(n_top_genes),
        "n_hvg": int(hv.sum()),
        "hvg_flavor": hvg_info["flavor"],
        "hvg_span": float(hvg_info["span"]) if hvg_info["span"] else 0.0,
        "hvg_note": hvg_info["note"],
        "n_excluded_genes": int((exclude != "").sum()),
        "exclude_genes": [str(g) for g in exclude_genes],
        "scale": bool(scale),
        "n_pcs": int(pca.scores.shape[1]),
        "seed": int(seed),
    }
    _stringify_obs(out)
    return out


def integrate_prepared(
    prepared: ad.AnnData,
    *,
    method: str,
    batch_key: str = "batch",
    n_neighbors: int = 15,
    leiden_resolutions: Sequence[float] = (0.5, 1.0),
    embed: bool = True,
    seed: int = 0,
    n_threads: int = 1,
    method_params: Mapping[str, Any] | None = None,
) -> ad.AnnData:
    """Integrate one method on a prepared cohort: corrected embedding, kNN graph and,
    for the method used downstream, Leiden clusterings.

    Parameters
    ----------
    prepared
        Output of :func:`prepare_cohort` (or :func:`read_prepared`): ``obs``,
        ``var`` with ``highly_variable``, ``obsm['X_pca']``; ``layers['counts']``
        only for ``scvi``.
    method
        One of :data:`METHODS`.
    batch_key
        ``obs`` column with the batch to correct.
    n_neighbors, leiden_resolutions
        See ``integrate`` in config/config.yaml.
    embed
        Compute the Leiden clusterings. Methods compared only by the metrics need
        the graph alone. UMAP is not computed here but by :func:`umap_layout` (rule
        ``umap``), so that annotation, which needs the graph and clusters only, does
        not wait for the layout.
    seed
        Random seed of the method, UMAP and Leiden.
    n_threads
        Threads for harmony.
    method_params
        Extra keyword arguments of the method (``integrate.<method>``).

    Returns
    -------
    AnnData
        ``integrate/{method}.h5ad`` (no expression matrix): ``obs`` (all load/QC
        columns, plus ``leiden_r{res}`` and ``leiden`` when ``embed``), ``var``,
        ``obsm`` ``X_pca``, ``X_integrated``, ``obsp`` graph, ``uns['integration']``.
    """
    if method not in METHODS:
        raise CartCohortError(
            f"unknown integration method {method!r}; choose from {', '.join(METHODS)}"
        )
    if embed and not leiden_resolutions:
        raise CartCohortError("integrate.leiden_resolutions is empty; give at least one")
    if "X_pca" not in prepared.obsm or "highly_variable" not in prepared.var:
        raise CartCohortError(
            "the prepared cohort has no obsm['X_pca'] / var['highly_variable']. Fix: "
            "re-run the merge_samples rule"
        )
    if method != "none":
        _batches(prepared.obs, batch_key, method)
        if method in _INSTALL_HINT:
            _require(method)  # fail before the expensive steps
    hv = prepared.var["highly_variable"].to_numpy(dtype=bool)
    counts = None
    if method == "scvi":
        if "counts" not in prepared.layers:
            raise CartCohortError("method 'scvi' needs layers['counts'] of the prepared cohort")
        counts = sp.csr_matrix(prepared.layers["counts"])[:, hv]
    out = ad.AnnData(obs=prepared.obs.copy(), var=prepared.var.copy())
    out.obsm["X_pca"] = np.asarray(prepared.obsm["X_pca"], dtype=np.float32)
    x_int = integrate_embedding(
        out.obsm["X_pca"], out.obs, method=method, batch_key=batch_key, seed=seed,
        n_threads=n_threads, counts=counts, params=method_params,
    )
    out.obsm["X_integrated"] = x_int
    emb = embed_and_cluster(
        x_int, out.obs, n_neighbors=n_neighbors,
        resolutions=leiden_resolutions if embed else (),
        seed=seed, bbknn_batch_key=batch_key if method == "bbknn" else None,
    )
    out.obsp["connectivities"] = emb.connectivities
    out.obsp["distances"] = emb.distances
    for col in emb.clusters.columns:
        out.obs[col] = emb.clusters[col].array
    if embed:
        out.obs["leiden"] = emb.clusters[leiden_key(leiden_resolutions[0])].array
    out.uns["neighbors"] = {
        "connectivities_key": "connectivities",
        "distances_key": "distances",
        "params": {"use_rep": "X_integrated", **emb.neighbors_params},
    }
    batches = out.obs[batch_key].astype(str) if batch_key in out.obs else None
    pre = dict(prepared.uns.get("preprocessing", {}))
    out.uns["integration"] = {
        **pre,
        "method": method,
        "output": "graph" if method in GRAPH_METHODS else "embedding",
        "batch_key": batch_key,
        "n_batches": int(batches.nunique()) if batches is not None else 1,
        "n_neighbors": int(n_neighbors),
        "embedded": bool(embed),
        "leiden_resolutions": [float(r) for r in leiden_resolutions] if embed else [],
        "seed": int(seed),
        "method_params": json.dumps(dict(method_params or {}), sort_keys=True, default=str),
        "samples": sorted(out.obs["sample"].astype(str).unique())
        if "sample" in out.obs else [],
    }
    if "pca" in prepared.uns:
        out.uns["pca"] = dict(prepared.uns["pca"])
    _stringify_obs(out)
    return out


def umap_layout(
    integrated: ad.AnnData,
    *,
    min_dist: float = 0.3,
    n_epochs: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """UMAP of the kNN graph of one integrated method (rule ``umap``).

    Parameters
    ----------
    integrated
        :func:`integrate_prepared` output: ``obsp`` graph, ``uns['neighbors']``,
        ``obsm['X_integrated']``.
    min_dist
        UMAP ``min_dist`` (``integrate.umap_min_dist``).
    n_epochs
        Optimisation epochs (``integrate.umap_n_epochs``); ``None`` = UMAP's default
        (500 up to 10,000 cells, 200 above).
    seed
        Random state (seeded UMAP runs single-threaded and is reproducible).

    Returns
    -------
    numpy.ndarray
        Cells x 2, float32.
    """
    import scanpy as sc

    for key in ("connectivities", "distances"):
        if key not in integrated.obsp:
            raise CartCohortError(
                f"the integrated object has no obsp['{key}']. Fix: re-run rule integrate"
            )
    tmp = ad.AnnData(obs=pd.DataFrame(index=integrated.obs_names.copy()))
    tmp.obsm["X_integrated"] = np.asarray(integrated.obsm["X_integrated"], dtype=np.float32)
    tmp.obsp["connectivities"] = integrated.obsp["connectivities"]
    tmp.obsp["distances"] = integrated.obsp["distances"]
    tmp.uns["neighbors"] = {
        "connectivities_key": "connectivities", "distances_key": "distances",
        "params": {"use_rep": "X_integrated", "method": "umap",
                   "n_neighbors": int(integrated.uns.get("integration", {}).get(
                       "n_neighbors", 15))},
    }
    sc.tl.umap(tmp, min_dist=float(min_dist), random_state=int(seed),
               maxiter=int(n_epochs) if n_epochs else None)
    return np.asarray(tmp.obsm["X_umap"], dtype=np.float32)


def integrate_cohort(
    adata: ad.AnnData,
    *,
    method: str,
    batch_key: str = "batch",
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    leiden_resolutions: Sequence[float] = (0.5, 1.0),
    umap_min_dist: float = 0.3,
    umap_n_epochs: int | None = None,
    exclude_genes: Sequence[str] = (),
    scale: bool = True,
    hvg_flavor: str = "seurat_v3",
    seed: int = 0,
    n_threads: int = 1,
    method_params: Mapping[str, Any] | None = None,
) -> ad.AnnData:
    """Normalise, select HVGs, PCA, integrate, neighbours, UMAP and Leiden in one call:
    :func:`prepare_cohort`, :func:`integrate_prepared`, :func:`umap_layout` and
    :func:`assemble_integrated` chained (the workflow runs them as separate rules).

    Parameters
    ----------
    adata
        Merged cells (:func:`load_qc_cells`): ``X`` raw counts.
    method, batch_key, n_top_genes, n_pcs, n_neighbors, leiden_resolutions, \
umap_min_dist, umap_n_epochs, exclude_genes, scale, hvg_flavor, seed, n_threads, \
method_params
        See :func:`prepare_cohort` and :func:`integrate_prepared`.

    Returns
    -------
    AnnData
        See :func:`assemble_integrated`.
    """
    if method not in METHODS:
        raise CartCohortError(
            f"unknown integration method {method!r}; choose from {', '.join(METHODS)}"
        )
    if not leiden_resolutions:
        raise CartCohortError("integrate.leiden_resolutions is empty; give at least one")
    if method != "none":
        _batches(adata.obs, batch_key, method)
        if method in _INSTALL_HINT:
            _require(method)  # fail before the expensive steps
    prepared = prepare_cohort(
        adata, batch_key=batch_key, n_top_genes=n_top_genes, n_pcs=n_pcs,
        exclude_genes=exclude_genes, scale=scale, hvg_flavor=hvg_flavor, seed=seed,
    )
    integrated = integrate_prepared(
        prepared, method=method, batch_key=batch_key, n_neighbors=n_neighbors,
        leiden_resolutions=leiden_resolutions, embed=True, seed=seed, n_threads=n_threads,
        method_params=method_params,
    )
    umap = umap_layout(integrated, min_dist=umap_min_dist, n_epochs=umap_n_epochs, seed=seed)
    return assemble_integrated(prepared, integrated, umap=umap)


def _stringify_obs(adata: ad.AnnData) -> None:
    """Make object ``obs`` columns writable to h5ad (strings; missing stays missing)."""
    for col in adata.obs.columns:
        s = adata.obs[col]
        if s.dtype == object:
            adata.obs[col] = s.map(lambda v: v if v is None or (isinstance(v, float) and v != v)
                                   else str(v))


# --------------------------------------------------------------------------- metrics


def knn(embedding: np.ndarray, *, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every cell (itself excluded), euclidean.

    Returns
    -------
    (indices, distances)
        Both cells x k; neighbours sorted by distance.
    """
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(embedding, dtype=np.float64)
    n = x.shape[0]
    k = int(min(k, n - 1))
    if k < 1:
        raise CartCohortError("need at least 2 cells for a kNN graph")
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", n_jobs=1).fit(x)
    dist, idx = nn.kneighbors(x)
    # drop each cell itself (not necessarily in column 0 when points coincide)
    is_self = idx == np.arange(n)[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    keep = ~is_self
    return idx[keep].reshape(n, k), dist[keep].reshape(n, k)


def knn_from_graph(distances: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists of a sparse distance graph, padded (index -1, distance inf).

    Used for graph-output methods (bbknn) where no corrected embedding exists.
    """
    g = sp.csr_matrix(distances)
    g.setdiag(0)
    g.eliminate_zeros()
    n = g.shape[0]
    deg = np.diff(g.indptr)
    k = int(deg.max()) if n else 0
    idx = np.full((n, k), -1, dtype=np.int64)
    dist = np.full((n, k), np.inf)
    rows = np.repeat(np.arange(n), deg)
    cols = np.arange(g.nnz) - np.repeat(g.indptr[:-1], deg)
    idx[rows, cols] = g.indices
    dist[rows, cols] = g.data
    return idx, dist


def lisi(
    indices: np.ndarray,
    distances: np.ndarray,
    labels: Sequence | np.ndarray,
    *,
    perplexity: float = 30.0,
    tol: float = 1e-5,
    max_iter: int = 50,
) -> np.ndarray:
    """Local inverse Simpson's index of every cell (Korsunsky et al. 2019).

    Neighbour weights are a Gaussian kernel on the distances whose bandwidth is
    calibrated per cell to the given perplexity (binary search, all cells at once);
    LISI = 1 / sum over categories of (weight of neighbours in the category)^2, i.e.
    the effective number of categories in the neighbourhood (1 to n categories).

    Parameters
    ----------
    indices, distances
        Cells x k neighbour lists (:func:`knn` or :func:`knn_from_graph`; -1/inf pad).
    labels
        Category of every cell.
    perplexity
        Effective neighbourhood size (should be <= k / 3).

    Returns
    -------
    numpy.ndarray
        LISI per cell (NaN for a cell without neighbours).
    """
    codes, uniques = pd.factorize(pd.Series(np.asarray(labels)).astype(str), sort=True)
    n_cat = len(uniques)
    idx = np.asarray(indices)
    d = np.asarray(distances, dtype=np.float64)
    valid = (idx >= 0) & np.isfinite(d)
    n, k = d.shape
    # shift by each row's smallest distance: exact (normalised weights and entropy are
    # unchanged) and avoids exp underflow for far-away neighbourhoods
    dmin = np.where(valid, d, np.inf).min(axis=1, initial=np.inf)
    dmin = np.where(np.isfinite(dmin), dmin, 0.0)
    ds = np.where(valid, d - dmin[:, None], 0.0)
    log_u = np.log(perplexity)

    def entropy(beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.where(valid, np.exp(-ds * beta[:, None]), 0.0)
        sp_ = p.sum(axis=1)
        safe = np.where(sp_ > 0, sp_, 1.0)
        h = np.log(safe) + beta * (ds * p).sum(axis=1) / safe
        return np.where(sp_ > 0, h, 0.0), p / safe[:, None]

    beta = np.ones(n)
    bmin = np.full(n, -np.inf)
    bmax = np.full(n, np.inf)
    h, p = entropy(beta)
    for _ in range(max_iter):
        diff = h - log_u
        active = np.abs(diff) > tol
        if not active.any():
            break
        up = active & (diff > 0)
        down = active & (diff <= 0)
        bmin = np.where(up, beta, bmin)
        bmax = np.where(down, beta, bmax)
        beta = np.where(
            up, np.where(np.isinf(bmax), beta * 2, (beta + bmax) / 2),
            np.where(down, np.where(np.isinf(bmin), beta / 2, (beta + bmin) / 2), beta),
        )
        h, p = entropy(beta)
    neigh_codes = np.where(valid, codes[np.where(idx >= 0, idx, 0)], 0)
    flat = (np.arange(n)[:, None] * n_cat + neigh_codes).ravel()
    mass = np.bincount(flat, weights=np.where(valid, p, 0.0).ravel(),
                       minlength=n * n_cat).reshape(n, n_cat)
    simpson = (mass**2).sum(axis=1)
    with np.errstate(divide="ignore"):
        out = np.where(simpson > 0, 1.0 / np.where(simpson > 0, simpson, 1.0), np.nan)
    return out


def ilisi(
    indices: np.ndarray, distances: np.ndarray, batches: Sequence, *, perplexity: float = 30.0
) -> float:
    """Batch mixing: (median iLISI - 1) / (n batches - 1), in [0, 1], 1 = fully mixed.

    With unequal batch sizes the best attainable value is below 1.
    """
    n_b = pd.Series(np.asarray(batches)).nunique()
    if n_b < 2:
        return float("nan")
    med = np.nanmedian(lisi(indices, distances, batches, perplexity=perplexity))
    return float((med - 1) / (n_b - 1))


def clisi(
    indices: np.ndarray, distances: np.ndarray, labels: Sequence, *, perplexity: float = 30.0
) -> float:
    """Label separation: (n labels - median cLISI) / (n labels - 1), 1 = pure neighbourhoods."""
    n_l = pd.Series(np.asarray(labels)).nunique()
    if n_l < 2:
        return float("nan")
    med = np.nanmedian(lisi(indices, distances, labels, perplexity=perplexity))
    return float((n_l - med) / (n_l - 1))


def silhouette_samples(
    x: np.ndarray, labels: Sequence, *, chunk_size: int = 1024
) -> np.ndarray:
    """Silhouette width of every cell (euclidean), computed in row chunks.

    s = (b - a) / max(a, b) with a the mean distance to the other cells of the own
    cluster and b the smallest mean distance to another cluster; 0 for cells of a
    singleton cluster (as scikit-learn).
    """
    x = np.asarray(x, dtype=np.float64)
    codes, uniques = pd.factorize(pd.Series(np.asarray(labels)).astype(str), sort=True)
    n, n_cat = x.shape[0], len(uniques)
    if n_cat < 2:
        raise CartCohortError("silhouette needs at least 2 distinct labels")
    onehot = sp.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, n_cat))
    sizes = np.bincount(codes, minlength=n_cat).astype(np.float64)
    sq = (x**2).sum(axis=1)
    out = np.empty(n)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        d2 = sq[start:stop, None] + sq[None, :] - 2 * x[start:stop] @ x.T
        d = np.sqrt(np.maximum(d2, 0.0))
        d[np.arange(stop - start), np.arange(start, stop)] = 0.0
        sums = np.asarray((onehot.T @ d.T).T)
        own = codes[start:stop]
        rows = np.arange(stop - start)
        own_n = sizes[own] - 1
        a = np.divide(sums[rows, own], own_n, out=np.zeros(stop - start), where=own_n > 0)
        means = sums / sizes[None, :]
        means[rows, own] = np.inf
        b = means.min(axis=1)
        denom = np.maximum(a, b)
        s = np.divide(b - a, denom, out=np.zeros(stop - start), where=denom > 0)
        s[own_n == 0] = 0.0
        out[start:stop] = s
    return out


def label_asw(x: np.ndarray, labels: Sequence) -> float:
    """Label (cell-state) separation: (mean silhouette of labels + 1) / 2, in [0, 1]."""
    return float((silhouette_samples(x, labels).mean() + 1) / 2)


def batch_asw(x: np.ndarray, batches: Sequence, labels: Sequence) -> float:
    """Batch mixing within labels (scib): mean over labels of mean(1 - |s_batch|).

    Within each label, the silhouette of the cells with their batch as cluster is
    computed; 1 - |s| is 1 when batches overlap and 0 when they are separated.
    Labels present in a single batch (or with one cell per batch) are skipped.
    """
    b = np.asarray(pd.Series(np.asarray(batches)).astype(str))
    lab = np.asarray(pd.Series(np.asarray(labels)).astype(str))
    x = np.asarray(x, dtype=np.float64)
    scores = []
    for value in np.unique(lab):
        sel = lab == value
        nb = len(np.unique(b[sel]))
        if nb < 2 or nb == sel.sum():
            continue
        s = silhouette_samples(x[sel], b[sel])
        scores.append(float(np.mean(1 - np.abs(s))))
    return float(np.mean(scores)) if scores else float("nan")


def graph_connectivity(graph: sp.spmatrix, labels: Sequence) -> float:
    """Mean over labels of the fraction of the label's cells in its largest connected
    component of the kNN graph restricted to that label (1 = every label connected)."""
    from scipy.sparse.csgraph import connected_components

    g = sp.csr_matrix(graph)
    lab = np.asarray(pd.Series(np.asarray(labels)).astype(str))
    fracs = []
    for value in np.unique(lab):
        sel = np.flatnonzero(lab == value)
        _, comp = connected_components(g[sel][:, sel], directed=True, connection="strong")
        fracs.append(np.bincount(comp).max() / sel.size)
    return float(np.mean(fracs))


METRIC_GROUPS = {
    "ilisi": "batch_correction",
    "batch_asw": "batch_correction",
    "graph_connectivity": "batch_correction",
    "clisi": "bio_conservation",
    "label_asw": "bio_conservation",
}


def _uniform(knn_lists: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists with every real neighbour at distance 1 (padding stays inf)."""
    idx, dist = knn_lists
    return idx, np.where(np.isfinite(dist), 1.0, np.inf)


def integration_metrics(
    adata: ad.AnnData,
    *,
    batch_key: str,
    label_key: str,
    use_rep: str = "X_integrated",
    perplexity: float = 30.0,
    asw_max_cells: int = 20000,
    seed: int = 0,
) -> pd.DataFrame:
    """Batch-mixing and label-conservation metrics of one integrated AnnData.

    Parameters
    ----------
    adata
        ``integrate/{method}.h5ad``: ``obsm[use_rep]``, ``obsp['connectivities']``
        (and ``obsp['distances']`` for graph-output methods).
    batch_key
        ``obs`` column with batches.
    label_key
        ``obs`` column with the biological label (cell state or a reference
        clustering) whose separation should be conserved. Cells with a missing
        label are left out of the label metrics (not of iLISI).
    use_rep
        Embedding the embedding metrics are computed on.
    perplexity
        LISI perplexity; k = 3 x perplexity neighbours (exact kNN on ``use_rep``).
    asw_max_cells
        Silhouettes use a random subset of this many cells (seeded) when larger.
    seed
        Seed of that subset.

    Returns
    -------
    pandas.DataFrame
        ``metric, value, direction`` for ``ilisi, batch_asw, graph_connectivity,
        clisi, label_asw`` and the aggregates ``batch_correction`` (mean of the first
        three), ``bio_conservation`` (mean of the last two) and ``overall``
        (0.4 x batch + 0.6 x bio, as scib). ASW metrics are NA for graph-output
        methods (bbknn leaves the embedding unchanged).
    """
    for key in (batch_key, label_key):
        if key not in adata.obs:
            raise CartCohortError(
                f"obs has no column '{key}' needed for integration metrics. Fix: set "
                "integrate.batch_key / integrate.label_key to an existing column"
            )
    batches = adata.obs[batch_key].astype(str).to_numpy()
    has_label = adata.obs[label_key].notna().to_numpy()
    if not has_label.any():
        raise CartCohortError(f"obs['{label_key}'] is missing for every cell")
    labels = adata.obs[label_key].astype(str).to_numpy()
    graph_output = adata.uns.get("integration", {}).get("output", "embedding") == "graph"
    if graph_output:
        # The corrected graph defines who is a neighbour; its stored distances are the
        # uncorrected PCA distances, which would weight same-batch neighbours up again,
        # so graph neighbours are weighted uniformly (scib's graph LISI idea).
        idx, dist = _uniform(knn_from_graph(adata.obsp["distances"]))
        perp = min(perplexity, max(idx.shape[1] / 3, 1.0))
        x = None
    else:
        x = np.asarray(adata.obsm[use_rep], dtype=np.float64)
        perp = min(perplexity, max((adata.n_obs - 1) / 3, 1.0))
        idx, dist = knn(x, k=int(3 * perp))
    values = {"ilisi": ilisi(idx, dist, batches, perplexity=perp)}
    graph = sp.csr_matrix(adata.obsp["connectivities"])
    if not has_label.all():
        # label metrics on the labelled cells only (neighbours among them)
        logger.info("%d of %d cells have no '%s'; label metrics use the others",
                    int((~has_label).sum()), adata.n_obs, label_key)
        keep = np.flatnonzero(has_label)
        labels, batches_l = labels[keep], batches[keep]
        graph = graph[keep][:, keep]
        if graph_output:
            idx, dist = _uniform(
                knn_from_graph(sp.csr_matrix(adata.obsp["distances"])[keep][:, keep]))
            perp = min(perplexity, max(idx.shape[1] / 3, 1.0))
        else:
            x = x[keep]
            perp = min(perplexity, max((keep.size - 1) / 3, 1.0))
            idx, dist = knn(x, k=int(3 * perp))
    else:
        batches_l = batches
    values["clisi"] = clisi(idx, dist, labels, perplexity=perp)
    values["graph_connectivity"] = graph_connectivity(graph, labels)
    if x is None:
        values["batch_asw"] = float("nan")
        values["label_asw"] = float("nan")
        logger.info("graph-output method: ASW metrics not applicable (NA)")
    else:
        n_l = x.shape[0]
        sel = np.arange(n_l)
        if n_l > asw_max_cells:
            rng = np.random.default_rng(seed)
            sel = np.sort(rng.choice(n_l, size=asw_max_cells, replace=False))
            logger.info("silhouettes on a random subset of %d of %d cells", sel.size, n_l)
        values["batch_asw"] = batch_asw(x[sel], batches_l[sel], labels[sel])
        values["label_asw"] = label_asw(x[sel], labels[sel]) if len(
            np.unique(labels[sel])) > 1 else float("nan")
    batch = np.nanmean([values[m] for m, g in METRIC_GROUPS.items() if g == "batch_correction"])
    bio = np.nanmean([values[m] for m, g in METRIC_GROUPS.items() if g == "bio_conservation"])
    values["batch_correction"] = float(batch)
    values["bio_conservation"] = float(bio)
    values["overall"] = float(0.4 * batch + 0.6 * bio)
    order = ["ilisi", "batch_asw", "graph_connectivity", "clisi", "label_asw",
             "batch_correction", "bio_conservation", "overall"]
    return pd.DataFrame(
        {"metric": order, "value": [values[m] for m in order],
         "direction": ["higher_better"] * len(order)}
    )


def subsample_for_metrics(
    adata: ad.AnnData,
    *,
    max_cells: int,
    n_neighbors: int = 15,
    seed: int = 0,
) -> ad.AnnData:
    """A seeded random subset of the cells, with its own kNN graph, on which the
    integration metrics of a large cohort are computed (exact 3 x perplexity
    neighbours and silhouettes are quadratic in the number of cells).

    Parameters
    ----------
    adata
        ``integrate/{method}.h5ad`` (:func:`read_integration`).
    max_cells
        Subset size; ``adata`` is returned unchanged when it has no more cells.
    n_neighbors
        Neighbours of the subset's graph (``integrate.n_neighbors``).
    seed
        Seed of the subset. The subset depends only on the cell ids and the seed,
        so every method is scored on the same cells.

    Returns
    -------
    AnnData
        The subset. Embedding methods get a kNN graph rebuilt on the subset's
        ``X_integrated`` (graph connectivity then measures the subset's graph, as
        scib does on subsampled data); graph-output methods (bbknn) keep the
        induced subgraph of their corrected graph.
    """
    n = adata.n_obs
    if n <= max_cells:
        return adata
    order = np.argsort(adata.obs_names.to_numpy(dtype=str), kind="mergesort")
    rng = np.random.default_rng(seed)
    sel = np.sort(order[rng.choice(n, size=int(max_cells), replace=False)])
    sub = adata[sel].copy()
    logger.info("metrics on a random subset of %d of %d cells", sub.n_obs, n)
    if sub.uns.get("integration", {}).get("output", "embedding") != "graph":
        emb = embed_and_cluster(
            np.asarray(sub.obsm["X_integrated"]), sub.obs, n_neighbors=n_neighbors,
            resolutions=(), seed=seed,
        )
        sub.obsp["connectivities"] = emb.connectivities
        sub.obsp["distances"] = emb.distances
    return sub


def reference_labels(
    adata: ad.AnnData,
    *,
    use_rep: str = "X_pca",
    n_neighbors: int = 15,
    resolution: float = 0.5,
    seed: int = 0,
) -> pd.Series:
    """Leiden clusters of the unintegrated embedding, the default label for
    bio-conservation metrics before cell states are annotated.

    Every method's file carries the same ``X_pca`` (HVGs and PCA precede
    integration), so this label is identical for all methods. It favours ``none``
    (its own clusters, including any batch-driven split), so a method that keeps
    cLISI / label ASW close to ``none`` while improving mixing conserved biology.
    """
    emb = embed_and_cluster(
        np.asarray(adata.obsm[use_rep]), adata.obs, n_neighbors=n_neighbors,
        resolutions=[resolution], seed=seed,
    )
    return emb.clusters[leiden_key(resolution)].rename("leiden_unintegrated")
