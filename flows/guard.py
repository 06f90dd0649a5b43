"""A watchdog that stops what ``optinter run`` started once ``optinter run`` itself is gone.

``optinter run`` starts child processes it cannot always stop itself: Prefect's temporary API server
(``uvicorn``), a Dask LocalCluster's workers. On a normal exit, an exception, Ctrl-C or SIGTERM it
stops them; after ``kill -9`` (or the OOM killer) it cannot, and they would run on as orphans. So
:func:`start_guard` starts this module as a small separate process (``python -m flows.guard PID``)
that polls the owner, remembers its descendants while it lives, and once it is gone terminates
those still running (SIGTERM, then SIGKILL after a grace period) and exits. It ignores SIGINT, so a
Ctrl-C in the terminal reaches the owner (which shuts down cleanly) without ending the guard first.

Plain Python + psutil: no Prefect, no MLflow.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

log = logging.getLogger(__name__)

#: Seconds between two looks at the owner and its descendants.
POLL_S = 0.5
#: Seconds the orphans get to exit on SIGTERM before SIGKILL.
GRACE_S = 5.0


def start_guard(pid: int | None = None) -> subprocess.Popen[bytes]:
    """Start the guard of process ``pid`` (this one by default); it exits by itself after the owner."""
    pid = os.getpid() if pid is None else pid
    # same process group as the owner (a group kill reaches it too), no inherited stdin
    return subprocess.Popen([sys.executable, "-m", "flows.guard", str(pid)], stdin=subprocess.DEVNULL,
                            close_fds=True)


def reap(procs: Sequence[Any], grace: float = GRACE_S) -> list[int]:
    """Terminate the ``psutil.Process``es of ``procs`` still running (SIGKILL after ``grace`` s); their pids."""
    import psutil

    alive = [p for p in procs if p.is_running()]  # is_running() also tells a reused pid apart
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, left = psutil.wait_procs(alive, timeout=grace)
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=grace)
    return [p.pid for p in alive]


def guard(owner_pid: int, poll: float = POLL_S, grace: float = GRACE_S) -> list[int]:
    """Watch ``owner_pid`` until it is gone, then stop its remembered descendants; their pids."""
    import psutil

    me = os.getpid()
    try:
        owner = psutil.Process(owner_pid)
    except psutil.NoSuchProcess:
        return []
    known: dict[int, psutil.Process] = {}
    while True:
        try:
            if owner.status() == psutil.STATUS_ZOMBIE:
                break
            for child in owner.children(recursive=True):
                if child.pid != me and child.pid not in known:
                    known[child.pid] = child
        except psutil.NoSuchProcess:
            break
        time.sleep(poll)
    stopped = reap(list(known.values()), grace)
    if stopped:
        log.warning("optinter guard: process %d is gone; stopped %d processes it had left running: %s",
                    owner_pid, len(stopped), ", ".join(map(str, stopped)))
    return stopped


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.guard", description=__doc__.split("\n\n")[0])
    p.add_argument("pid", type=int, help="the process to guard")
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    guard(args.pid)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
