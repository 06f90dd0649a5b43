"""docker-compose.yml wiring, checked without a Docker engine: services, images, ports, environment."""

from __future__ import annotations

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
    # everything that imports the project (or needs psycopg2) is built from the project's Dockerfile
    for name in ("prefect-worker", "mlflow", "dask-scheduler", "dask-worker-1", "dask-worker-2"):
        assert s[name]["build"] in (".", {"context": "."}), name
        assert s[name]["image"] == s["prefect-worker"]["image"]
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
