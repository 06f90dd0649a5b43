"""Settings of the whole test suite, applied where the test program starts (before Prefect is
imported): library loggers used outside a flow run do not make Prefect warn "attempted to send
logs to the API without a flow run id"; independent training jobs run in the test process, one
after the other (``OPTINTER_JOB_WORKERS=1``), unless a test asks for a cluster — the cluster
path has its own tests (tests/optinter/test_cluster.py, tests/experiments/test_compare_cluster.py)."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("OPTINTER_JOB_WORKERS", "1")
