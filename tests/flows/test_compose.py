"""docker-compose.yml wiring, checked without a Docker engine: services, images, ports, environment."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from flows.cache import WORK_DIR_ENV
from flows.spec import ARTIFACT_ROOT_ENV
from optinter.tracking import OFFLINE_ENV

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def _published(service: dict, container_port: int) -> bool:
    return any(str(p).split(":")[-1] == str(container_port) for p in service.get("ports", []))


def _volume_of(service: dict, path: str) -> str | None:
    for v in service.get("volumes", []):
        src, dst = str(v).split(":")[:2]
        if path == dst or path.startswith(dst.rstrip("/") + "/"):
            return src
    return None


def test_services_and_images(compose):
    s = compose["services"]
    assert {"postgres", "prefect-server", "prefect-worker", "mlflow", "dask-scheduler", "dask-worker-1",
            "dask-worker-2"} <= set(s)
    assert s["postgres"]["image"].startswith("postgres:")
    assert s["prefect-server"]["image"].startswith("prefecthq/prefect:3")
    # everything that imports the project (or needs psycopg2) runs the image of the project's Dockerfile
    for name in ("prefect-worker", "mlflow", "dask-scheduler", "dask-worker-1", "dask-worker-2"):
        assert s[name]["image"] == s["prefect-worker"]["image"], name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "psycopg2-binary" in dockerfile and "pip install ." in dockerfile
    for d in ("preprocess", "optinter", "flows"):
        assert f"COPY {d} " in dockerfile


def test_postgres_backends(compose):
    s = compose["services"]
    init = (ROOT / "docker" / "postgres-init.sql").read_text()
    prefect_db = urlparse(s["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"])
    mlflow_db = urlparse(_arg(s["mlflow"]["command"], "--backend-store-uri"))
    assert prefect_db.scheme == "postgresql+asyncpg" and mlflow_db.scheme == "postgresql+psycopg2"
    for url in (prefect_db, mlflow_db):
        assert url.hostname == "postgres" and url.port == 5432
        db = url.path.lstrip("/")
        assert f"CREATE DATABASE {db} OWNER {url.username};" in init
        assert f"CREATE USER {url.username} WITH PASSWORD '{url.password}';" in init
    mount = _volume_of(s["postgres"], "/docker-entrypoint-initdb.d/10-optinter.sql")
    assert mount == "./docker/postgres-init.sql"
    for name in ("prefect-server", "mlflow"):
        assert s[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_worker_environment_points_at_the_services(compose):
    s = compose["services"]
    env = s["prefect-worker"]["environment"]
    assert s["prefect-worker"]["command"] == ["optinter", "serve"]
    api = urlparse(env["PREFECT_API_URL"])
    server_cmd = s["prefect-server"]["command"]
    assert api.hostname == "prefect-server" and api.port == int(_arg(server_cmd, "--port")) and api.path == "/api"
    assert _published(s["prefect-server"], api.port)
    ml = urlparse(env["MLFLOW_TRACKING_URI"])
    assert ml.hostname == "mlflow" and ml.port == int(_arg(s["mlflow"]["command"], "--port"))
    assert _published(s["mlflow"], ml.port)
    dask = urlparse(env["DASK_SCHEDULER_ADDRESS"])
    assert dask.scheme == "tcp" and dask.hostname == "dask-scheduler"
    assert dask.port == int(_arg(s["dask-scheduler"]["command"], "--port"))
    for w in ("dask-worker-1", "dask-worker-2"):
        assert s[w]["command"][:3] == ["dask", "worker", env["DASK_SCHEDULER_ADDRESS"]]
        # one training job per worker at a time (optinter.cluster asks for one `train` unit per job)
        from optinter.cluster import TRAIN_RESOURCE

        assert _arg(s[w]["command"], "--resources") == f"{TRAIN_RESOURCE}=1"
        assert int(_arg(s[w]["command"], "--nthreads")) >= 1
    # the variables the code reads, with the offline switches everywhere Python runs
    assert ARTIFACT_ROOT_ENV in env and WORK_DIR_ENV in env
    for name in ("prefect-worker", "prefect-server", "mlflow", "dask-worker-1", "dask-worker-2"):
        e = s[name].get("environment", {})
        for k, v in OFFLINE_ENV.items():
            assert e.get(k) == v, (name, k)


def test_artifacts_on_a_shared_volume(compose):
    s = compose["services"]
    env = s["prefect-worker"]["environment"]
    root = env[ARTIFACT_ROOT_ENV]
    vol = _volume_of(s["prefect-worker"], root)
    assert vol is not None and vol in compose["volumes"]
    # the Dask workers write the preprocessing output there, MLflow keeps its artifacts there
    for name in ("dask-worker-1", "dask-worker-2"):
        assert _volume_of(s[name], root) == vol, name
    assert _volume_of(s["mlflow"], _arg(s["mlflow"]["command"], "--artifacts-destination")) == vol
    assert _volume_of(s["prefect-worker"], env[WORK_DIR_ENV]) == vol
    assert _volume_of(s["prefect-worker"], env["PREFECT_HOME"]) == vol


def test_one_image_built_once(compose):
    s = compose["services"]
    builders = [n for n, svc in s.items() if "build" in svc]
    assert builders == ["prefect-worker"] and s["prefect-worker"]["build"] in (".", {"context": "."})
    image = s["prefect-worker"]["image"]
    for name, svc in s.items():
        if svc.get("image") == image and name != "prefect-worker":
            assert svc.get("pull_policy") == "never", name  # the local build, never a registry's


def test_mlflow_allows_the_host_names_its_clients_send(compose):
    """MLflow 3 rejects a Host header it does not allow (403 "Invalid Host header")."""
    s = compose["services"]
    allowed = _arg(s["mlflow"]["command"], "--allowed-hosts").split(",")
    ml = urlparse(s["prefect-worker"]["environment"]["MLFLOW_TRACKING_URI"])
    assert f"{ml.hostname}:{ml.port}" in allowed  # the worker's flow runs
    assert "localhost:*" in allowed  # a browser on the host (published port)
    ui = urlparse(s["prefect-worker"]["environment"]["OPTINTER_MLFLOW_UI_URL"])
    assert ui.hostname == "localhost" and _published(s["mlflow"], ui.port)


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    """Whether a path of the build context is excluded (Docker's rules for the patterns used here:
    a pattern matches the path or one of its parent folders, ``**/`` any depth, ``!`` re-includes)."""
    parts = rel.split("/")
    out = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        cands = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if pat.startswith("**/"):
            cands += ["/".join(parts[j:i]) for i in range(1, len(parts) + 1) for j in range(1, i)]
            pat = pat[3:]
        if any(fnmatch.fnmatchcase(c, pat) for c in cands):
            out = not neg
    return out


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for rel in (".venv/bin/python", "artifacts/search/k/architecture.json", "mlflow.db", "mlartifacts/1/x/a.json",
                ".optinter/prefect/prefect.db", ".git/HEAD", "optinter/__pycache__/train.cpython-311.pyc",
                "mlruns/0/meta.yaml", "tests/flows/test_compose.py"):
        assert _dockerignored(rel, patterns), rel
    # everything the Dockerfile copies is in the context
    copied = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            copied += line.split()[1:-1]
    assert {"pyproject.toml", "README.md", "preprocess", "optinter", "flows"} <= set(copied)
    for src in copied:
        files = [src] if (ROOT / src).is_file() else [p.relative_to(ROOT).as_posix()
                                                     for p in (ROOT / src).rglob("*.py")]
        assert files and not any(_dockerignored(f, patterns) for f in files), src


def test_prefect_server_streams_run_logs_to_watch(compose):
    """``prefect deployment run … --watch`` prints a run's logs only when the server streams them."""
    env = compose["services"]["prefect-server"]["environment"]
    assert env["PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED"] == "true"
    assert env["PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED"] == "true"
