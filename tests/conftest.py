"""Settings of the whole test suite, applied where the test program starts (before Prefect is
imported): library loggers used outside a flow run do not make Prefect warn "attempted to send
logs to the API without a flow run id"."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
