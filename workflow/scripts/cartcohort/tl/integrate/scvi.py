"""scVI (Lopez et al. 2018): the latent space of a variational autoencoder of the raw
counts of the HVGs, with the batch as covariate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...errors import CartCohortError
from .registry import Method, register

MODEL_PARAMS = ("n_layers", "n_hidden", "gene_likelihood")
"""Keys of ``integrate.scvi`` given to ``scvi.model.SCVI`` (with ``n_latent``, default 30);
the others go to ``model.train``."""


def run(
    x_pca: np.ndarray,
    batches: pd.Series,
    *,
    seed: int,
    n_threads: int,
    counts: Any = None,
    params: dict[str, Any],
) -> np.ndarray:
    """scVI latent space: cells x ``n_latent``, float32 (``counts``: HVG raw counts)."""
    import anndata as ad
    import scipy.sparse as sp

    scvi = METHOD.require()
    if counts is None:
        raise CartCohortError("method 'scvi' needs raw counts of the HVGs (counts=...)")
    params = dict(params)
    scvi.settings.seed = int(seed)
    batch_key = str(batches.name)
    tmp = ad.AnnData(X=sp.csr_matrix(counts, dtype=np.float32),
                     obs=pd.DataFrame({batch_key: batches.to_numpy()}, index=batches.index))
    scvi.model.SCVI.setup_anndata(tmp, batch_key=batch_key)
    model_kw = {"n_latent": int(params.pop("n_latent", 30))}
    for key in MODEL_PARAMS:
        if key in params:
            model_kw[key] = params.pop(key)
    model = scvi.model.SCVI(tmp, **model_kw)
    model.train(**params)
    return np.asarray(model.get_latent_representation(), dtype=np.float32)


METHOD = register(Method(
    "scvi", "scvi", needs_counts=True, corrects_graph=False, run=run, params=None,
    install="pip install scvi-tools  (or: conda install -c conda-forge scvi-tools)",
))
