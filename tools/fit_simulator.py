"""Fit the simulator's background expression model to real 10x data (maintainers' tool).

Writes two files that the simulator reads (``cartcohort/datasets/data/``):

* ``gene_space.tsv.gz``: one row per real gene symbol of scirpy's bundled
  ``wu2020_200.h5mu`` (30,727 genes of 150 real human T cells, 10x 5'; Wu et al. 2020
  Nature, bundled with scirpy under BSD-3): ``name``, ``observed_umis`` (in the 150 cells),
  ``cells_detected``, ``mean_if_detected`` (UMIs in the cells that detect it: the level of
  a state-specific marker in its own state) and ``log_weight`` (the gene's share of a cell's UMIs, natural log), drawn once from its
  empirical-Bayes posterior under the fitted Poisson-lognormal abundance model.
* ``fit.json``: every fitted parameter and its source: library size (within-sample log SD),
  the two-component log-normal abundance mixture, the NB dispersion trend
  ``log(phi) = a + b * log(mean)`` (fitted on wu2020 and, as a cross-check, on the real
  mouse spleen counts of ``../shared/data/djvdj_splen``) and the per-cell CAR UMI
  distribution of sorted CAR+ day-7 cells (``../shared/data/haradhvala_d7``): the NB mean
  at the median library size and its size, fitted to the real 0 / 1 / 2 / >= 3 UMI
  fractions; and the lineage program: the genes that differ between the authors' CD4
  (``4.x``) and CD8 (``8.x``) clusters of wu2020 (Mann-Whitney, BH q < 0.05, fold >= 1.5,
  detected in >= 10 % of one group), with their log fold changes. Marker, TCR and
  state-program genes are left out (the simulator draws those itself), and so are the
  HLA genes (their presence, e.g. HLA-DRB3/4, follows the donors' haplotypes).

Run it again only when the model changes (``--car-only`` / ``--lineage-only``: refit that
block alone)::

    .venv/bin/python tools/fit_simulator.py
"""

from __future__ import annotations

import argparse
import gzip
import importlib.resources
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import optimize, special, stats

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "workflow" / "scripts" / "cartcohort" / "datasets" / "data"
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(80)
_GRID = np.linspace(-26.0, -1.0, 1001)


def read_wu2020() -> tuple[sp.csr_matrix, np.ndarray, pd.Series]:
    """Counts (cells x genes), gene symbols and sample of scirpy's ``wu2020_200.h5mu``."""
    import anndata as ad
    import h5py

    path = importlib.resources.files("scirpy") / "tests" / "data" / "wu2020_200.h5mu"
    with h5py.File(str(path)) as f:
        gex = ad.io.read_elem(f["mod/gex"])
    return sp.csr_matrix(gex.X), np.asarray(gex.var_names), gex.obs["sample"].astype(str)


def _mixture_logpdf(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    pi = special.expit(theta[0])
    m1, s1, m2, s2 = theta[1], np.exp(theta[2]), theta[3], np.exp(theta[4])
    return np.logaddexp(
        np.log(pi) + stats.norm.logpdf(x, m1, s1), np.log1p(-pi) + stats.norm.logpdf(x, m2, s2)
    )


def fit_abundance(totals: np.ndarray, depth: float) -> dict[str, float]:
    """Poisson-lognormal mixture of gene abundances from gene totals (MLE on a grid)."""
    values, n_genes = np.unique(np.rint(totals).astype(np.int64), return_counts=True)
    lam = depth * np.exp(_GRID)
    loglik_grid = stats.poisson.logpmf(values[:, None], lam[None, :])  # distinct totals x grid
    step = _GRID[1] - _GRID[0]

    def nll(theta: np.ndarray) -> float:
        logprior = _mixture_logpdf(_GRID, theta) + np.log(step)
        per_value = special.logsumexp(loglik_grid + logprior[None, :], axis=1)
        return -float((n_genes * per_value).sum())

    start = np.array([-0.5, -10.5, 0.3, -16.0, 0.5])
    bounds = [(-6.0, 6.0), (-20.0, -4.0), (-2.0, 1.5), (-24.0, -8.0), (-2.0, 1.5)]
    res = optimize.minimize(nll, start, method="L-BFGS-B", bounds=bounds)
    t = res.x
    return {
        "weight_1": float(special.expit(t[0])),
        "mean_1": float(t[1]),
        "sd_1": float(np.exp(t[2])),
        "mean_2": float(t[3]),
        "sd_2": float(np.exp(t[4])),
        "neg_loglik": float(res.fun),
        "_theta": t.tolist(),
    }


def draw_log_weights(totals: np.ndarray, depth: float, theta: list[float], seed: int) -> np.ndarray:
    """One draw of every gene's log share from its posterior given its observed total."""
    n = np.rint(totals).astype(np.int64)
    lam = depth * np.exp(_GRID)
    logpost = stats.poisson.logpmf(n[:, None], lam[None, :]) + _mixture_logpdf(
        _GRID, np.asarray(theta)
    )[None, :]
    logpost -= logpost.max(axis=1, keepdims=True)
    post = np.exp(logpost)
    cdf = np.cumsum(post, axis=1)
    cdf /= cdf[:, -1:]
    rng = np.random.default_rng(seed)
    u = rng.random(len(n))
    k = np.minimum((cdf < u[:, None]).sum(axis=1), len(_GRID) - 1)
    step = _GRID[1] - _GRID[0]
    return _GRID[k] + rng.uniform(-step / 2, step / 2, size=len(n))


def fit_dispersion(x: sp.csr_matrix, min_mean: float = 0.05) -> dict[str, float]:
    """NB dispersion trend ``log(phi) = a + b log(mean)`` by moments with size factors."""
    x = sp.csc_matrix(x, dtype=np.float64)
    tot = np.asarray(x.sum(axis=1)).ravel()
    s = tot / tot.mean()
    mean = np.asarray(x.sum(axis=0)).ravel() / s.sum()
    keep = np.flatnonzero(mean >= min_mean)
    phis = []
    for j in keep:
        col = x[:, j].toarray().ravel()
        mu = s * mean[j]
        phis.append(((col - mu) ** 2 - col).sum() / (mu**2).sum())
    phi = np.array(phis)
    ok = phi > 1e-3
    lm, lp = np.log(mean[keep][ok]), np.log(phi[ok])
    fit = stats.theilslopes(lp, lm)
    resid = lp - (fit.intercept + fit.slope * lm)
    return {
        "a": float(fit.intercept),
        "b": float(fit.slope),
        "residual_sd": float(1.4826 * np.median(np.abs(resid - np.median(resid)))),
        "n_genes": int(ok.sum()),
        "min_mean": min_mean,
    }


def library_size(x: sp.csr_matrix, samples: pd.Series) -> dict[str, float]:
    """Within-sample log SD of UMIs per cell, and genes detected per cell at the median."""
    tot = np.asarray(x.sum(axis=1)).ravel()
    det = np.diff(sp.csr_matrix(x).indptr)
    logs = pd.Series(np.log(tot), index=samples.index)
    within = logs - logs.groupby(samples.to_numpy()).transform("mean")
    return {
        "median_umis": float(np.median(tot)),
        "median_genes": float(np.median(det)),
        "sdlog_within_sample": float(within.std(ddof=1)),
        "sdlog_overall": float(np.log(tot).std(ddof=1)),
    }


def read_djvdj() -> sp.csr_matrix | None:
    """The real mouse spleen counts (both samples), or None when the shared data is absent."""
    from scipy.io import mmread

    base = SHARED / "djvdj_splen"
    mats = sorted(base.glob("**/matrix.mtx*"))
    if not mats:
        return None
    out = []
    for m in mats:
        raw = m.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        tmp = Path("/tmp") / "_djvdj_matrix.mtx"
        tmp.write_bytes(raw)
        out.append(sp.csr_matrix(mmread(str(tmp))).T)
    return sp.vstack(out).tocsr()


CAR_AMBIENT_SHARE = 0.03  # the simulator's default ambient_fraction (mean ambient share)


def car_category_probs(mu: float, theta: float, *, sdlog: float,
                       ambient: float = CAR_AMBIENT_SHARE) -> np.ndarray:
    """P(0), P(1), P(2), P(>= 3) CAR UMIs in a CAR+ cell of a sorted CAR+ library.

    The simulator's model: NB with mean ``mu * sf`` and size ``theta``, plus ambient CAR
    reads (Poisson, mean ``ambient * mu * sf``: the library's RNA is all CAR+ cells), with
    the size factor ``sf`` log-normal (SD ``sdlog``) around the median library size.
    """
    x, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    m = mu * np.exp(sdlog * x)
    nb = [stats.nbinom.pmf(k, theta, theta / (theta + m)) for k in range(3)]
    po = [stats.poisson.pmf(k, ambient * m) for k in range(3)]
    p = np.array([sum(nb[j] * po[k - j] for j in range(k + 1)) @ w for k in range(3)])
    return np.append(p, 1.0 - p.sum())


def _car_umis_per_cell() -> tuple[np.ndarray, np.ndarray]:
    """CAR UMIs of the real sorted CAR+ cells: the TCR-called cells and the annotated cells."""
    base = SHARED / "haradhvala_d7"
    car = pd.read_csv(base / "F1_CAR.quantFinal.txt", sep="\t", header=None)
    per_cell = car.groupby(0)[1].nunique()  # one row per (barcode, UMI)
    tcr = pd.read_csv(base / "F1_TCR_tcr_all_contig_annotations.csv")
    tcr = tcr[tcr["is_cell"].astype(str).str.lower() == "true"]
    cells = pd.Index(tcr["barcode"].str.replace("-1", "", regex=False).unique())
    meta = pd.read_csv(base / "cell-annotation-metadata.txt", sep="\t", header=None)
    annotated = pd.Index(meta.loc[meta[1] == "F1", 0].str.replace("-1-40", "", regex=False))
    return (per_cell.reindex(cells, fill_value=0).to_numpy(dtype=float),
            per_cell.reindex(annotated, fill_value=0).to_numpy(dtype=float))


def _categories(umis: np.ndarray) -> np.ndarray:
    return np.array([(umis == 0).sum(), (umis == 1).sum(), (umis == 2).sum(), (umis >= 3).sum()])


def fit_car(sdlog: float) -> dict[str, object] | None:
    """CAR NB (mean at the median library size, size) fitted to real sorted CAR+ cells.

    Haradhvala et al. day-7 CAR+ sorted library F1 (patient Axi-R-15, 10x 5'): per-cell CAR
    UMIs from ``F1_CAR.quantFinal.txt`` (one row per barcode and UMI; cells absent have 0)
    over the 659 cells that Cell Ranger called with a TCR (``is_cell``). Those are T cells
    with enough RNA for a TCR call, as the simulator's good cells are; the 1,353 cells of the
    published annotation (``cell-annotation-metadata.txt``) include ~700 without a TCR call
    whose CAR detection is far lower (recorded, not fitted). The fit maximises the
    multinomial likelihood of the 0 / 1 / 2 / >= 3 UMI counts under the simulator's model
    (:func:`car_category_probs`, library-size SD ``sdlog`` from the wu2020 fit).
    """
    if not (SHARED / "haradhvala_d7").exists():
        return None
    umis, annotated = _car_umis_per_cell()
    obs = _categories(umis)

    def nll(x: np.ndarray) -> float:
        p = car_category_probs(float(np.exp(x[0])), float(np.exp(x[1])), sdlog=sdlog)
        return -float((obs * np.log(np.clip(p, 1e-300, None))).sum())

    res = optimize.minimize(nll, np.array([1.0, 0.5]), method="Nelder-Mead",
                            options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000})
    mu, theta = (float(v) for v in np.exp(res.x))
    p = car_category_probs(mu, theta, sdlog=sdlog)
    expected = p * obs.sum()
    m, v = umis.mean(), umis.var(ddof=1)
    return {
        "n_cells": int(len(umis)),
        "denominator": "cells called by Cell Ranger V(D)J (is_cell) in the sorted library",
        "fraction_detected": float((umis > 0).mean()),
        "mean_umis": float(m),
        "fractions_0_1_2_3plus": [round(float(f), 6) for f in obs / obs.sum()],
        "counts_0_1_2_3plus": [int(c) for c in obs],
        "model": "NB(mean_at_median * sf, nb_theta) + Poisson(ambient_share * mean_at_median"
                 " * sf), sf log-normal with sdlog; multinomial MLE on 0/1/2/>=3",
        "mean_at_median": mu,
        "nb_theta": theta,
        "detection_at_median": float(1.0 - (1.0 + mu / theta) ** -theta),
        "sdlog": sdlog,
        "ambient_share": CAR_AMBIENT_SHARE,
        "fitted_fractions_0_1_2_3plus": [round(float(f), 6) for f in p],
        "chi2_1df": float(((obs - expected) ** 2 / expected).sum()),
        "nb_theta_moments": float(m**2 / max(v - m, 1e-6)),
        "annotated_cells": {
            "n_cells": int(len(annotated)),
            "fractions_0_1_2_3plus": [
                round(float(f), 6) for f in _categories(annotated) / len(annotated)
            ],
        },
        "source": "haradhvala_d7 F1_CAR.quantFinal.txt and F1_TCR_tcr_all_contig_annotations"
                  ".csv (sorted CAR+ day-7 cells with a TCR; caleblareau/hhv6-reactivation, "
                  "MIT)",
    }


LINEAGE_Q = 0.05
LINEAGE_MIN_FOLD = 1.5
LINEAGE_MIN_DETECTION = 0.10


def fit_lineage_program() -> dict[str, object]:
    """Genes of the CD4 vs CD8 transcriptional program of real T cells and their folds.

    Cells of wu2020's author clusters ``4.x`` (CD4) and ``8.x`` (CD8); expression per
    10,000 UMIs; Mann-Whitney U per gene (two-sided), Benjamini-Hochberg over the genes
    detected in >= 10 % of either group. ``log_fold`` is the natural log of the ratio of
    the groups' mean expression (CD4 over CD8; +0.01 per 10k UMIs in both).
    """
    import anndata as ad
    import h5py

    from cartcohort.datasets.genes import LINEAGE_GENES, STATE_DOWN, STATE_UP

    path = importlib.resources.files("scirpy") / "tests" / "data" / "wu2020_200.h5mu"
    with h5py.File(str(path)) as f:
        gex = ad.io.read_elem(f["mod/gex"])
    x = sp.csr_matrix(gex.X)
    names = np.asarray(gex.var_names).astype(str)
    cluster = gex.obs["cluster_orig"].astype(str)
    is4, is8 = cluster.str.startswith("4.").to_numpy(), cluster.str.startswith("8.").to_numpy()
    norm = sp.diags(1e4 / np.asarray(x.sum(axis=1)).ravel()) @ x
    det4 = np.asarray((x[is4] > 0).mean(axis=0)).ravel()
    det8 = np.asarray((x[is8] > 0).mean(axis=0)).ravel()
    drop = set(LINEAGE_GENES) | {g for v in STATE_UP.values() for g in v} | {
        g for v in STATE_DOWN.values() for g in v}
    technical = pd.Series(names).str.startswith(
        ("MT-", "RPL", "RPS", "TRA", "TRB", "TRG", "TRD", "HLA-")).to_numpy()
    keep = (np.maximum(det4, det8) >= LINEAGE_MIN_DETECTION) & ~technical & ~np.isin(
        names, sorted(drop))
    cols = np.flatnonzero(keep)
    a = norm[is4][:, cols].toarray()
    b = norm[is8][:, cols].toarray()
    p = stats.mannwhitneyu(a, b, axis=0, alternative="two-sided").pvalue
    q = stats.false_discovery_control(p, method="bh")
    lfc = np.log((a.mean(axis=0) + 0.01) / (b.mean(axis=0) + 0.01))
    sel = (q < LINEAGE_Q) & (np.abs(lfc) >= np.log(LINEAGE_MIN_FOLD))
    order = np.argsort(-np.abs(lfc[sel]))
    genes = {str(names[cols][sel][i]): round(float(lfc[sel][i]), 4) for i in order}
    return {
        "n_cd4_cells": int(is4.sum()), "n_cd8_cells": int(is8.sum()),
        "q_max": LINEAGE_Q, "min_fold": LINEAGE_MIN_FOLD,
        "min_detection": LINEAGE_MIN_DETECTION, "n_tested": int(len(cols)),
        "n_cd4_up": int(sum(v > 0 for v in genes.values())),
        "n_cd8_up": int(sum(v < 0 for v in genes.values())),
        "log_fold_cd4_over_cd8": genes,
        "source": "wu2020_200 author clusters 4.x (CD4) and 8.x (CD8); marker, TCR, HLA, "
                  "mitochondrial, ribosomal and simulated state-program genes left out",
    }


def refit_lineage(out: Path) -> dict[str, object]:
    """Refit only the lineage-program block of an existing ``fit.json``."""
    path = out / "fit.json"
    fit = json.loads(path.read_text())
    fit["lineage_program"] = fit_lineage_program()
    path.write_text(json.dumps(fit, indent=2) + "\n")
    return fit


def refit_car(out: Path) -> dict[str, object]:
    """Refit only the CAR block of an existing ``fit.json`` (the rest is kept as it is)."""
    path = out / "fit.json"
    fit = json.loads(path.read_text())
    fit["car"] = fit_car(fit["library"]["sdlog_within_sample"])
    path.write_text(json.dumps(fit, indent=2) + "\n")
    return fit


def main(argv: list[str] | None = None) -> int:
    """Fit, then write ``gene_space.tsv.gz`` and ``fit.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--car-only", action="store_true",
                        help="refit only the CAR block of the existing fit.json")
    parser.add_argument("--lineage-only", action="store_true",
                        help="refit only the lineage-program block of the existing fit.json")
    args = parser.parse_args(argv)
    if args.lineage_only:
        fit = refit_lineage(args.out)["lineage_program"]
        print(json.dumps({k: v for k, v in fit.items() if k != "log_fold_cd4_over_cd8"}))
        print(fit["log_fold_cd4_over_cd8"])
        return 0
    if args.car_only:
        print(json.dumps(refit_car(args.out)["car"], indent=2))
        return 0
    x, names, samples = read_wu2020()
    totals = np.asarray(x.sum(axis=0)).ravel()
    depth = float(totals.sum())
    abundance = fit_abundance(totals, depth)
    log_w = draw_log_weights(totals, depth, abundance.pop("_theta"), args.seed)
    n_detected = np.diff(sp.csc_matrix(x).indptr)
    mean_if_detected = np.divide(totals, n_detected, out=np.zeros_like(totals),
                                 where=n_detected > 0)
    genes = pd.DataFrame({"name": names, "observed_umis": totals.astype(np.int64),
                          "cells_detected": n_detected,
                          "mean_if_detected": np.round(mean_if_detected, 4),
                          "log_weight": np.round(log_w, 4)})
    args.out.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(args.out / "gene_space.tsv.gz", "wb", mtime=0) as gz:
        gz.write(genes.to_csv(sep="\t", index=False).encode())
    dj = read_djvdj()
    lib = library_size(x, samples)
    fit = {
        "source": {
            "wu2020_200": "scirpy tests/data/wu2020_200.h5mu, gex: 150 real human T cells "
            "(Wu et al. 2020 Nature, 10x 5'), 30,727 genes; BSD-3 via scirpy",
            "djvdj_splen": "rnabioco/djvdj inst/extdata/splen (MIT): 500 real mouse spleen "
            "cells, 1,000 genes; dispersion cross-check only",
        },
        "seed": args.seed,
        "n_cells": int(x.shape[0]),
        "n_genes": int(x.shape[1]),
        "genes_with_zero_umis": int((totals == 0).sum()),
        "library": lib,
        "abundance": abundance,
        "dispersion": fit_dispersion(x),
        "dispersion_djvdj": fit_dispersion(dj) if dj is not None else None,
        "car": fit_car(lib["sdlog_within_sample"]),
        "lineage_program": fit_lineage_program(),
    }
    (args.out / "fit.json").write_text(json.dumps(fit, indent=2) + "\n")
    print(json.dumps(fit, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
