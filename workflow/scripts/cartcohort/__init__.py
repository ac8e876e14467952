"""cart-cohort: single-cell CAR-T cohort analysis library.

Organised by kind, as scanpy and scirpy are:

- :mod:`cartcohort.io` - readers of Cell Ranger GEX and TCR contig inputs;
- :mod:`cartcohort.sheets` - sample sheet and clinical table validation;
- :mod:`cartcohort.pp` - per-library QC, doublets, merging the cohort;
- :mod:`cartcohort.tl` - integration, annotation, clonotypes, repertoire, features;
- :mod:`cartcohort.stats` - patient-level association with response;
- :mod:`cartcohort.scorecards` - infusion products placed in the cohort;
- :mod:`cartcohort.reference` - the frozen cohort reference, new products scored in it;
- :mod:`cartcohort.pl` - figures; :mod:`cartcohort.report` - report pages, provenance;
- :mod:`cartcohort.browser` - ``cohort.h5ad`` for cellxgene and the UCSC Cell Browser site;
- :mod:`cartcohort.datasets` - the demo-cohort simulator and its truth evaluation;
- :mod:`cartcohort.tables` - the contract tables (columns, dtypes, reader, writer);
- :mod:`cartcohort.config` - the configuration schema, defaults and validation.

Subpackages load lazily (PEP 562): the workflow imports the package while Snakemake
parses the DAG, and an eager import would pull scanpy and matplotlib into every dry run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"

_SUBMODULES = (
    "browser",
    "config",
    "datasets",
    "errors",
    "genesets",
    "io",
    "logs",
    "pl",
    "pp",
    "reference",
    "report",
    "scorecards",
    "sheets",
    "stats",
    "tables",
    "tl",
    "vocab",
)
__all__ = list(_SUBMODULES)


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'cartcohort' has no attribute {name!r}")
