"""``optinter serve`` without a reachable Prefect server: a clear message naming URL and setting."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(tmp_path / "home"), **env_extra})
    return subprocess.run([str(BIN / "optinter"), "serve"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)


def test_serve_names_unreachable_url_and_setting(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/api"
    r = _serve({"PREFECT_API_URL": url}, tmp_path)
    assert r.returncode == 2
    assert f"Prefect server not reachable at {url} (setting PREFECT_API_URL)" in r.stderr
    assert "Traceback" not in r.stderr


def test_serve_without_api_url_says_which_setting(tmp_path):
    r = _serve({}, tmp_path)
    assert r.returncode == 2
    assert "PREFECT_API_URL is not set" in r.stderr and "prefect server start" in r.stderr
