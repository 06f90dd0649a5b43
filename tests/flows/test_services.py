"""The compose setup as plain local processes: Prefect server and MLflow server started with the
commands of ``docker-compose.yml``, Dask scheduler + worker, ``optinter serve``, reached by the compose
host names (a Host-keeping proxy); then ``prefect deployment run … --watch`` end to end (a successful
pipeline and a failing stage), checked over MLflow's REST API. Every process is started in its own
session and stopped at the end.
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
ROOT = Path(__file__).resolve().parents[2]
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


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

    def text(self, name: str) -> str:
        return (self.logdir / f"{name}.log").read_text(errors="replace")

    def tail(self, name: str, n: int = 40) -> str:
        return f"--- {name} ---\n" + "\n".join(self.text(name).splitlines()[-n:])

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


def _compose() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _compose_command(service: dict, replace: dict[str, str]) -> list[str]:
    """A compose service's command with the values of some of its flags replaced (``--port``: a free
    one, ``--host``: 127.0.0.1, the Postgres URI: SQLite...); every other flag as compose has it."""
    cmd = list(service["command"])
    for flag, value in replace.items():
        assert flag in cmd, f"{flag} not in {cmd}"
        cmd[cmd.index(flag) + 1] = value
    return [str(BIN / cmd[0]), *cmd[1:]]


def _authority(url: str) -> str:
    from urllib.parse import urlparse

    u = urlparse(url)
    return f"{u.hostname}:{u.port}"


def test_deployment_run_against_local_services(tmp_path):
    """The compose services as local processes, reached by their compose host names: every HTTP
    request of the clients (``prefect`` CLI, ``optinter serve`` and its flow runs) goes through a
    proxy that keeps the ``Host`` header (``mlflow:5000``, ``prefect-server:4200``), as the compose
    network does; so MLflow's Host-header check sees what it sees there."""
    import httpx
    from hostproxy import HostProxy

    compose = _compose()["services"]
    worker_env = compose["prefect-worker"]["environment"]
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "MLFLOW_", "DASK_", "OPTINTER_")) and k.lower() not in PROXY_VARS}
    base.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
                 "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"})
    p_port, m_port, d_port = _free_port(), _free_port(), _free_port()
    api_local = f"http://127.0.0.1:{p_port}/api"
    mlflow_local = f"http://127.0.0.1:{m_port}"
    dask_addr = f"tcp://127.0.0.1:{d_port}"  # Dask speaks TCP, not HTTP: no host name to check there
    procs = Procs(tmp_path)
    proxy = HostProxy({_authority(worker_env["PREFECT_API_URL"]): p_port,
                       _authority(worker_env["MLFLOW_TRACKING_URI"]): m_port})
    try:
        proxy.__enter__()
        server_env = {k: str(v) for k, v in compose["prefect-server"]["environment"].items()
                      if k not in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_UI_API_URL")}  # SQLite here
        procs.start("prefect-server", _compose_command(compose["prefect-server"], {"--host": "127.0.0.1",
                                                                                   "--port": str(p_port)}),
                    {**base, **server_env, "PREFECT_HOME": str(tmp_path / "server-home")}, tmp_path)
        procs.start("mlflow", _compose_command(compose["mlflow"], {
            "--backend-store-uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination": str(tmp_path / "mlartifacts"), "--host": "127.0.0.1",
            "--port": str(m_port), "--workers": "1"}), base, tmp_path)
        procs.start("dask-scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(d_port),
                                       "--no-dashboard"], base, tmp_path)
        # the compose URLs, through the proxy; nothing else of the environment points at 127.0.0.1
        via_proxy = {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url, "NO_PROXY": "", "no_proxy": ""}
        # the compose worker's command (one training job at a time: --resources train=1); the training jobs
        # it runs log to MLflow by its compose host name, as the flow runs do
        worker_cmd = [dask_addr if a == worker_env["DASK_SCHEDULER_ADDRESS"] else a
                      for a in _compose_command(compose["dask-worker-1"], {})]
        procs.start("dask-worker", worker_cmd + ["--no-dashboard"], {**base, **via_proxy}, tmp_path)
        procs.wait_until("the Prefect server", lambda: _get(f"{api_local}/health") == 200, 90)
        client_env = {**base, **via_proxy, "PREFECT_API_URL": worker_env["PREFECT_API_URL"],
                      "PREFECT_HOME": str(tmp_path / "client-home"), "COLUMNS": "400"}  # rich wraps at 80
        serve_env = {**client_env, "MLFLOW_TRACKING_URI": worker_env["MLFLOW_TRACKING_URI"],
                     "OPTINTER_MLFLOW_UI_URL": worker_env["OPTINTER_MLFLOW_UI_URL"],
                     "DASK_SCHEDULER_ADDRESS": dask_addr,
                     "OPTINTER_ARTIFACT_ROOT": str(tmp_path / "artifacts"), "OPTINTER_WORK_DIR": str(tmp_path / "work"),
                     "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
        serve = procs.start("optinter-serve", [str(BIN / "optinter"), "serve"], serve_env, tmp_path)
        # every deployment is registered before serving starts: all there when serve says so
        from flows.deploy import DEPLOYMENTS

        procs.wait_until("the deployments", lambda: f"registered {len(DEPLOYMENTS)} deployments"
                         in procs.text("optinter-serve"), 120)
        for name in DEPLOYMENTS:
            assert _get(f"{api_local}/deployments/name/optinter/{name}") == 200, name
        procs.wait_until("the MLflow server", lambda: _get(f"{mlflow_local}/health") == 200, 90)
        # MLflow answers the compose host name (its --allowed-hosts), and does check the header
        probe = f"{mlflow_local}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
        assert httpx.get(probe, headers={"Host": "mlflow:5000"}, timeout=10).status_code == 200
        assert httpx.get(probe, headers={"Host": "elsewhere:5000"}, timeout=10).status_code == 403

        def deployment_run(name: str, params: dict) -> tuple[int, str]:
            """``prefect deployment run optinter/NAME … --watch``: exit code and output (kept in a file)."""
            run = subprocess.run(
                [str(BIN / "prefect"), "deployment", "run", f"optinter/{name}", "--param", "dataset=synthetic",
                 "--params", json.dumps(params), "--watch", "--watch-timeout", "150"],
                env=client_env, cwd=tmp_path, capture_output=True, text=True, timeout=170)
            (tmp_path / f"watch-{name}.txt").write_text(run.stdout + run.stderr)
            return run.returncode, run.stdout + run.stderr

        params = {"synth": TINY_SYNTH, "overrides": TINY_OVERRIDES, "baselines": ["lr", "fm"], "tune_mode": "off"}
        rc, watched = deployment_run("full-pipeline", params)
        assert rc == 0, watched[-3000:] + procs.tail("optinter-serve", 80)
        assert "Completed" in watched
        # --watch shows the flow's last log lines: the results table and the MLflow runs page
        assert "| model " in watched and "| optinter " in watched and "| lr " in watched, watched[-3000:]
        assert "http://localhost:5000/#/experiments/" in watched and "/runs?workflowType=machine_learning" in watched
        assert proxy.hosts["mlflow:5000"] > 0 and proxy.hosts["prefect-server:4200"] > 0

        # MLflow, over its REST API
        exp = httpx.get(f"{mlflow_local}/api/2.0/mlflow/experiments/get-by-name",
                        params={"experiment_name": "optinter"}, timeout=10).json()["experiment"]
        runs = httpx.post(f"{mlflow_local}/api/2.0/mlflow/runs/search",
                          json={"experiment_ids": [exp["experiment_id"]], "max_results": 100}, timeout=10).json()["runs"]

        def tags(r):
            return {t["key"]: t["value"] for t in r["data"].get("tags", [])}

        def metrics(r):
            return {m["key"]: m["value"] for m in r["data"].get("metrics", [])}

        parents = [r for r in runs if tags(r).get("stage") == "pipeline"]
        assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
        parent_id = parents[0]["info"]["run_id"]
        assert tags(parents[0])["prefect.flow_run_id"]
        assert parent_id in watched  # the link to this very run
        kids = {tags(r)["optinter.step"]: r for r in runs if tags(r).get("mlflow.parentRunId") == parent_id}
        assert set(kids) == {"synth", "preprocess", "search", "retrain:optinter", "train:lr", "train:fm", "evaluate",
                             "analyze"}
        for name, r in kids.items():
            assert r["info"]["status"] == "FINISHED", name
            assert tags(r)["cached"] == "false"
        m = metrics(kids["retrain:optinter"])
        assert 0.0 < m["test_auc"] < 1.0 and m["params"] > 0
        assert m["n_memorize"] + m["n_factorize"] + m["n_naive"] == 15
        assert metrics(parents[0])["test_auc"] == m["test_auc"]
        # the preprocessing ran on the Dask scheduler we started
        assert "Receive client connection" in (tmp_path / "dask-scheduler.log").read_text()
        serve_log = procs.text("optinter-serve")
        assert f"connecting to Dask scheduler {dask_addr}" in serve_log  # library progress reaches the run log
        # the baselines trained at once on the compose worker (one `train` unit each), logging from there
        assert f"training jobs: connecting to Dask scheduler {dask_addr}" in serve_log
        assert "train done: fm" in serve_log and "train done: lr" in serve_log  # forwarded from the worker
        for name in ("train:lr", "train:fm"):
            assert metrics(kids[name])["valid_auc"] > 0.5
        # artifacts were uploaded through the MLflow server to its artifact destination
        listed = httpx.get(f"{mlflow_local}/api/2.0/mlflow/artifacts/list",
                           params={"run_id": kids["search"]["info"]["run_id"]}, timeout=10).json()
        assert "architecture.json" in {f["path"] for f in listed.get("files", [])}
        assert list((tmp_path / "mlartifacts").rglob("architecture.json"))

        # a failing stage: --watch ends with the error, its cause and the MLflow run
        rc, watched = deployment_run("search", {**params, "overrides": TINY_OVERRIDES + ["search:train.device=bogus"]})
        assert rc != 0 and "Failed" in watched, watched[-3000:]
        assert "optinter failed: StageFailed: stage search failed: RuntimeError:" in watched, watched[-3000:]
        assert "bogus" in watched and "MLflow parent run " in watched and "http://localhost:5000/#/experiments/" in watched
    finally:
        procs.stop()
        proxy.__exit__()
    assert serve.poll() is not None
    for name, p in procs.procs:
        assert p.poll() is not None, f"{name} still running"
