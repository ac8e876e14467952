"""Private helpers shared by several subpackages (not part of the public API)."""

from .scirpy import load_scirpy

__all__ = ["load_scirpy"]
