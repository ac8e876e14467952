"""Logging helpers for Snakemake entry scripts."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from typing import Any

from .errors import CartCohortError, exclude_fix


@contextlib.contextmanager
def script_logging(smk: Any) -> Iterator[logging.Logger]:
    """Send stderr and Python logging of an entry script to the rule's log.

    Errors raised on purpose (:class:`CartCohortError`) are written as their
    message alone; anything else keeps its traceback in the log. In both cases
    the script exits non-zero so Snakemake removes the rule's outputs. The job of a
    rule with a ``sample`` wildcard (one library) also says how to run on without
    that library (:func:`~cartcohort.errors.exclude_fix`): with ``--keep-going`` the
    other libraries' jobs go on, and the run finishes once it is excluded.

    Parameters
    ----------
    smk
        The ``snakemake`` object Snakemake injects into scripts.
    """
    log_path = smk.log[0] if len(smk.log) else None
    stream = open(log_path, "w") if log_path else sys.stderr
    old_stderr = sys.stderr
    sys.stderr = stream
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=stream,
        force=True,
    )
    logger = logging.getLogger(f"cartcohort.{getattr(smk, 'rule', 'script')}")
    rule = getattr(smk, "rule", "?")
    sample = getattr(getattr(smk, "wildcards", None), "sample", None)
    hint = f"{exclude_fix(sample)}." if sample is not None else ""
    try:
        yield logger
    except CartCohortError as err:
        _write(stream, f"ERROR: {err}", hint)
        if stream is not old_stderr:
            _write(old_stderr, f"ERROR in rule {rule}: {err}", hint)
        sys.stderr = old_stderr
        raise SystemExit(1) from None
    except Exception:
        traceback.print_exc(file=stream)
        _write(stream, hint)
        if stream is not old_stderr:  # Python prints the traceback there next
            _write(old_stderr, hint)
        sys.stderr = old_stderr
        raise
    finally:
        sys.stderr = old_stderr
        if stream is not old_stderr:
            stream.close()


def _write(stream: Any, *lines: str) -> None:
    """Write the non-empty ``lines`` on ``stream`` and flush it."""
    for line in lines:
        if line:
            print(line, file=stream)
    stream.flush()
