"""The simulator against real 10x data, within stated tolerances.

Real references: scirpy's bundled ``wu2020_200.h5mu`` (150 real human T cells, 10x 5',
30,727 genes; always available) and, when ``../shared/data`` is present, the per-cell CAR
UMIs of sorted CAR+ day-7 cells (``haradhvala_d7``). The simulator is run at the real
library depth (``median_umis`` = the real median) so that depth-dependent quantities
compare like with like.
"""

from __future__ import annotations

import importlib.resources

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from conftest import REPO
from cartcohort.datasets import simulate_cohort
from cartcohort.datasets.background import fitted_model

SHARED = REPO.parent / "shared" / "data"
BINS = np.array([0.01, 0.03, 0.1, 0.3, 1.0, 3.0])


@pytest.fixture(scope="module")
def real():
    import anndata as ad
    import h5py

    path = importlib.resources.files("scirpy") / "tests" / "data" / "wu2020_200.h5mu"
    with h5py.File(str(path)) as f:
        gex = ad.io.read_elem(f["mod/gex"])
    return sp.csr_matrix(gex.X), list(gex.var_names)


@pytest.fixture(scope="module")
def simulated(real):
    x, _ = real
    depth = float(np.median(np.asarray(x.sum(axis=1)).ravel()))
    c = simulate_cohort(seed=5, n_patients=4, frac_longitudinal=0.0, median_umis=depth)
    t = pd.concat([lib.truth for lib in c.libraries], ignore_index=True)
    good = (~t["is_doublet"] & ~t["is_low_quality"]).to_numpy()
    m = sp.vstack([lib.counts for lib in c.libraries]).tocsr()[good]
    return m, c.libraries[0].features["name"].tolist(), t[good].reset_index(drop=True)


def _per_cell(m: sp.csr_matrix) -> tuple[float, float]:
    return float(np.median(np.asarray(m.sum(axis=1)).ravel())), float(np.median(np.diff(m.indptr)))


def _detection_by_mean(m: sp.csr_matrix) -> pd.Series:
    m = sp.csc_matrix(m)
    mean = np.asarray(m.mean(axis=0)).ravel()
    det = np.diff(m.indptr) / m.shape[0]
    return pd.Series(det).groupby(pd.cut(mean, BINS), observed=True).median()


def test_gene_space_is_cell_ranger_shaped(simulated):
    from cartcohort.datasets import gene_panel

    f = gene_panel().features
    genes = f[f["genome"] == "GRCh38"]
    assert len(f) >= 30_000
    assert list(f.columns) == ["id", "name", "feature_type", "genome"]
    assert (f["feature_type"] == "Gene Expression").all()
    assert f["id"].is_unique and genes["id"].str.match(r"^ENSG\d{11}$").all()
    assert genes["name"].duplicated().sum() >= 5  # as GRCh38 references have them
    for marker in ("CD4", "CD8A", "CCR7", "PDCD1", "HAVCR2", "TOX", "MT-CO1", "TRAC"):
        assert marker in set(genes["name"])


def test_umis_and_genes_per_cell_match_real(real, simulated):
    (umi_r, gen_r), (umi_s, gen_s) = _per_cell(real[0]), _per_cell(simulated[0])
    assert abs(umi_s / umi_r - 1) <= 0.10, (umi_s, umi_r)
    assert abs(gen_s / gen_r - 1) <= 0.15, (gen_s, gen_r)


def test_default_depth_gives_real_10x_v3_gene_counts():
    c = simulate_cohort(seed=6, n_patients=2, frac_longitudinal=0.0)
    t = pd.concat([lib.truth for lib in c.libraries], ignore_index=True)
    good = (~t["is_doublet"] & ~t["is_low_quality"]).to_numpy()
    m = sp.vstack([lib.counts for lib in c.libraries]).tocsr()[good]
    genes = np.diff(m.indptr)
    assert 1_300 <= np.median(genes) <= 1_900, np.median(genes)
    assert np.quantile(genes, 0.1) >= 900 and np.quantile(genes, 0.9) <= 2_600


def test_detection_rate_versus_mean_matches_real(real, simulated):
    r = _detection_by_mean(real[0])
    s = _detection_by_mean(simulated[0][:, :-1])
    both = r.index.intersection(s.index)
    assert len(both) >= 5
    diff = (s[both] - r[both]).abs()
    assert (diff <= 0.12).all(), pd.DataFrame({"real": r, "sim": s})


@pytest.mark.parametrize("gene, tol", [("CD4", 0.06), ("CD8A", 0.08), ("CCR7", 0.08)])
def test_marker_detection_matches_real(real, simulated, gene, tol):
    x, names = real
    m, snames, _ = simulated
    real_frac = (x[:, names.index(gene)].toarray() > 0).mean()
    sim_frac = (m[:, snames.index(gene)].toarray() > 0).mean()
    assert abs(sim_frac - real_frac) <= tol, (gene, sim_frac, real_frac)


def test_car_detection_by_chemistry_and_ambient():
    out = {}
    for chem in ("5prime", "3prime"):
        c = simulate_cohort(seed=7, n_patients=2, frac_longitudinal=0.0, chemistry=chem,
                            n_background_genes=2000)
        t = pd.concat([lib.truth for lib in c.libraries], ignore_index=True)
        t = t[~t["is_doublet"] & ~t["is_low_quality"]]
        pos = t["car_positive"].astype(bool)
        out[chem] = ((t.loc[pos, "car_umis"] > 0).mean(), (t.loc[~pos, "car_umis"] > 0).mean())
    assert 0.55 <= out["5prime"][0] <= 0.70, out
    assert 0.30 <= out["3prime"][0] <= 0.45, out
    for _, neg in out.values():
        assert 0.001 < neg < 0.05, out  # ambient CAR reads in CAR- cells


@pytest.mark.skipif(not (SHARED / "haradhvala_d7").exists(), reason="../shared/data absent")
def test_car_fit_is_the_real_sorted_car_cells():
    car = pd.read_csv(SHARED / "haradhvala_d7" / "F1_CAR.quantFinal.txt", sep="\t", header=None)
    tcr = pd.read_csv(SHARED / "haradhvala_d7" / "F1_TCR_tcr_all_contig_annotations.csv")
    cells = tcr.loc[tcr["is_cell"].astype(str).str.lower() == "true", "barcode"]
    cells = pd.Index(cells.str.replace("-1", "", regex=False).unique())
    umis = car.groupby(0).size().reindex(cells, fill_value=0)
    fit = fitted_model()["car"]
    assert fit["fraction_detected"] == pytest.approx((umis > 0).mean(), abs=1e-9)
    assert fit["mean_umis"] == pytest.approx(umis.mean(), rel=1e-6)
    # a 5' product is less activated than sorted day-7 cells in vivo: the simulator's 5'
    # default sits below the real day-7 detection, within 0.25 of it
    assert 0.0 <= fit["fraction_detected"] - 0.65 <= 0.25


def test_states_form_a_continuum(simulated):
    _, _, t = simulated
    w = t["state_weight"].astype(float)
    assert w.between(0.5, 1.0).all()
    assert (w < 0.65).mean() >= 0.03  # truly ambiguous cells exist
    assert (w > 0.9).mean() >= 0.3
    assert (t["state_secondary"] != t["state"]).all()
