"""Logging settings of the programs that run the flow, applied where they start (never at import).

* :func:`prefect_logging_env` — before Prefect is imported (``optinter run`` / ``serve``, the test
  suite's conftest): the library loggers' records go to the Prefect run logs
  (``PREFECT_LOGGING_EXTRA_LOGGERS``), and a library logger used outside a flow run does not warn
  "attempted to send logs to the API without a flow run id"
  (``PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW=ignore``);
* :func:`library_logs_to_run` — at the start of a flow run: the library loggers' progress messages
  (INFO) are shown unless a level was configured, and they reach the run's logs even when Prefect
  was imported before the environment was set.
"""

from __future__ import annotations

import logging
import os

#: Library loggers whose records also go to the Prefect run logs (UI, ``--watch``).
LIBRARY_LOGGERS = ("optinter", "preprocess", "flows")

#: Prefect settings read once, when Prefect is imported.
PREFECT_LOGGING_ENV: dict[str, str] = {
    "PREFECT_LOGGING_EXTRA_LOGGERS": ",".join(LIBRARY_LOGGERS),
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def prefect_logging_env() -> dict[str, str]:
    """Set :data:`PREFECT_LOGGING_ENV` in ``os.environ`` where unset; returns what it set. Call it
    before Prefect is imported."""
    applied = {k: v for k, v in PREFECT_LOGGING_ENV.items() if k not in os.environ}
    os.environ.update(applied)
    return applied


def library_logs_to_run() -> None:
    """Give every library logger an INFO level (unless one is configured) and the handlers of
    Prefect's ``prefect.extra`` logger (the run-log API handler) when it has none of them yet."""
    extra = logging.getLogger("prefect.extra").handlers
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        if extra and not any(h in logger.handlers for h in extra):
            for h in extra:
                logger.addHandler(h)
