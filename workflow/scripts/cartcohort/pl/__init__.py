"""Figures of the report, one module per step, and the one way they are saved.

- :mod:`cartcohort.pl.qc` - per-sample QC violins and counts vs genes scatter;
- :mod:`cartcohort.pl.integrate` - UMAP grid per integration method, metrics heatmap;
- :mod:`cartcohort.pl.annotate` - state / lineage / CAR UMAPs, state fractions, dot plot;
- :mod:`cartcohort.pl.clonotypes` - clonal expansion, rarefied diversity, top-clone alluvia;
- :mod:`cartcohort.pl.kinetics` - CAR+ kinetics lines, clone-fate alluvial, volcanoes;
- :mod:`cartcohort.pl.associate` - forest and volcano plots, scorecard heatmap;
- :mod:`cartcohort.pl.outcomes` - blood trajectories and Kaplan-Meier pages;
- :mod:`cartcohort.pl.scorecard` - a new product's one-page scorecard (strips, PDF).

Importing this package is cheap: the plotting modules (and matplotlib) load on first
use of a name (PEP 562), e.g. ``pl.umap_grid`` or ``from cartcohort.pl import qc``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ._save import save_figure

_SUBMODULES = ("annotate", "associate", "clonotypes", "integrate", "kinetics", "outcomes",
               "qc", "scorecard")
# public name -> module that defines it
_FUNCTIONS = {
    "read_qc_obs": "qc",
    "qc_outcome": "qc",
    "qc_violins": "qc",
    "qc_scatter": "qc",
    "qc_figures": "qc",
    "umap_grid": "integrate",
    "metrics_heatmap": "integrate",
    "metrics_passes_heatmap": "integrate",
    "graph_description": "integrate",
    "integration_umap": "integrate",
    "metrics_figure": "integrate",
    "umap_categorical": "annotate",
    "umap_state": "annotate",
    "umap_lineage": "annotate",
    "umap_car": "annotate",
    "car_category": "annotate",
    "state_fraction_bars": "annotate",
    "signature_dotplot": "annotate",
    "annotation_figures": "annotate",
    "library_calls": "annotate",
    "response_group": "clonotypes",
    "top_clones": "clonotypes",
    "plot_clonal_expansion": "clonotypes",
    "plot_rarefied_diversity": "clonotypes",
    "plot_top_clones_alluvial": "clonotypes",
    "clonotype_figures": "clonotypes",
    "plot_car_kinetics": "kinetics",
    "plot_clone_fate": "kinetics",
    "volcano_pages": "kinetics",
    "kinetics_figures": "kinetics",
    "message_figure": "associate",
    "forest_plot": "associate",
    "volcano_plot": "associate",
    "scorecard_heatmap": "associate",
    "association_figures": "associate",
    "trajectory_data": "outcomes",
    "trajectory_pages": "outcomes",
    "km_split": "outcomes",
    "km_pages": "outcomes",
    "time_survival_figures": "outcomes",
    "fitness_strips": "scorecard",
    "page_figure": "scorecard",
    "write_pdf_pages": "scorecard",
}
__all__ = ["save_figure", *_SUBMODULES, *_FUNCTIONS]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _FUNCTIONS:
        module: ModuleType = importlib.import_module(f".{_FUNCTIONS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'cartcohort.pl' has no attribute {name!r}")
