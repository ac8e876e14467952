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
  distribution of sorted CAR+ day-7 cells (``../shared/data/haradhvala_d7``).

Run it again only when the model changes::

    .venv/bin/python tools/fit_simulator.py
"""

from __future__ import annotations

import argparse
import gzip
import importlib.resources
import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import optimize, special, stats

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "workflow" / "scripts" / "cartcohort" / "datasets" / "data"
SHARED = REPO.parent / "shared" / "data"
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


def fit_car() -> dict[str, float] | None:
    """NB fit of per-cell CAR UMIs in sorted CAR+ day-7 cells with a TCR (Haradhvala)."""
    base = SHARED / "haradhvala_d7"
    if not base.exists():
        return None
    car = pd.read_csv(base / "F1_CAR.quantFinal.txt", sep="\t", header=None)
    per_cell = car.groupby(0).size()
    tcr = pd.read_csv(base / "F1_TCR_tcr_all_contig_annotations.csv")
    tcr = tcr[tcr["is_cell"].astype(str).str.lower() == "true"]
    cells = pd.Index(tcr["barcode"].str.replace("-1", "", regex=False).unique())
    umis = per_cell.reindex(cells, fill_value=0).to_numpy(dtype=float)
    m, v = umis.mean(), umis.var(ddof=1)
    theta = m**2 / max(v - m, 1e-6)
    return {
        "n_cells": int(len(cells)),
        "fraction_detected": float((umis > 0).mean()),
        "mean_umis": float(m),
        "nb_theta": float(theta),
        "source": "haradhvala_d7 F1_CAR.quantFinal.txt (sorted CAR+ day-7 cells with a TCR)",
    }


def main(argv: list[str] | None = None) -> int:
    """Fit, then write ``gene_space.tsv.gz`` and ``fit.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=20261206)
    args = parser.parse_args(argv)
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
        "library": library_size(x, samples),
        "abundance": abundance,
        "dispersion": fit_dispersion(x),
        "dispersion_djvdj": fit_dispersion(dj) if dj is not None else None,
        "car": fit_car(),
    }
    (args.out / "fit.json").write_text(json.dumps(fit, indent=2) + "\n")
    print(json.dumps(fit, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
