"""``kill -9`` of ``optinter run`` in the middle of re-train: nothing it started keeps running (Prefect's
temporary API server included), and the next run marks the MLflow runs it left ``RUNNING`` as
``KILLED``, with a tag saying why; SIGTERM closes the runs itself. Every process is started in its
own session and killed by group at the end, whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tiny import TINY_OVERRIDES, TINY_PREPROCESS, TINY_SYNTH

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


class Run:
    """One ``optinter run`` process (own session, output in a file)."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.pid = self.proc.pid
        self.seen: dict[int, psutil.Process] = {}

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if needle in self.text():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"optinter run exited with {self.proc.returncode} before {needle!r}:\n{self.text()[-4000:]}")
            time.sleep(0.3)
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {needle!r}:\n{self.text()[-4000:]}")

    def descendants(self) -> list[psutil.Process]:
        kids = psutil.Process(self.pid).children(recursive=True)
        self.seen.update({p.pid: p for p in kids})
        return kids

    def kill_all(self) -> None:
        """SIGKILL the whole session and anything seen below it (idempotent)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for p in self.seen.values():
            try:
                if p.is_running():
                    p.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _step(run) -> str:
    return "pipeline" if run.data.tags.get("stage") == "pipeline" else run.data.tags.get("optinter.step", "")


def _runs_of(uri: str, pid: int) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("optinter")
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return [r for r in runs if f":{pid}:" in r.data.tags.get("optinter.owner", "")]


def test_kill_9_then_rerun_marks_runs_killed_and_leaves_no_process(tmp_path):
    args = [str(BIN / "optinter"), "run", "--artifact-root", str(tmp_path / "artifacts"), "--stages", "retrain",
            "--baselines", "none", "--tune", "off"]
    for k, v in TINY_SYNTH.items():
        args += ["--synth", f"{k}={json.dumps(v)}"]
    for k, v in TINY_PREPROCESS.items():
        args += ["--preprocess", f"{k}={json.dumps(v)}"]
    for o in TINY_OVERRIDES + ["retrain:train.epochs=100000", "retrain:train.patience=100000"]:
        args += ["--set", o]  # a re-train that runs until it is killed
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "OPTINTER_"))}
    env["PYTHONUNBUFFERED"] = "1"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs: list[Run] = []
    try:
        first = Run(args, tmp_path, env, tmp_path / "first.log")
        runs.append(first)
        first.wait_for("retrain:optinter: computing", 300)
        time.sleep(1.0)  # the guard looks at its owner's children every 0.5 s
        kids = first.descendants()
        assert any("uvicorn" in _cmdline(p) and "prefect.server" in _cmdline(p) for p in kids), \
            [_cmdline(p) for p in kids]  # Prefect's temporary API server is running
        assert any("flows.guard" in _cmdline(p) for p in kids)
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        _, alive = psutil.wait_procs(kids, timeout=20)
        assert not alive, f"left running after kill -9: {[_cmdline(p) for p in alive]}"
        left = {_step(r): r.info.status for r in _runs_of(uri, first.pid)}
        assert left["pipeline"] == left["retrain:optinter"] == "RUNNING"  # nothing could close them

        second = Run(args, tmp_path, env, tmp_path / "second.log")
        runs.append(second)
        second.wait_for("retrain:optinter: computing", 300)  # it opened its parent run: stale ones are marked
        killed = _runs_of(uri, first.pid)
        assert {r.info.status for r in killed} <= {"KILLED", "FINISHED"}
        for r in killed:
            if _step(r) in ("pipeline", "retrain:optinter"):  # the parent and the re-train
                assert r.info.status == "KILLED", r.info.run_name
                reason = r.data.tags["optinter.killed_reason"]
                assert f"process {first.pid} on " in reason and "ended without closing it" in reason
        finished = [r for r in killed if r.info.status == "FINISHED"]
        assert {r.data.tags["optinter.step"] for r in finished} == {"synth", "preprocess", "search"}

        # SIGTERM: the run closes its own MLflow runs (KILLED) and stops what it started
        time.sleep(1.0)
        kids = second.descendants()
        os.kill(second.pid, signal.SIGTERM)
        assert second.proc.wait(timeout=90) == 130, second.text()[-3000:]
        _, alive = psutil.wait_procs(kids, timeout=20)
        assert not alive, f"left running after SIGTERM: {[_cmdline(p) for p in alive]}"
        closed = {_step(r): r for r in _runs_of(uri, second.pid)}
        for step in ("pipeline", "retrain:optinter"):
            assert closed[step].info.status == "KILLED", step
            assert "terminated by SIGTERM" in closed[step].data.tags["optinter.killed_reason"]
        assert "interrupted (terminated by SIGTERM)" in second.text()
    finally:
        for r in runs:
            r.kill_all()
