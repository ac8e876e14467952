"""Dask as the chunked engine of the cohort steps.

The cohort steps read their on-disk matrices as dask arrays of row blocks
(:func:`anndata.experimental.read_elem_lazy`: each block re-opens the file by its path,
so a worker on another machine reads it from the shared file system) and reduce the
blocks' partial results on the client **in block order**, so the result is bit for bit
the same whichever scheduler computed the blocks and however many workers it had.

Where the blocks run is set by ``dask.scheduler`` in the config:

- ``null`` (default): dask's local threaded scheduler with the rule's threads;
- the address of a running ``dask.distributed`` scheduler (``tcp://host:8786``, for
  example one started by ``dask_jobqueue.SLURMCluster`` or a cloud Dask cluster): the
  blocks run on its workers, which must see the ``results/`` folder at the same path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .errors import CartCohortError

logger = logging.getLogger(__name__)

BLOCKS_PER_WORKER = 2
"""Blocks in flight per worker thread: bounds the partial results held at once."""

CONNECT_TIMEOUT = "30s"
"""How long to wait for the scheduler of ``dask.scheduler`` to answer."""


@contextlib.contextmanager
def dask_scheduler(address: str | None, *, threads: int = 1) -> Iterator[int]:
    """Compute the dask work of the block on ``address``, or locally.

    Parameters
    ----------
    address
        ``dask.scheduler`` of the config: the address of a running
        ``dask.distributed`` scheduler, or None/empty for the local threaded scheduler.
    threads
        Worker threads of the local scheduler (the rule's ``threads``).

    Yields
    ------
    int
        The number of worker threads the blocks can run on at once.
    """
    import dask

    if not address:
        n = max(1, int(threads))
        with dask.config.set(scheduler="threads", num_workers=n):
            logger.info("dask: local threaded scheduler, %d thread(s)", n)
            yield n
        return
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise CartCohortError(
            f"config dask.scheduler: no Dask scheduler answers at {address!r} ({err}). "
            "Fix: start the scheduler and its workers first (see README 'Cohort steps on "
            "a Dask cluster'), or set dask.scheduler: null for the local scheduler"
        ) from err
    with client, dask.config.set(scheduler=client.get):
        n = max(1, sum(client.nthreads().values()))
        logger.info("dask: distributed scheduler %s, %d worker thread(s)", address, n)
        yield n


def row_blocks(path: str, key: str, *, n_rows: int, n_cols: int, block_rows: int) -> list[Any]:
    """The row blocks of the sparse matrix ``key`` of the h5ad file ``path``.

    Parameters
    ----------
    path
        An ``.h5ad`` (or ``.h5mu``) file, closed for writing.
    key
        The matrix's group in the file (e.g. ``X``, ``layers/counts``).
    n_rows, n_cols
        Its shape.
    block_rows
        Rows per block.

    Returns
    -------
    list of dask.delayed.Delayed
        One delayed CSR matrix per block, in row order; each reads its rows from disk
        when computed.
    """
    import h5py
    from anndata.experimental import read_elem_lazy

    with h5py.File(path, "r") as f:
        lazy = read_elem_lazy(f[key], chunks=(int(block_rows), int(n_cols)))
    if lazy.shape != (n_rows, n_cols):
        raise CartCohortError(f"{path}: {key} is {lazy.shape}, expected {(n_rows, n_cols)}")
    return list(lazy.to_delayed().ravel())


def map_ordered(func: Callable[..., Any], blocks: Sequence[Any], *args: Sequence[Any],
                n_workers: int) -> Iterator[Any]:
    """``func(block, *arg_i)`` of every block, computed on the active scheduler and
    yielded in block order, ``BLOCKS_PER_WORKER * n_workers`` blocks at a time.

    Parameters
    ----------
    func
        A module-level function (it is pickled for distributed workers).
    blocks
        Delayed blocks (:func:`row_blocks`).
    *args
        Per-block extra arguments, one sequence each (same length as ``blocks``).
    n_workers
        Worker threads (:func:`dask_scheduler`).

    Yields
    ------
    The result of each block, in order.
    """
    import dask

    for seq in args:
        if len(seq) != len(blocks):
            raise ValueError(f"{len(seq)} arguments for {len(blocks)} blocks")
    step = max(1, BLOCKS_PER_WORKER * int(n_workers))
    task = dask.delayed(func, pure=True)
    for a in range(0, len(blocks), step):
        todo = [task(b, *(seq[i] for seq in args))
                for i, b in enumerate(blocks[a:a + step], start=a)]
        yield from dask.compute(*todo)
