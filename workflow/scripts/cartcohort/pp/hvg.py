"""Highly variable genes of a cohort that is never held in memory at once.

:func:`seurat_v3_chunked` computes scanpy's ``seurat_v3`` selection (Stuart et al. 2019,
doi:10.1016/j.cell.2019.05.031; scanpy's ``_highly_variable_genes_seurat_v3``) from a
cohort read chunk by chunk, e.g. one library file at a time. Per batch it needs

1. the per-gene mean and variance (pass 1: :class:`GeneMoments`, sums and sums of
   squares per chunk; exact for counts, so the result does not depend on how the
   cohort is cut into chunks);
2. a LOESS of log10 variance on log10 mean (the same ``skmisc`` fit as scanpy), which
   gives each gene's clip value ``mean + sqrt(n) * regularised sd``;
3. the sums and sums of squares of the clipped counts (pass 2, :func:`clipped_sums`).

The clip value depends on the whole batch, so pass 2 cannot run before pass 1 has
seen every chunk: the chunks are read twice. Peak memory is one chunk plus a few
vectors per batch and gene. The ranking and the combination over batches
(median rank, number of batches in which a gene is highly variable) are scanpy's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

Chunk = tuple[sp.spmatrix | np.ndarray, np.ndarray]
"""Cells x genes counts of one chunk and the batch label of each of its cells."""


@dataclass(frozen=True)
class GeneMoments:
    """Cell count and per-gene sums and sums of squares of a set of cells.

    For raw counts (integers) the sums are exact in float64, so moments combined from
    any cut of the cohort into chunks are identical, and equal to scanpy's, which
    computes the mean and variance from the same sums.

    Attributes
    ----------
    n
        Number of cells.
    s1, s2
        Per-gene sum and sum of squares (float64).
    """

    n: int
    s1: np.ndarray
    s2: np.ndarray

    @classmethod
    def of(cls, x: sp.spmatrix | np.ndarray) -> GeneMoments:
        """Sums of the cells of ``x`` (cells x genes); sparse input is never densified."""
        if sp.issparse(x):
            x = sp.csr_matrix(x)
            data = x.data.astype(np.float64)
            s1 = np.bincount(x.indices, weights=data, minlength=x.shape[1])
            s2 = np.bincount(x.indices, weights=data * data, minlength=x.shape[1])
        else:
            xd = np.asarray(x, dtype=np.float64)
            s1, s2 = xd.sum(axis=0), (xd * xd).sum(axis=0)
        return cls(x.shape[0], s1, s2)

    def combine(self, other: GeneMoments) -> GeneMoments:
        """Sums of the union of two disjoint sets of cells."""
        return GeneMoments(self.n + other.n, self.s1 + other.s1, self.s2 + other.s2)

    @property
    def mean(self) -> np.ndarray:
        """Per-gene mean."""
        return self.s1 / self.n

    @property
    def var(self) -> np.ndarray:
        """Unbiased per-gene variance (R's convention), computed as scanpy does."""
        if self.n < 2:
            return np.zeros_like(self.s1)
        mean = self.s1 / self.n
        return (self.s2 / self.n - mean**2) * (self.n / (self.n - 1))


def clipped_sums(x: sp.spmatrix | np.ndarray, *, clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene sum and sum of squares of ``min(x, clip)`` (zeros stay zero: clip ≥ 0).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Sums and sums of squares, float64.
    """
    if sp.issparse(x):
        x = sp.csr_matrix(x)
        v = np.minimum(x.data.astype(np.float64), clip[x.indices])
        s = np.bincount(x.indices, weights=v, minlength=x.shape[1])
        ss = np.bincount(x.indices, weights=v * v, minlength=x.shape[1])
        return s, ss
    v = np.minimum(np.asarray(x, dtype=np.float64), clip)
    return v.sum(axis=0), (v * v).sum(axis=0)


def _batch_moments(chunks: Iterable[Chunk], n_genes: int) -> dict[str, GeneMoments]:
    moments: dict[str, GeneMoments] = {}
    for x, batches in chunks:
        if x.shape[1] != n_genes:
            raise ValueError(f"a chunk has {x.shape[1]} genes, expected {n_genes}")
        batches = np.asarray(batches).astype(str)
        for b in np.unique(batches):
            m = GeneMoments.of(x[batches == b])
            moments[b] = moments[b].combine(m) if b in moments else m
    return moments


def _clip_values(m: GeneMoments, *, span: float) -> tuple[np.ndarray, np.ndarray]:
    """Regularised sd and clip value of every gene of one batch (scanpy's LOESS)."""
    from skmisc.loess import loess

    var = m.var
    not_const = var > 0
    fitted = np.zeros(len(var), dtype=np.float64)
    model = loess(np.log10(m.mean[not_const]), np.log10(var[not_const]), span=span, degree=2)
    model.fit()
    fitted[not_const] = model.outputs.fitted_values
    reg_std = np.sqrt(10**fitted)
    return reg_std, reg_std * np.sqrt(m.n) + m.mean


def _rank_over_batches(norm_vars: np.ndarray, n_top_genes: int) -> tuple[np.ndarray, np.ndarray]:
    """Median rank among the batches where a gene is in the top ``n_top_genes``, and in how
    many batches it is (Seurat's SelectIntegrationFeatures, as scanpy)."""
    ranked = np.argsort(np.argsort(-norm_vars, axis=1), axis=1).astype(np.float32)
    nbatches = np.sum(ranked < n_top_genes, axis=0)
    ranked[ranked >= n_top_genes] = np.nan
    median = np.ma.median(np.ma.masked_invalid(ranked), axis=0).filled(np.nan)
    return median, nbatches


def seurat_v3_clips(
    moments: Mapping[str, GeneMoments], *, span: float = 0.3
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per batch, the regularised sd and the clip value of every gene (scanpy's LOESS):
    what pass 2 (:func:`clipped_sums`) needs.

    Raises
    ------
    ValueError
        From the LOESS fit when a batch is too small ("near singularities"), as scanpy.
    """
    return {b: _clip_values(moments[b], span=span) for b in sorted(moments)}


def seurat_v3_table(
    moments: Mapping[str, GeneMoments],
    clips: Mapping[str, tuple[np.ndarray, np.ndarray]],
    sums: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    var_names: pd.Index,
    n_top_genes: int,
) -> pd.DataFrame:
    """scanpy's ``seurat_v3`` table from the two passes' per-batch statistics.

    Parameters
    ----------
    moments
        Batch -> :class:`GeneMoments` of the raw counts (pass 1).
    clips
        :func:`seurat_v3_clips` of ``moments``.
    sums
        Batch -> :func:`clipped_sums` of its cells with its clip values (pass 2).
    var_names
        Gene names (the index of the result).
    n_top_genes
        Number of genes flagged highly variable.

    Returns
    -------
    pandas.DataFrame
        As :func:`seurat_v3_chunked`.
    """
    batches = sorted(moments)
    norm_vars = np.vstack([
        (moments[b].n * moments[b].mean**2 + sums[b][1] - 2 * sums[b][0] * moments[b].mean)
        / ((moments[b].n - 1) * clips[b][0] ** 2)
        for b in batches
    ])
    total = moments[batches[0]]
    for b in batches[1:]:
        total = total.combine(moments[b])
    median, nbatches = _rank_over_batches(norm_vars, n_top_genes)
    out = pd.DataFrame(index=pd.Index(var_names))
    out["means"], out["variances"] = total.mean, total.var
    out["variances_norm"] = norm_vars.mean(axis=0)
    out["highly_variable_rank"] = median
    out["highly_variable_nbatches"] = nbatches
    order = out.sort_values(
        ["highly_variable_rank", "highly_variable_nbatches"], ascending=[True, False],
        na_position="last", kind="mergesort",
    ).index
    out["highly_variable"] = False
    out.loc[order[: int(n_top_genes)], "highly_variable"] = True
    return out


def seurat_v3_chunked(
    chunks: Callable[[], Iterable[Chunk]],
    *,
    var_names: pd.Index,
    n_top_genes: int,
    span: float = 0.3,
) -> pd.DataFrame:
    """scanpy's ``seurat_v3`` highly variable genes, reading the counts chunk by chunk.

    Parameters
    ----------
    chunks
        Called twice; each call yields ``(counts, batch_labels)`` for disjoint sets of
        cells that together make the cohort (raw counts, cells x genes, the genes of
        ``var_names`` in that order). A batch may span several chunks.
    var_names
        Gene names (the index of the result).
    n_top_genes
        Number of genes flagged highly variable.
    span
        LOESS span (scanpy's default 0.3).

    Returns
    -------
    pandas.DataFrame
        scanpy's columns: ``means``, ``variances``, ``variances_norm``,
        ``highly_variable_rank``, ``highly_variable_nbatches``, ``highly_variable``.

    Raises
    ------
    ValueError
        From the LOESS fit when a batch is too small ("near singularities"), as scanpy.
    """
    n_genes = len(var_names)
    moments = _batch_moments(chunks(), n_genes)
    clips = seurat_v3_clips(moments, span=span)
    sums = {b: (np.zeros(n_genes), np.zeros(n_genes)) for b in moments}
    for x, labels in chunks():
        labels = np.asarray(labels).astype(str)
        for b in np.unique(labels):
            s, ss = clipped_sums(x[labels == b], clip=clips[b][1])
            sums[b][0][:] += s
            sums[b][1][:] += ss
    return seurat_v3_table(moments, clips, sums, var_names=var_names,
                           n_top_genes=n_top_genes)


# --------------------------------------------------------------------------- seurat


def expm1_moments(x: sp.spmatrix) -> tuple[GeneMoments, np.ndarray]:
    """:class:`GeneMoments` of ``expm1(x)`` (log-normalised -> normalised, as scanpy's
    ``seurat`` flavour) and the number of cells in which each gene is non-zero."""
    x = sp.csr_matrix(x)
    e = sp.csr_matrix((np.expm1(x.data), x.indices, x.indptr), shape=x.shape)
    nnz = np.bincount(x.indices[x.data > 0], minlength=x.shape[1])
    return GeneMoments.of(e), nnz


def _seurat_one_batch(m: GeneMoments, *, n_top_genes: int, n_bins: int) -> pd.DataFrame:
    """scanpy's ``_highly_variable_genes_single_batch`` (flavour ``seurat``) from the
    moments of ``expm1`` of the log-normalised data."""
    mean, var = m.mean.copy(), m.var
    mean[mean == 0] = 1e-12
    disp = var / mean
    disp[disp == 0] = np.nan
    disp = np.log(disp)
    mean = np.log1p(mean)
    df = pd.DataFrame({"means": mean, "dispersions": disp})
    df["mean_bin"] = pd.cut(df["means"], bins=n_bins)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    single = stats["dev"].isnull()
    stats.loc[single, "dev"] = stats.loc[single, "avg"]
    stats.loc[single, "avg"] = 0
    stats = stats.loc[df["mean_bin"]].set_index(df.index)
    df["dispersions_norm"] = (df["dispersions"] - stats["avg"]) / stats["dev"]
    norm = df["dispersions_norm"].to_numpy()
    finite = np.sort(norm[~np.isnan(norm)])[::-1]
    cut = finite[min(n_top_genes, finite.size) - 1]
    df["highly_variable"] = np.nan_to_num(norm, nan=-np.inf) >= cut
    return df.drop(columns="mean_bin")


def seurat_from_moments(
    moments: Mapping[str, GeneMoments],
    nnz: Mapping[str, np.ndarray],
    *,
    var_names: pd.Index,
    n_top_genes: int,
    n_bins: int = 20,
) -> pd.DataFrame:
    """scanpy's ``seurat`` highly variable genes from per-batch sufficient statistics.

    Parameters
    ----------
    moments
        Batch -> :class:`GeneMoments` of ``expm1`` of the log-normalised data
        (:func:`expm1_moments`); one batch = scanpy without ``batch_key``.
    nnz
        Batch -> cells in which each gene is non-zero (a batch's unexpressed genes
        are left out of its fit and count as zero, as scanpy does).
    var_names
        Gene names (the index of the result).
    n_top_genes
        Number of genes flagged highly variable.
    n_bins
        Mean bins of the dispersion normalisation (scanpy's default 20).

    Returns
    -------
    pandas.DataFrame
        ``means``, ``dispersions``, ``dispersions_norm``, ``highly_variable`` and, with
        several batches, ``highly_variable_nbatches``.
    """
    if len(moments) == 1:
        (m,) = moments.values()
        out = _seurat_one_batch(m, n_top_genes=min(n_top_genes, len(var_names)),
                                n_bins=n_bins)
        out.index = pd.Index(var_names)
        return out
    frames = []
    for b in sorted(moments):
        keep = nnz[b] > 0
        m = moments[b]
        sub = GeneMoments(m.n, m.s1[keep], m.s2[keep])
        df = _seurat_one_batch(sub, n_top_genes=min(n_top_genes, int(keep.sum())),
                               n_bins=n_bins)
        df.index = pd.Index(var_names)[keep]
        full = pd.DataFrame(0.0, index=pd.Index(var_names), columns=df.columns)
        full["highly_variable"] = False
        full.loc[df.index] = df
        frames.append(full.astype({"highly_variable": int}))
    df = pd.concat(frames).groupby(level=0).agg(  # sorted by name, as scanpy
        {"means": "mean", "dispersions": "mean", "dispersions_norm": "mean",
         "highly_variable": "sum"})
    df["highly_variable_nbatches"] = df["highly_variable"]
    order = df.sort_values(["highly_variable_nbatches", "dispersions_norm"],
                           ascending=False, na_position="last").index
    df["highly_variable"] = False
    df.loc[order[:n_top_genes], "highly_variable"] = True
    return df.loc[pd.Index(var_names)]
