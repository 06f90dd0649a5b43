"""The compose setup as plain local processes: Prefect server, MLflow server, Dask scheduler + worker,
``optinter serve``; then ``prefect deployment run optinter/full-pipeline --watch`` end to end, checked
over MLflow's REST API. Every process is started in its own session and stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import TINY_OVERRIDES, TINY_SYNTH

pytestmark = [pytest.mark.services, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> int:
    import httpx

    try:
        return httpx.get(url, timeout=timeout).status_code
    except Exception:  # noqa: BLE001
        return 0


class Procs:
    """Processes started by this test, each in its own session (stopped by process group id)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "w")
        p = subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, p))
        return p

    def wait_until(self, what: str, check, timeout: float) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if check():
                return
            for name, p in self.procs:
                if p.poll() is not None:
                    pytest.fail(f"{name} exited with {p.returncode} while waiting for {what}:\n{self.tail(name)}")
            time.sleep(0.5)
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}:\n" +
                    "\n".join(self.tail(n) for n, _ in self.procs))

    def tail(self, name: str, n: int = 40) -> str:
        lines = (self.logdir / f"{name}.log").read_text(errors="replace").splitlines()
        return f"--- {name} ---\n" + "\n".join(lines[-n:])

    def stop(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 15
        for _, p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=5)


def test_deployment_run_against_local_services(tmp_path):
    import httpx

    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "DASK_", "OPTINTER_"))}
    base.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
                 "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"})
    p_port, m_port, d_port = _free_port(), _free_port(), _free_port()
    api = f"http://127.0.0.1:{p_port}/api"
    mlflow_url = f"http://127.0.0.1:{m_port}"
    dask_addr = f"tcp://127.0.0.1:{d_port}"
    procs = Procs(tmp_path)
    try:
        procs.start("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                       str(p_port)], {**base, "PREFECT_HOME": str(tmp_path / "server-home")}, tmp_path)
        procs.start("mlflow", [str(BIN / "mlflow"), "server", "--backend-store-uri",
                               f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination",
                               str(tmp_path / "mlartifacts"), "--host", "127.0.0.1", "--port", str(m_port),
                               "--workers", "1"], base, tmp_path)
        procs.start("dask-scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(d_port),
                                       "--no-dashboard"], base, tmp_path)
        procs.start("dask-worker", [str(BIN / "dask"), "worker", dask_addr, "--nworkers", "1", "--nthreads", "2",
                                    "--no-dashboard"], base, tmp_path)
        procs.wait_until("the Prefect server", lambda: _get(f"{api}/health") == 200, 90)
        client_env = {**base, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "client-home")}
        serve_env = {**client_env, "MLFLOW_TRACKING_URI": mlflow_url, "DASK_SCHEDULER_ADDRESS": dask_addr,
                     "OPTINTER_ARTIFACT_ROOT": str(tmp_path / "artifacts"), "OPTINTER_WORK_DIR": str(tmp_path / "work"),
                     "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
        procs.start("optinter-serve", [str(BIN / "optinter"), "serve"], serve_env, tmp_path)
        procs.wait_until("the deployments", lambda: _get(f"{api}/deployments/name/optinter/full-pipeline") == 200
                         and _get(f"{api}/deployments/name/optinter/retrain") == 200, 90)
        procs.wait_until("the MLflow server", lambda: _get(f"{mlflow_url}/health") == 200, 90)

        params = {"synth": TINY_SYNTH, "overrides": TINY_OVERRIDES, "baselines": ["lr"]}
        run = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "optinter/full-pipeline", "--param", "dataset=synthetic",
             "--params", json.dumps(params), "--watch", "--watch-timeout", "150"],
            env=client_env, cwd=tmp_path, capture_output=True, text=True, timeout=170)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + procs.tail("optinter-serve", 80)
        assert "Completed" in run.stdout + run.stderr

        # MLflow, over its REST API
        exp = httpx.get(f"{mlflow_url}/api/2.0/mlflow/experiments/get-by-name",
                        params={"experiment_name": "optinter"}, timeout=10).json()["experiment"]
        runs = httpx.post(f"{mlflow_url}/api/2.0/mlflow/runs/search",
                          json={"experiment_ids": [exp["experiment_id"]], "max_results": 100}, timeout=10).json()["runs"]

        def tags(r):
            return {t["key"]: t["value"] for t in r["data"].get("tags", [])}

        def metrics(r):
            return {m["key"]: m["value"] for m in r["data"].get("metrics", [])}

        parents = [r for r in runs if tags(r).get("stage") == "pipeline"]
        assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
        parent_id = parents[0]["info"]["run_id"]
        assert tags(parents[0])["prefect.flow_run_id"]
        kids = {tags(r)["mlflow.runName"]: r for r in runs if tags(r).get("mlflow.parentRunId") == parent_id}
        assert set(kids) == {"synth", "preprocess", "search", "retrain:optinter", "train:lr", "evaluate", "analyze"}
        for name, r in kids.items():
            assert r["info"]["status"] == "FINISHED", name
            assert tags(r)["cached"] == "false"
        m = metrics(kids["retrain:optinter"])
        assert 0.0 < m["test_auc"] < 1.0 and m["params"] > 0
        assert m["n_memorize"] + m["n_factorize"] + m["n_naive"] == 15
        assert metrics(parents[0])["test_auc"] == m["test_auc"]
        # the preprocessing ran on the Dask scheduler we started
        assert "Receive client connection" in (tmp_path / "dask-scheduler.log").read_text()
        serve_log = (tmp_path / "optinter-serve.log").read_text()
        assert f"connecting to Dask scheduler {dask_addr}" in serve_log  # library progress reaches the run log
        # artifacts were uploaded through the MLflow server to its artifact destination
        listed = httpx.get(f"{mlflow_url}/api/2.0/mlflow/artifacts/list",
                           params={"run_id": kids["search"]["info"]["run_id"]}, timeout=10).json()
        assert "architecture.json" in {f["path"] for f in listed.get("files", [])}
        assert list((tmp_path / "mlartifacts").rglob("architecture.json"))
    finally:
        procs.stop()
    for name, p in procs.procs:
        assert p.poll() is not None, f"{name} still running"
