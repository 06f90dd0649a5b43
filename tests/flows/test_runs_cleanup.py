"""Runs left RUNNING by dead processes, run status on errors, the guard process, error texts (fast)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from optinter import tracking as tr


def _dead_owner() -> str:
    """The owner string of a process that has exited (its pid is not reused within the test)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = tr.process_owner(p.pid)
    p.wait()
    return owner


def test_owner_alive():
    assert tr.owner_alive(tr.process_owner()) is True
    dead = _dead_owner()
    assert tr.owner_alive(dead) is False
    host, pid, started = tr.process_owner().rsplit(":", 2)
    assert tr.owner_alive(f"{host}:{pid}:{float(started) - 100:.2f}") is False  # same pid, another process
    assert tr.owner_alive(f"another-host:{pid}:{started}") is None  # cannot be checked from here
    assert tr.owner_alive("not an owner") is None


def test_mark_stale_runs_kills_only_runs_of_dead_processes(mlflow_uri):
    from mlflow.tracking import MlflowClient

    exp = tr.ensure_experiment("stale", mlflow_uri)
    mine = tr.start_run(exp, "alive", tracking_uri=mlflow_uri)
    dead = tr.start_run(exp, "dead", {tr.TAG_OWNER: _dead_owner()}, tracking_uri=mlflow_uri)
    child = tr.start_run(exp, "dead child", {tr.TAG_OWNER: _dead_owner()}, parent_run_id=dead, tracking_uri=mlflow_uri)
    remote = tr.start_run(exp, "remote", {tr.TAG_OWNER: "elsewhere:1:1.00"}, tracking_uri=mlflow_uri)
    done = tr.start_run(exp, "done", {tr.TAG_OWNER: _dead_owner()}, tracking_uri=mlflow_uri)
    tr.end_run(done, "FINISHED", mlflow_uri)
    killed = tr.mark_stale_runs(exp, mlflow_uri, found_by="r123")
    assert sorted(killed) == sorted([dead, child])
    client = MlflowClient(tracking_uri=mlflow_uri)
    status = {r: client.get_run(r).info.status for r in (mine, dead, child, remote, done)}
    assert status == {mine: "RUNNING", dead: "KILLED", child: "KILLED", remote: "RUNNING", done: "FINISHED"}
    reason = client.get_run(dead).data.tags[tr.TAG_KILLED]
    assert "ended without closing it" in reason and "(found by run r123)" in reason
    assert socket.gethostname() in reason
    assert tr.mark_stale_runs(exp, mlflow_uri) == []  # nothing left to mark


def test_terminal_status_and_error_text():
    from prefect.exceptions import TerminationSignal

    from flows.steps import error_text

    assert tr.terminal_status(None) == "FINISHED"
    assert tr.terminal_status(ValueError("x")) == "FAILED"
    assert tr.terminal_status(KeyboardInterrupt()) == "KILLED"
    assert tr.terminal_status(TerminationSignal(signal.SIGTERM)) == "KILLED"
    assert error_text(TerminationSignal(signal.SIGTERM)) == "TerminationSignal: terminated by SIGTERM"
    try:
        try:
            raise OSError("disk full")
        except OSError as e:
            raise RuntimeError("stage retrain failed") from e
    except RuntimeError as e:
        assert error_text(e) == "RuntimeError: stage retrain failed; caused by OSError: disk full"


def test_guard_stops_the_children_of_a_killed_owner(tmp_path):
    """An owner that starts a long child, then is killed with SIGKILL: the guard stops the child."""
    script = tmp_path / "owner.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "from flows.guard import start_guard\n"
        "start_guard()\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(tmp_path / 'child.pid')!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n")
    owner = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    child = None
    try:
        for _ in range(100):
            if (tmp_path / "child.pid").exists() and (tmp_path / "child.pid").read_text():
                break
            time.sleep(0.1)
        child = psutil.Process(int((tmp_path / "child.pid").read_text()))
        guard = next(p for p in psutil.Process(owner.pid).children() if "flows.guard" in " ".join(p.cmdline()))
        time.sleep(1.5)  # the guard looks at its owner's children every 0.5 s
        owner.kill()
        owner.wait(timeout=10)
        _, alive = psutil.wait_procs([child, guard], timeout=15)
        assert not alive, [p.cmdline() for p in alive]  # the child was stopped, the guard exited
    finally:
        import os

        try:
            os.killpg(owner.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if child is not None and child.is_running():
            child.kill()


def test_runs_url_points_at_the_runs_table(monkeypatch):
    monkeypatch.delenv(tr.UI_URL_ENV, raising=False)
    assert tr.runs_url("sqlite:////x/mlflow.db", "3") == "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert tr.runs_url("http://mlflow:5000/", "3", "abc") == (
        "http://mlflow:5000/#/experiments/3/runs/abc?workflowType=machine_learning")
    monkeypatch.setenv(tr.UI_URL_ENV, "http://localhost:5000")
    assert tr.runs_url("http://mlflow:5000", "3").startswith("http://localhost:5000/#/experiments/3/runs")


@pytest.mark.parametrize("ref, expected", [("0123abcd", "0123abcd"), ("search/k1", "search/k1"), ("/elsewhere/search/k", None)])
def test_from_run_param_is_portable(tmp_path, ref, expected, monkeypatch):
    from flows.cache import ArtifactStore
    from flows.steps import _portable_ref

    monkeypatch.chdir(tmp_path)
    store = ArtifactStore(tmp_path)
    assert _portable_ref(ref if not ref.startswith("search") else str(tmp_path / ref), store) == expected
