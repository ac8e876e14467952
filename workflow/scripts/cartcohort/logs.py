"""Logging helpers for Snakemake entry scripts."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from typing import Any

from .errors import CartCohortError


@contextlib.contextmanager
def script_logging(smk: Any) -> Iterator[logging.Logger]:
    """Send stderr and Python logging of an entry script to the rule's log.

    Errors raised on purpose (:class:`CartCohortError`) are written as their
    message alone; anything else keeps its traceback in the log. In both cases
    the script exits non-zero so Snakemake removes the rule's outputs.

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
    try:
        yield logger
    except CartCohortError as err:
        print(f"ERROR: {err}", file=stream)
        stream.flush()
        if stream is not old_stderr:
            print(f"ERROR in rule {getattr(smk, 'rule', '?')}: {err}", file=old_stderr)
        sys.stderr = old_stderr
        raise SystemExit(1) from None
    except Exception:
        traceback.print_exc(file=stream)
        stream.flush()
        sys.stderr = old_stderr
        raise
    finally:
        sys.stderr = old_stderr
        if stream is not old_stderr:
            stream.close()
