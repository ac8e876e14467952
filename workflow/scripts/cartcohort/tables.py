"""Deterministic table output: stable row order and fixed float formatting.

Every TSV the workflow writes goes through :func:`write_table`, so that two
runs on the same inputs give byte-identical files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

FLOAT_FORMAT = "%.6g"


def write_table(
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    sort_by: Sequence[str] | None = None,
    float_format: str = FLOAT_FORMAT,
) -> None:
    """Write ``df`` as a tab-separated file, deterministically.

    Parameters
    ----------
    df
        Table to write; the index is not written (move it into a column first).
    path
        Output path; ``.gz`` compresses with a fixed mtime so bytes are stable.
    sort_by
        Columns to sort by (stable mergesort) before writing.
    float_format
        printf-style format for floats.
    """
    out = df
    if sort_by:
        out = df.sort_values(list(sort_by), kind="mergesort")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        import gzip

        with open(path, "wb") as raw, gzip.GzipFile(
            fileobj=raw, mode="wb", mtime=0, filename=""
        ) as gz:
            gz.write(
                out.to_csv(sep="\t", index=False, float_format=float_format, na_rep="NA").encode()
            )
    else:
        out.to_csv(path, sep="\t", index=False, float_format=float_format, na_rep="NA")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a TSV written by :func:`write_table` (``NA`` becomes missing)."""
    return pd.read_csv(path, sep="\t", na_values=["NA"], keep_default_na=False)
