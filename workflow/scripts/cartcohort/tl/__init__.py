"""Tools: integration, annotation, clonotypes, repertoire dynamics and sample features.

Subpackages load lazily (PEP 562), so importing one tool never imports the others.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_SUBMODULES = ("annotate", "clonotypes", "features", "integrate", "repertoire")
__all__ = list(_SUBMODULES)


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'cartcohort.tl' has no attribute {name!r}")
