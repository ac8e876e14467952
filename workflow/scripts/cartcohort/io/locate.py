"""Inputs located and checked before they are read, and readers' errors reworded.

A file the parse-time checks of :mod:`cartcohort.sheets` would refuse gives the
same message here; an exception a third-party reader raises on malformed
content becomes an :class:`~cartcohort.errors.InputError` naming the file.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import InputError, Problem
from ..sheets import GexSource, LocateError, VdjKind, is_gzip, locate_gex, locate_vdj

#: What the third-party readers (pandas, json, scipy, h5py, gzip, awkward) raise on
#: malformed content that the cheap checks of :mod:`cartcohort.sheets` let through.
PARSE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # incl. pandas ParserError, json.JSONDecodeError, UnicodeDecodeError
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    OSError,  # incl. gzip.BadGzipFile, h5py read errors
    zlib.error,
)


def raise_issues(file: Path, issues: Sequence[tuple[str, str, str]]) -> None:
    """Raise the ``(where, what, fix)`` issues about ``file`` as one :class:`InputError`."""
    if issues:
        raise InputError([Problem(str(file), where, what, fix) for where, what, fix in issues])


@contextlib.contextmanager
def parsing(
    path: Path, what: str, fix: str, extra: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Turn a reader's exception on malformed content into an :class:`InputError`
    naming ``path`` (the original exception is chained for the log)."""
    try:
        yield
    except (*PARSE_ERRORS, *extra) as err:
        text = str(err).strip()
        msg = text.splitlines()[0][:200] if text else ""
        what_failed = f"cannot be read as {what} ({err.__class__.__name__}: {msg})"
        raise InputError([Problem(str(path), "", what_failed, fix)]) from err


def check_no_nul(path: Path, *, chunk: int = 1 << 24) -> None:
    """Raise :class:`InputError` when a (possibly gzipped) text file holds a NUL byte.

    scipy's MatrixMarket reader (fast_matrix_market, scipy 1.17) crashes the
    interpreter with a segmentation fault on NUL bytes instead of raising.
    """
    opener = gzip.open if is_gzip(path) else open
    offset = 0
    with opener(path, "rb") as fh:
        while block := fh.read(chunk):
            at = block.find(b"\x00")
            if at >= 0:
                raise InputError(
                    [
                        Problem(
                            str(path),
                            f"byte {offset + at} (uncompressed)",
                            "holds a NUL byte: the file is corrupt (partial copy or disk error)",
                            "copy the folder again from the Cell Ranger outs/ folder",
                        )
                    ]
                )
            offset += len(block)


def gex_input(path: str | os.PathLike) -> GexSource:
    """:func:`~cartcohort.sheets.locate_gex`, raising :class:`InputError` naming ``path``."""
    try:
        return locate_gex(path)
    except LocateError as err:
        raise InputError([Problem(str(path), "", err.what, err.fix)]) from None


def vdj_input(path: str | os.PathLike) -> tuple[VdjKind, Path]:
    """:func:`~cartcohort.sheets.locate_vdj`, raising :class:`InputError` naming ``path``."""
    try:
        return locate_vdj(path)
    except LocateError as err:
        raise InputError([Problem(str(path), "", err.what, err.fix)]) from None
