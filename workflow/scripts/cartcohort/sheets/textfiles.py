"""Text files that may or may not be gzip-compressed, whatever their name."""

from __future__ import annotations

import gzip
import io
import os
from typing import IO

GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with the gzip magic bytes (whatever its name)."""
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def open_text(path: str | os.PathLike) -> IO[str]:
    """Open a text file that may or may not be gzip-compressed.

    The decision is made on the file's first bytes, not its name, so a plain
    text ``matrix.mtx.gz`` (as found in the wild) opens fine.
    """
    if is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_lines(path: str | os.PathLike) -> list[str]:
    """All non-empty lines of a (possibly gzip-compressed) text file, without newlines."""
    with open_text(path) as fh:
        return [line for line in fh.read().splitlines() if line.strip()]
