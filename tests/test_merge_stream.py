"""The out-of-core merge (cartcohort.pp.stream, rule merge_samples) writes the same
merged.h5ad as the in-memory path (pp.load_qc_cells + pp.prepare_cohort): identical X,
counts, obs, var (HVG set and ranks), warnings and settings; the PCA (Gram matrix +
eigh, cartcohort.pp.pca) equal to sklearn's ARPACK PCA up to sign within the tolerance
below."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cartcohort import pp
from cartcohort.errors import CartCohortError
from cartcohort.pp import stream
from cartcohort.pp.pca import GramAccumulator, gram_pca

pytest.importorskip("skmisc")

#: PCA tolerance: per PC, max |score difference| <= SCORE_TOL x max |score| (sklearn
#: works on float32 data, the Gram matrix in float64), variance ratios to VR_TOL.
SCORE_TOL = 1e-3
VR_TOL = 1e-5

SPECIAL = ["TRAV1-2", "TRBV7-9", "IGKC", "MT-CO1", "MT-ND1", "RPL3", "RPS4X", "CAR"]


def _library(rng, sample: str, batch: str, genes: list[str], n: int, shift: float):
    """NB counts of three states; 20 marker genes per state, a batch shift."""
    mu = np.exp(rng.normal(-1.0, 1.3, len(genes)))
    rows = []
    for _ in range(n):
        m = mu.copy()
        state = int(rng.integers(3))
        m[40 + 20 * state: 60 + 20 * state] *= 8
        m *= shift
        lam = m * rng.lognormal(0, 0.3)
        rows.append(rng.negative_binomial(3, 3 / (3 + lam)))
    x = sp.csr_matrix(np.asarray(rows, dtype=np.float32))
    obs = pd.DataFrame({"qc_pass": rng.random(n) > 0.15, "batch": batch,
                        "sample": sample, "n_counts": np.asarray(x.sum(axis=1)).ravel()},
                       index=[f"{sample}_bc{i}" for i in range(n)])
    # a category only failing cells have (dropped by the subset, as anndata drops it)
    obs["chain"] = pd.Categorical(np.where(obs["qc_pass"], "pair", "orphan"),
                                  categories=["pair", "orphan", "none"])
    if sample == "L1":
        obs["only_here"] = "x"  # dropped by the inner join of obs columns
    var = pd.DataFrame({"gene_ids": [f"ENSG{abs(hash(g)) % 10**8:08d}" for g in genes],
                        "feature_types": "Gene Expression",
                        "is_car": [g == "CAR" for g in genes]}, index=genes)
    return ad.AnnData(x, obs=obs, var=var)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[dict[str, str], pd.DataFrame]:
    """Six libraries (one excluded by QC) in three batches; L3 lacks two genes."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("stream")
    genes = [f"GENE{j}" for j in range(300)] + SPECIAL
    ids = {g: f"ENSG{j:08d}" for j, g in enumerate(genes)}
    paths = {}
    spec = [("L1", "b1", 1.0), ("L2", "b1", 1.1), ("L3", "b2", 1.6), ("L4", "b2", 1.4),
            ("L5", "b3", 0.7), ("L6", "b3", 0.8)]
    for i, (sample, batch, shift) in enumerate(spec):
        g = [x for x in genes if not (sample == "L3" and x in ("GENE5", "GENE6"))]
        a = _library(rng, sample, batch, g, 150 + 30 * i, shift)
        a.var["gene_ids"] = [ids[x] for x in g]
        paths[sample] = str(root / f"{sample}.h5mu")
        md.MuData({"gex": a}).write(paths[sample])
    table = pd.DataFrame({"sample": list(paths), "sample_excluded": [False] * 5 + [True]})
    return paths, table


def _reference(paths, table, tmp_path, **kw) -> tuple[ad.AnnData, pd.DataFrame]:
    join = kw.pop("gene_join")
    cells = pp.load_qc_cells(paths, qc_table=table, join=join)
    warnings = cells.uns.pop("merge_warnings")
    prepared = pp.prepare_cohort(cells, **kw)
    prepared.write_h5ad(tmp_path / "ref.h5ad")
    return ad.read_h5ad(tmp_path / "ref.h5ad"), warnings


def _aligned(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` with each column's sign matched to ``b``."""
    return a * np.where(np.sum(a * b, axis=0) < 0, -1, 1)


@pytest.mark.parametrize("join,flavor,batch_key", [
    ("intersect", "seurat_v3", "batch"),
    ("union", "seurat_v3", "batch"),
    ("intersect", "seurat_v3", "no_such_column"),
    ("intersect", "seurat", "batch"),
    ("union", "seurat", "no_such_column"),
])
def test_streamed_merge_equals_in_memory(cohort, tmp_path, monkeypatch, join, flavor,
                                         batch_key):
    paths, table = cohort
    monkeypatch.setattr(stream, "CHUNK_CELLS", 97)  # read back in chunks across libraries
    kw = {"gene_join": join, "batch_key": batch_key, "n_top_genes": 60, "n_pcs": 10,
          "exclude_genes": ["GENE7"], "scale": True, "seed": 0}
    ref, ref_warnings = _reference(paths, table, tmp_path, hvg_flavor=flavor, **kw)
    out = tmp_path / "merged.h5ad"
    res = stream.merge_samples(list(paths.values()), samples=list(paths), out_path=out,
                               qc_table=table, qc_table_path="qc.tsv", hvg_flavor=flavor,
                               **kw)
    got = ad.read_h5ad(out)
    assert res.shape == got.shape == ref.shape
    assert not (tmp_path / "merged.h5ad.partial").exists()
    pd.testing.assert_frame_equal(res.warnings, ref_warnings)
    assert len(res.warnings) == 1  # L3 lacks two genes
    for name in ("X", "counts"):
        a = got.X if name == "X" else got.layers["counts"]
        b = ref.X if name == "X" else ref.layers["counts"]
        assert isinstance(a, sp.csr_matrix) and a.dtype == np.float32
        assert (a != b).nnz == 0, name
    pd.testing.assert_frame_equal(got.obs, ref.obs)
    pd.testing.assert_frame_equal(got.var, ref.var)  # HVG set, ranks, exclusions
    assert got.var["highly_variable"].sum() == 60
    assert got.uns["preprocessing"] == ref.uns["preprocessing"]
    assert got.uns["preprocessing"]["hvg_flavor"] == flavor
    np.testing.assert_allclose(got.uns["pca"]["variance_ratio"],
                               ref.uns["pca"]["variance_ratio"], atol=VR_TOL)
    s_got, s_ref = got.obsm["X_pca"], ref.obsm["X_pca"]
    diff = np.abs(_aligned(s_got, s_ref) - s_ref).max(axis=0)
    assert (diff <= SCORE_TOL * np.abs(s_ref).max(axis=0)).all(), diff
    hv = got.var["highly_variable"].to_numpy()
    assert not got.varm["PCs"][~hv].any()
    np.testing.assert_allclose(_aligned(got.varm["PCs"][hv], ref.varm["PCs"][hv]),
                               ref.varm["PCs"][hv], atol=SCORE_TOL)


def test_streamed_merge_errors_name_the_file(cohort, tmp_path):
    paths, table = cohort
    with pytest.raises(CartCohortError, match="every sample is excluded"):
        stream.merge_samples(list(paths.values()), samples=list(paths),
                             out_path=tmp_path / "m.h5ad",
                             qc_table=table.assign(sample_excluded=True), qc_table_path="q")
    bad = tmp_path / "bad.h5mu"
    a = md.read_h5mu(paths["L1"])["gex"]
    md.MuData({"gex": a[:, :5].copy()}).write(bad)  # 5 genes, all excluded below
    with pytest.raises(CartCohortError, match="fewer than 2 genes|share no gene"):
        stream.merge_samples([str(bad), paths["L2"]], samples=["L1", "L2"],
                             out_path=tmp_path / "m.h5ad", qc_table=None, qc_table_path="q",
                             n_top_genes=50, exclude_genes=[f"GENE{i}" for i in range(5)])
    assert not list(tmp_path.glob("*.partial"))


def test_gram_pca_equals_run_pca_unscaled():
    rng = np.random.default_rng(3)
    lat = rng.normal(size=(800, 4)) @ rng.normal(size=(4, 120))
    x = pp.log_normalise(sp.csr_matrix(rng.poisson(np.exp(0.5 * lat - 1)).astype(np.float32)))
    ref = pp.run_pca(x, genes=np.ones(120, bool), n_pcs=8, scale=False)
    acc = GramAccumulator(120)
    for a in range(0, 800, 333):
        acc.add(x[a:a + 333], block=100)
    fit = gram_pca(acc, n_pcs=8, scale=False)
    scores = fit.scores(x)
    diff = np.abs(_aligned(scores, ref.scores) - ref.scores).max(axis=0)
    assert (diff <= SCORE_TOL * np.abs(ref.scores).max(axis=0)).all(), diff
    np.testing.assert_allclose(fit.variance_ratio, ref.variance_ratio, atol=VR_TOL)


def _merged_arrays(path) -> dict[str, np.ndarray]:
    got = ad.read_h5ad(path)
    return {"X_pca": got.obsm["X_pca"], "PCs": got.varm["PCs"],
            "variance_ratio": got.uns["pca"]["variance_ratio"],
            "hvg_rank": got.var["hvg_rank"].to_numpy(),
            "highly_variable": got.var["highly_variable"].to_numpy()}


def test_dask_local_cluster_gives_the_same_merge_as_the_default(cohort, tmp_path,
                                                                monkeypatch):
    """dask.scheduler set to a LocalCluster of 2 worker processes: the blocks run there
    (in other processes, reading the file by its path) and the merged file equals the
    default local-threads run bit for bit (the partial results are added in block order)."""
    distributed = pytest.importorskip("distributed")
    paths, table = cohort
    monkeypatch.setattr(stream, "CHUNK_CELLS", 97)
    kw = {"gene_join": "intersect", "batch_key": "batch", "n_top_genes": 60, "n_pcs": 10,
          "exclude_genes": [], "scale": True, "seed": 0, "hvg_flavor": "seurat_v3",
          "samples": list(paths), "qc_table": table, "qc_table_path": "qc.tsv"}
    stream.merge_samples(list(paths.values()), out_path=tmp_path / "local.h5ad", **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            stream.merge_samples(list(paths.values()), out_path=tmp_path / "cluster.h5ad",
                                 dask_scheduler=cluster.scheduler_address, **kw)
            # the work ran on the workers: each holds task results of both passes
            ran = client.run(lambda dask_worker: len(dask_worker.state.log))
    assert len(ran) == 2 and all(n > 0 for n in ran.values()), ran
    local, remote = _merged_arrays(tmp_path / "local.h5ad"), _merged_arrays(
        tmp_path / "cluster.h5ad")
    for key, value in local.items():
        np.testing.assert_array_equal(remote[key], value, err_msg=key)


def test_dask_scheduler_that_does_not_answer_is_named(cohort, tmp_path, monkeypatch):
    from cartcohort import engine

    paths, table = cohort
    monkeypatch.setattr(engine, "CONNECT_TIMEOUT", "2s")
    with pytest.raises(CartCohortError, match=r"dask.scheduler: no Dask scheduler answers "
                       r"at 'tcp://127.0.0.1:9'.*Fix:"):
        stream.merge_samples(list(paths.values()), samples=list(paths),
                             out_path=tmp_path / "m.h5ad", qc_table=table,
                             qc_table_path="q", dask_scheduler="tcp://127.0.0.1:9")
    assert not list(tmp_path.iterdir())  # no partial output
