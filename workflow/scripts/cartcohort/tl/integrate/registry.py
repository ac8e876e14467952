"""The integration methods known to the workflow, one :class:`Method` entry each.

Every method module of this package registers itself with one line
(``register(Method(...))``); :data:`METHODS` is the only list of method names (the
configuration schema's enum of ``integrate.methods`` is tested against it). This module
imports nothing heavy, so that the workflow can read the registry while it builds the DAG.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from ...errors import CartCohortError

EXACT_KNN_MAX_CELLS = 100_000
"""Up to this many cells the kNN graph of a method that corrects the embedding is exact
(scikit-learn, brute force); above, it is scanpy's approximate pynndescent graph (seeded)."""

if TYPE_CHECKING:
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp


class RunMethod(Protocol):
    """Signature of :attr:`Method.run`: the corrected embedding of the cells."""

    def __call__(
        self,
        x_pca: np.ndarray,
        batches: pd.Series,
        *,
        seed: int,
        n_threads: int,
        counts: sp.spmatrix | None,
        params: dict[str, Any],
    ) -> np.ndarray:
        """Cells x dimensions (float32) from ``x_pca`` (float32 cells x PCs);
        ``batches`` is the named batch column (str) indexed by cell id."""
        ...


class BuildGraph(Protocol):
    """Signature of :attr:`Method.graph`: build the method's own kNN graph."""

    def __call__(self, tmp: ad.AnnData, batches: pd.Series, *, n_neighbors: int) -> dict:
        """Write ``obsp['connectivities']``/``['distances']`` of ``tmp`` (embedding in
        ``obsm['X_integrated']``) and return the ``uns['neighbors']['params']`` entries."""
        ...


@dataclass(frozen=True)
class Method:
    """One integration method.

    Attributes
    ----------
    name
        Name in the configuration (``integrate.methods``, ``integrate.use``) and in
        ``results/integrate/{method}.h5ad``.
    package
        Python package the method imports (``None``: none); checked before the
        expensive steps, with :attr:`install` in the error message.
    needs_counts
        The method models raw counts: it is given ``layers['counts']`` of the HVGs.
    corrects_graph
        The method corrects the kNN graph (built by :attr:`graph`) and leaves the
        embedding as the PCA; otherwise it corrects the embedding and the graph is a
        plain kNN graph of it.
    run
        The corrected embedding (:class:`RunMethod`).
    params
        Keys the method accepts in its settings (``integrate.<name>``, given to
        :attr:`run` as ``params``): empty = no settings (and no ``integrate.<name>``
        section in the configuration), ``None`` = any key.
    needs_batches
        The method needs ``batch_key`` in ``obs`` with at least 2 values.
    graph
        Builds the kNN graph of a graph-correcting method (:class:`BuildGraph`).
    install
        How to install :attr:`package`.
    """

    name: str
    package: str | None
    needs_counts: bool
    corrects_graph: bool
    run: RunMethod
    params: frozenset[str] | None = frozenset()
    needs_batches: bool = True
    graph: BuildGraph | None = None
    install: str = ""

    def __post_init__(self) -> None:
        if self.corrects_graph != (self.graph is not None):
            raise ValueError(f"method {self.name!r}: corrects_graph needs a graph builder")

    @property
    def configurable(self) -> bool:
        """The method has settings: a section ``integrate.<name>`` in the configuration."""
        return self.params != frozenset()

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raise when ``params`` (``integrate.<name>``) has keys the method does not take."""
        if self.params is None:
            return
        unknown = sorted(set(params) - self.params)
        if unknown:
            raise CartCohortError(
                f"config integrate.{self.name} has unknown keys {unknown}; allowed: "
                f"{sorted(self.params)}"
            )

    def require(self) -> ModuleType | None:
        """Import :attr:`package`, or raise naming it and how to install it."""
        if self.package is None:
            return None
        if importlib.util.find_spec(self.package) is None:
            raise CartCohortError(
                f"integration method '{self.name}' needs the Python package "
                f"'{self.package}', which is not installed in this environment. Fix: "
                f"install it ({self.install}) and add it to envs/integrate.yaml, or remove "
                f"'{self.name}' from integrate.methods (and integrate.use) in "
                "config/config.yaml"
            )
        return importlib.import_module(self.package)


METHODS: dict[str, Method] = {}
"""Method name -> :class:`Method`, filled by the method modules of this package."""


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (a name may be registered once)."""
    if method.name in METHODS:
        raise ValueError(f"integration method {method.name!r} is registered twice")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``, or a :class:`CartCohortError` listing the known ones."""
    if name not in METHODS:
        raise CartCohortError(
            f"unknown integration method {name!r}; choose from {', '.join(METHODS)}"
        )
    return METHODS[name]


def method_batches(obs: pd.DataFrame, batch_key: str, method: str) -> pd.Series:
    """``obs[batch_key]`` as strings: the batches a method (one with
    :attr:`Method.needs_batches`) corrects.

    Raises
    ------
    CartCohortError
        ``batch_key`` is not an ``obs`` column, or has a single value.
    """
    if batch_key not in obs:
        raise CartCohortError(
            f"obs has no column '{batch_key}' (integrate.batch_key). Fix: set "
            "integrate.batch_key to a sample-sheet column such as 'batch' or 'sample'"
        )
    batches = obs[batch_key].astype(str)
    if batches.nunique() < 2:
        raise CartCohortError(
            f"integration method '{method}' needs at least 2 values of "
            f"obs['{batch_key}'], found only {sorted(batches.unique())}. Fix: set "
            "integrate.methods: [none] and integrate.use: none, or choose another "
            "integrate.batch_key"
        )
    return batches

