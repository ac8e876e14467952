"""The real gene space and the expression model fitted to real 10x data.

``data/gene_space.tsv.gz`` and ``data/fit.json`` are written by ``tools/fit_simulator.py``
from scirpy's bundled ``wu2020_200.h5mu`` (150 real human T cells, 10x 5', 30,727 genes)
and, for the CAR transcript, the real per-cell CAR UMIs of sorted CAR+ cells
(``haradhvala_d7``). ``fit.json`` records every fitted value and its source.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parent / "data"


@functools.lru_cache(maxsize=1)
def fitted_model() -> dict:
    """The fitted parameters (``fit.json``): library size, abundance, dispersion, CAR."""
    return json.loads((DATA / "fit.json").read_text())


@functools.lru_cache(maxsize=1)
def real_gene_space() -> pd.DataFrame:
    """Every real gene of the fit: ``name`` and ``log_weight`` (log share of a cell's UMIs)."""
    with gzip.open(DATA / "gene_space.tsv.gz", "rt") as fh:
        return pd.read_csv(fh, sep="\t", dtype={"name": str})


def dispersion(mean: np.ndarray) -> np.ndarray:
    """NB size ``theta`` of genes with the given mean UMIs per cell (fitted trend).

    ``log(phi) = a + b * log(mean)`` with ``phi = 1 / theta``, fitted by moments on the
    real counts; the trend is held constant below the smallest mean it was fitted on.
    """
    d = fitted_model()["dispersion"]
    m = np.maximum(np.asarray(mean, dtype=float), d["min_mean"])
    phi = np.exp(d["a"] + d["b"] * np.log(m))
    return 1.0 / phi


def car_nb_theta() -> float:
    """NB size of per-cell CAR UMIs in CAR+ cells (fitted on sorted CAR+ cells).

    Fitted with the mean to the real 0 / 1 / 2 / >= 3 CAR UMI fractions of sorted day-7
    CAR+ cells (``fit.json``, ``car``: data, model and fitted fractions).
    """
    car = fitted_model()["car"]
    return float(car["nb_theta"]) if car else 2.85


def car_fitted_detection() -> float:
    """CAR detection of the real sorted day-7 CAR+ cells the CAR model was fitted to.

    The share of CAR+ cells with >= 1 CAR UMI at the median library size (0.84): the
    ``car_detection`` that reproduces those cells. The chemistry defaults (0.65 and 0.35)
    are for products, whose cells are less activated than day-7 cells in vivo.
    """
    car = fitted_model()["car"]
    return float(car["detection_at_median"]) if car else 0.84


def car_mean_for_detection(detection: float, theta: float | None = None) -> float:
    """Mean CAR UMIs (at the median library size) that give ``P(count >= 1) = detection``."""
    th = car_nb_theta() if theta is None else theta
    return float(th * ((1.0 - detection) ** (-1.0 / th) - 1.0))
