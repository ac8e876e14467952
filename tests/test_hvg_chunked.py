"""Chunked HVGs (cartcohort.pp.hvg: seurat_v3 in two passes, seurat from per-batch sums)
equal scanpy's in-memory selection."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from cartcohort.pp import log_normalise
from cartcohort.pp.hvg import (
    GeneMoments,
    clipped_sums,
    expm1_moments,
    seurat_from_moments,
    seurat_v3_chunked,
)

pytest.importorskip("skmisc")


def _counts(seed: int = 0, n_cells: int = 1200, n_genes: int = 1500) -> tuple[sp.csr_matrix, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = np.exp(rng.normal(-1.0, 1.5, n_genes))
    batches = rng.choice(["b1", "b2", "b3"], n_cells, p=[0.5, 0.3, 0.2])
    shift = {"b1": 1.0, "b2": 1.6, "b3": 0.7}
    size = np.array([shift[b] for b in batches])[:, None] * rng.lognormal(0, 0.3, (n_cells, 1))
    theta = 2.0
    lam = rng.gamma(theta, mu * size / theta)
    x = rng.poisson(lam).astype(np.float32)
    return sp.csr_matrix(x), batches


def _chunker(x: sp.csr_matrix, batches: np.ndarray, cuts: list[int]):
    edges = [0, *cuts, x.shape[0]]

    def chunks():
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            yield x[a:b], batches[a:b]

    return chunks


@pytest.mark.parametrize("batch_key", ["batch", None])
def test_chunked_seurat_v3_equals_scanpy(batch_key):
    x, batches = _counts()
    names = pd.Index([f"g{i}" for i in range(x.shape[1])])
    adata = ad.AnnData(x, obs=pd.DataFrame({"batch": batches}), var=pd.DataFrame(index=names))
    ref = sc.pp.highly_variable_genes(
        adata, flavor="seurat_v3", n_top_genes=300, batch_key=batch_key, inplace=False
    )
    labels = batches if batch_key else np.zeros(len(batches), dtype=str)
    # chunks that cut across batches, of uneven sizes
    got = seurat_v3_chunked(_chunker(x, labels, [7, 400, 401, 950]), var_names=names,
                            n_top_genes=300)
    ref.index = names
    np.testing.assert_allclose(got["means"], ref["means"], rtol=1e-10)
    np.testing.assert_allclose(got["variances"], ref["variances"], rtol=1e-9)
    np.testing.assert_allclose(got["variances_norm"], ref["variances_norm"], rtol=1e-12)
    assert (got["highly_variable"] == ref["highly_variable"]).all()
    np.testing.assert_array_equal(got["highly_variable_rank"], ref["highly_variable_rank"])
    if batch_key:
        np.testing.assert_array_equal(got["highly_variable_nbatches"],
                                      ref["highly_variable_nbatches"])


def test_moments_combine_exactly_and_clip_sums():
    rng = np.random.default_rng(1)
    x = sp.random(300, 50, density=0.2, random_state=2, format="csr") * 10
    whole = GeneMoments.of(x)
    parts = GeneMoments.of(x[:17]).combine(GeneMoments.of(x[17:200])).combine(
        GeneMoments.of(x[200:]))
    dense = x.toarray()
    np.testing.assert_allclose(parts.mean, dense.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(parts.var, dense.var(axis=0, ddof=1), rtol=1e-10)
    np.testing.assert_allclose(whole.var, dense.var(axis=0, ddof=1), rtol=1e-10)
    clip = rng.uniform(0.5, 5, 50)
    s, ss = clipped_sums(x, clip=clip)
    v = np.minimum(dense, clip)
    np.testing.assert_allclose(s, v.sum(axis=0))
    np.testing.assert_allclose(ss, (v**2).sum(axis=0))
    s2, ss2 = clipped_sums(dense, clip=clip)
    np.testing.assert_allclose(s2, s)
    np.testing.assert_allclose(ss2, ss)


@pytest.mark.parametrize("batch_key", ["batch", None])
def test_seurat_from_moments_equals_scanpy(batch_key):
    """scanpy's ``seurat`` flavour (log-normalised data) from per-batch sums of expm1(X)
    and non-zero counts, with genes unexpressed in one batch (left out of its fit)."""
    x, batches = _counts(seed=4, n_cells=900, n_genes=800)
    x = x.tolil()
    x[batches == "b2", :25] = 0  # 25 genes never detected in b2
    logx = log_normalise(x.tocsr())
    names = pd.Index([f"g{i}" for i in range(x.shape[1])])
    adata = ad.AnnData(logx, obs=pd.DataFrame({"batch": batches}),
                       var=pd.DataFrame(index=names))
    ref = sc.pp.highly_variable_genes(adata, flavor="seurat", n_top_genes=200,
                                      batch_key=batch_key, inplace=False)
    labels = batches if batch_key else np.zeros(len(batches), dtype=str)
    moments, nnz = {}, {}
    for b in np.unique(labels):  # two chunks per batch, combined
        rows = np.flatnonzero(labels == b)
        (m1, n1), (m2, n2) = (expm1_moments(logx[r]) for r in np.array_split(rows, 2))
        moments[b], nnz[b] = m1.combine(m2), n1 + n2
    got = seurat_from_moments(moments, nnz, var_names=names, n_top_genes=200)
    ref.index = names
    assert (got["highly_variable"] == ref["highly_variable"]).all()
    assert got["highly_variable"].sum() == 200
    np.testing.assert_allclose(got["means"], ref["means"], rtol=1e-6)
    np.testing.assert_allclose(got["dispersions_norm"], ref["dispersions_norm"], rtol=1e-4,
                               atol=1e-6)
    if batch_key:
        np.testing.assert_array_equal(got["highly_variable_nbatches"],
                                      ref["highly_variable_nbatches"])
