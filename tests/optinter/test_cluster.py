"""optinter.cluster: where independent training jobs run, their thread budget, errors, logs."""

from __future__ import annotations

import logging
import os

import pytest

from optinter.cluster import GPU_RESOURCE, TRAIN_RESOURCE, JobPool, JobsConfig

import cluster_jobs  # noqa: E402  (tests/optinter is on sys.path: workers import it by name)


# ---- settings ------------------------------------------------------------------------------------------
def test_config_from_env_and_given_values(monkeypatch):
    monkeypatch.setenv("OPTINTER_JOB_WORKERS", "3")
    monkeypatch.setenv("OPTINTER_JOB_THREADS", "2")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://somewhere:8786")
    assert JobsConfig.from_env() == JobsConfig(3, 2, "tcp://somewhere:8786")
    assert JobsConfig.from_env(workers=1, scheduler=None) == JobsConfig(1, 2, "tcp://somewhere:8786")
    monkeypatch.setenv("OPTINTER_JOB_WORKERS", "many")
    with pytest.raises(ValueError, match=r"\$OPTINTER_JOB_WORKERS must be an integer, got 'many'"):
        JobsConfig.from_env()


@pytest.mark.parametrize("kw, match", [({"workers": -1}, "workers must be >= 0"), ({"threads": -2}, "threads must be >= 0")])
def test_bad_settings_name_the_parameter(kw, match):
    with pytest.raises(ValueError, match=match):
        JobsConfig(**kw).validate()


@pytest.mark.parametrize("workers, threads, cores, expected", [
    (0, 0, 2, 2), (0, 1, 2, 2), (0, 2, 2, 1), (0, 0, 1, 1), (0, 4, 16, 4), (3, 0, 1, 3), (1, 0, 64, 1)])
def test_auto_workers_from_the_cores(workers, threads, cores, expected):
    assert JobsConfig(workers, threads).local_workers(cores, gpus=0) == expected


def test_auto_workers_on_a_gpu_machine_leave_two_threads_a_job():
    assert JobsConfig().local_workers(16, gpus=1) == 8 and JobsConfig(threads=4).local_workers(16, gpus=2) == 4


def test_auto_mode_sends_a_round_to_the_cluster_only_with_two_jobs_a_worker(monkeypatch):
    import optinter.cluster as oc

    monkeypatch.setattr(oc.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(oc, "cuda_devices", lambda: 0)
    auto = JobPool(JobsConfig(workers=0))
    assert auto.distributed and not auto.use_cluster(3) and auto.use_cluster(4) and auto.use_cluster(18)
    assert JobPool(JobsConfig(workers=2)).use_cluster(1)  # asked for: always
    assert JobPool(JobsConfig(scheduler="tcp://x:8786")).use_cluster(2)
    assert not JobPool(JobsConfig(workers=1)).use_cluster(100)
    # a round kept here runs every job in this process, even though the pool has a cluster
    out = auto.run_jobs([1, 2, 3], lambda x: auto.call(cluster_jobs.where, x))
    assert {o["pid"] for o in out} == {os.getpid()} and auto._client is None  # no cluster was started
    with auto.inline():
        assert auto.call(cluster_jobs.where, 9)["pid"] == os.getpid()


def test_in_process_pool_runs_jobs_here_in_order():
    pool = JobPool(JobsConfig(workers=1))
    assert not pool.distributed and pool.slots == 1
    out = pool.run_jobs([3, 1, 2], lambda x: pool.call(cluster_jobs.where, x))
    assert [o["x"] for o in out] == [3, 1, 2] and {o["pid"] for o in out} == {os.getpid()}


# ---- a LocalCluster ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_pool():
    with JobPool(JobsConfig(workers=2, threads=1)) as pool:
        yield pool


def test_jobs_run_on_worker_processes_with_their_thread_budget(local_pool, caplog):
    assert local_pool.distributed and local_pool.slots == 2
    with caplog.at_level(logging.INFO, logger="optinter"):
        out = local_pool.run_jobs(list(range(4)), lambda x: local_pool.call(cluster_jobs.where, x, 0.5))
    assert [o["x"] for o in out] == [0, 1, 2, 3]  # input order
    pids = {o["pid"] for o in out}
    assert os.getpid() not in pids and len(pids) == 2  # both workers took jobs
    assert all(o["torch_threads"] == 1 and o["arrow_threads"] == 1 for o in out)
    # worker log records reach this process's loggers (the run log of a flow)
    assert any(r.name == "optinter.tests.cluster" and "ran in pid" in r.getMessage() for r in caplog.records)


def test_a_failed_job_raises_here_with_its_message(local_pool):
    with pytest.raises(ValueError, match="job 7 failed on purpose"):
        local_pool.call(cluster_jobs.fail, 7)
    with pytest.raises(ValueError, match="failed on purpose"):
        local_pool.run_jobs([1, 2, 3], lambda x: local_pool.call(cluster_jobs.fail if x == 1 else cluster_jobs.where, x))
    assert local_pool.call(cluster_jobs.where, 5)["x"] == 5  # the pool still works


def test_close_stops_the_local_cluster():
    pool = JobPool(JobsConfig(workers=2))
    pool.call(cluster_jobs.where, 0)
    cluster = pool._cluster
    assert cluster is not None and cluster.status.name == "running"
    pool.close()
    assert cluster.status.name == "closed" and pool._client is None


# ---- an external cluster: resources ------------------------------------------------------------------------
@pytest.mark.parametrize("resources, expected, gpu", [
    ({GPU_RESOURCE: 1, TRAIN_RESOURCE: 1}, {GPU_RESOURCE: 1}, True),
    ({TRAIN_RESOURCE: 1}, {TRAIN_RESOURCE: 1}, False),
    (None, None, False),
])
def test_jobs_ask_for_the_resources_the_workers_declare(resources, expected, gpu):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=2, processes=False, dashboard_address=None,
                      resources=resources) as cluster:
        with JobPool(JobsConfig(scheduler=cluster.scheduler_address)) as pool:
            assert pool.distributed
            pool.client()
            assert pool._resources == expected and pool._gpu is gpu
            assert pool.slots == (2 if expected else 4)  # a job per resource unit, else per worker thread
            if not gpu:  # (a GPU job would select a CUDA device)
                assert pool.call(cluster_jobs.where, 1)["torch_threads"] == 2  # the worker's thread count


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_on_a_cuda_machine_every_job_gets_a_gpu_unit():
    import torch

    with JobPool(JobsConfig(workers=2)) as pool:
        out = pool.run_jobs([0, 1, 2], lambda _: pool.call(cluster_jobs.on_gpu))
        assert pool._gpu and pool._resources == {GPU_RESOURCE: 1}
    assert all(o["sum"] == 8 and o["where"].startswith("cuda") for o in out)
    assert {o["device"] for o in out} <= set(range(torch.cuda.device_count()))
