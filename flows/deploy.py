"""Deployments of the ``optinter`` flow and the process that serves them (``optinter serve``).

One process registers every deployment with the Prefect server and runs their flow runs as
subprocesses (Prefect's ``serve``): no work pool or worker to set up. Deployments:

==========================  ===============================================================
``optinter/full-pipeline``  preprocess → search → re-train → evaluate → analyze, + baselines
``optinter/preprocess``     preprocessing only (synthetic data first when needed)
``optinter/search``         preprocess (reused when cached) + search
``optinter/tune``           + tuning of the re-train on the validation split (``tune_mode=on``)
``optinter/retrain``        + re-train of the searched architecture (``from_run`` reuses a search)
``optinter/baselines``      preprocess + the baseline models
``optinter/analyze``        preprocess + search + mutual-information analysis and report
``optinter/compare``        preprocess + the paper's comparison tables
``optinter/score``          raw files + a model (run id or ``models:/NAME/VERSION``) → scores
==========================  ===============================================================

Every deployment takes the flow's parameters (``prefect deployment run optinter/retrain
--param from_run=<search run id> --param 'overrides=["retrain:train.lr_o=1e-4"]'``); they differ
only in their default ``stages``.
"""

from __future__ import annotations

from typing import Any

#: deployment name → (default ``stages`` parameter, description)
DEPLOYMENTS: dict[str, tuple[list[str] | None, str]] = {
    "full-pipeline": (None, "The whole pipeline: preprocess, search, re-train, baselines, evaluate, analyze."),
    "preprocess": (["preprocess"], "Raw or pre-split files → encoded parquet + feature_map.json (Dask)."),
    "search": (["search"], "OptInter search (Algorithm 1) → architecture.json."),
    "tune": (["tune"], "Tune the re-train's settings on the validation split (Optuna) → tuned.yaml."),
    "retrain": (["retrain"], "Re-train a searched architecture (from_run: an earlier search run id or folder)."),
    "baselines": (["baselines"], "Train the baseline models on the encoded data."),
    "analyze": (["analyze"], "Mutual information of every pair vs the selected method; HTML report."),
    "compare": (["compare"], "The paper's comparison tables and figures (run_compare)."),
    "score": (["score"], "Score raw files with a trained model: score={'raw': [files], 'model': run id or "
                         "models:/NAME/VERSION} → scores.parquet under the artifact root."),
}


def build_deployments(names: list[str] | None = None, parameters: dict[str, Any] | None = None,
                      tags: list[str] | None = None) -> list[Any]:
    """``RunnerDeployment`` objects of the ``optinter`` flow (all of :data:`DEPLOYMENTS` by default)."""
    from prefect.deployments.runner import EntrypointType

    from .pipeline import optinter_flow

    out = []
    for name in names or list(DEPLOYMENTS):
        if name not in DEPLOYMENTS:
            raise ValueError(f"unknown deployment {name!r}; known: {', '.join(DEPLOYMENTS)}")
        stages, description = DEPLOYMENTS[name]
        params = dict(parameters or {})
        if stages is not None:
            params["stages"] = stages
        out.append(optinter_flow.to_deployment(
            name=name, parameters=params, description=description, tags=["optinter", *(tags or [])],
            entrypoint_type=EntrypointType.MODULE_PATH))
    return out


def check_server(api_url: str | None, timeout: float = 5.0) -> str:
    """The Prefect API URL when a server answers there; else a ``RuntimeError`` naming URL and setting."""
    if not api_url:
        raise RuntimeError(
            "no Prefect server configured: PREFECT_API_URL is not set. Start one with "
            "`prefect server start` and `export PREFECT_API_URL=http://127.0.0.1:4200/api`, or run the "
            "pipeline in-process with `optinter run`.")
    import httpx

    url = api_url.rstrip("/")
    try:
        r = httpx.get(f"{url}/health", timeout=timeout)
        r.raise_for_status()
    except Exception as e:  # noqa: BLE001 — any failure means "not reachable"
        raise RuntimeError(
            f"Prefect server not reachable at {url} (setting PREFECT_API_URL): {type(e).__name__}: {e}. "
            f"Start it with `prefect server start` or point PREFECT_API_URL at a running server.") from None
    return url


def serve_message(names: list[str], api_url: str) -> str:
    """What ``optinter serve`` prints once every deployment is registered, before it serves them."""
    full = [f"optinter/{n}" for n in names]
    example = full[0] if "optinter/full-pipeline" not in full else "optinter/full-pipeline"
    return (f"optinter serve: registered {len(full)} deployments with {api_url}: {', '.join(full)}; serving their runs "
            f"(Ctrl-C stops). Start one with: prefect deployment run {example} --param dataset=synthetic --watch")


async def register_all(runner: Any, deployments: list[Any]) -> list[Any]:
    """Register every deployment with the server, concurrently; their ids. Nothing is served yet."""
    import asyncio

    return list(await asyncio.gather(*(runner.add_deployment(d) for d in deployments)))


def serve_deployments(names: list[str] | None = None, parameters: dict[str, Any] | None = None,
                      limit: int | None = None) -> None:
    """Register all the deployments with the server at ``PREFECT_API_URL``, then serve them until
    interrupted (a flow run started right after the message finds every deployment)."""
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner
    from prefect.settings import PREFECT_API_URL

    api_url = check_server(PREFECT_API_URL.value())
    deployments = build_deployments(names, parameters)

    async def _serve() -> None:
        runner = Runner(name="optinter", pause_on_shutdown=True, limit=limit)
        await register_all(runner, deployments)
        # (print, not logging: Prefect routes the project's loggers to the API, which needs a flow run)
        print(serve_message([d.name for d in deployments], api_url), flush=True)
        await runner.start()

    try:
        asyncio.run(_serve())
    except (KeyboardInterrupt, TerminationSignal):
        print("optinter serve: stopped", flush=True)
