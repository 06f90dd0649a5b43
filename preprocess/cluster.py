"""The ``dask.distributed`` client the stage runs on.

A :class:`distributed.LocalCluster` is started (inside :func:`dask_client`, never at import) unless a
scheduler address is given, either explicitly or by ``DASK_SCHEDULER_ADDRESS``; then the stage runs
on that cluster unchanged (its workers must be able to import ``preprocess`` and read/write the
input and output folders, e.g. a shared filesystem).

The LocalCluster is started with Dask's background diagnostics turned down (:data:`QUIET_CONFIG`):
the statistical profiler samples every worker thread every 10 ms and the event loops tick every
20 ms by default, which on a 2-core machine costs about 0.1 core for the whole run (a fifth of the
stage's CPU time) and buys nothing for these coarse, I/O-free-of-scheduler tasks. Its worker processes
also get glibc malloc settings that keep partition-sized buffers in the heap between tasks (see the
comment in :data:`QUIET_CONFIG`).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

log = logging.getLogger(__name__)

#: Dask settings applied while a LocalCluster is created (its worker processes inherit them).
QUIET_CONFIG: dict[str, object] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
    # glibc malloc in the worker processes: Dask's default (trim above 64 KiB, dynamic mmap threshold) hands
    # every freed partition-sized array back to the kernel and faults it in again for the next task; that
    # was ~40% of the workers' CPU time (system time) in this stage. Arrays up to 32 MiB come from the heap
    # and up to 256 MiB of free heap is kept for the next task; memory stays bounded by the largest task.
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 256 << 20,
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 32 << 20,
}


def _distributed() -> Any:
    """``distributed``, imported without letting it change the ``distributed`` logger's level (importing
    it sets INFO; the application's choice is kept)."""
    level = logging.getLogger("distributed").level
    import distributed

    if level:
        logging.getLogger("distributed").setLevel(level)
    return distributed


def connect_scheduler(address: str) -> "distributed.Client":  # type: ignore[name-defined]  # noqa: F821
    """A client of the running scheduler at ``address``."""
    return _distributed().Client(address, timeout="30s")


def start_local_cluster(n_workers: int, threads_per_worker: int = 1, processes: bool = True,
                        resources: dict[str, float] | None = None
                        ) -> tuple["distributed.LocalCluster", "distributed.Client"]:  # type: ignore[name-defined]  # noqa: F821
    """A LocalCluster started under :data:`QUIET_CONFIG` (its workers declare ``resources``) and its client;
    the caller closes both."""
    import dask

    dist = _distributed()
    with dask.config.set(QUIET_CONFIG):
        cluster = dist.LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=processes,
                                    dashboard_address=":0", silence_logs=logging.WARNING,
                                    **({"resources": resources} if resources else {}))
        try:
            client = dist.Client(cluster)
        except BaseException:
            cluster.close()
            raise
    return cluster, client


@contextmanager
def dask_client(scheduler: str | None = None, n_workers: int = 2, threads_per_worker: int = 1,
                processes: bool = True) -> Iterator["distributed.Client"]:  # type: ignore[name-defined]  # noqa: F821
    """A client of the scheduler at ``scheduler`` / ``$DASK_SCHEDULER_ADDRESS``, else of a LocalCluster
    started for the block and closed after it."""
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        log.info("connecting to Dask scheduler %s", address)
        client = connect_scheduler(address)
        try:
            yield client
        finally:
            client.close()
        return
    log.info("starting LocalCluster: %d workers x %d threads (%s)", n_workers, threads_per_worker,
             "processes" if processes else "threads")
    cluster, client = start_local_cluster(n_workers, threads_per_worker, processes)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
