"""Job functions for the cluster tests: module-level, so Dask workers import them by name."""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("optinter.tests.cluster")


def where(x: int, sleep: float = 0.0) -> dict[str, int]:
    """Which process ran the job and with how many torch / Arrow threads."""
    import pyarrow as pa
    import torch

    time.sleep(sleep)
    log.info("job %d ran in pid %d", x, os.getpid())
    return {"x": x, "pid": os.getpid(), "torch_threads": torch.get_num_threads(), "arrow_threads": pa.cpu_count()}


def fail(x: int) -> None:
    raise ValueError(f"job {x} failed on purpose")


def on_gpu() -> dict[str, int | str]:
    """The CUDA device the job runs on, and a tensor made there."""
    import torch

    t = torch.ones(4, device="cuda") * 2
    return {"device": torch.cuda.current_device(), "where": str(t.device), "sum": int(t.sum().item())}
