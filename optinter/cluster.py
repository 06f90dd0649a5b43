"""Independent training jobs on a Dask cluster: baselines, ``compare`` jobs, tuning trials.

A :class:`JobPool` runs job *functions* (``optinter.stages.run_train`` and the like: plain,
module-level functions of paths, configs and a tracker) either here, one after the other, or on
a ``distributed`` cluster, several at once:

* **where** (:class:`JobsConfig`): ``scheduler`` (else ``$DASK_SCHEDULER_ADDRESS``) is an existing
  cluster — the compose setup's, or any other whose workers can import ``optinter`` and see the data,
  artifact and MLflow paths (a shared filesystem); without one, ``workers`` > 1 starts a
  :class:`distributed.LocalCluster` of that many single-threaded worker processes, lazily, on the
  first job that needs it, and ``workers = 0`` (*auto*) starts one of ``cores // threads`` workers
  when at least two fit and a round of jobs has at least two a worker (else the jobs run here, one
  after the other, with every core: :meth:`JobPool.use_cluster`);
* **how much each job gets**: a *thread budget* — torch's and Arrow's CPU threads are set to
  ``threads`` for the job (default: the cores split evenly between the LocalCluster's workers, or
  the worker's own thread count on an external cluster) and restored afterwards; a job runs alone
  in its worker process (LocalCluster workers run one task at a time; on an external cluster a job
  asks for one unit of the ``train`` resource when workers declare it, e.g. ``dask worker
  --resources train=1``), so budgets add up to the cores. Where workers have GPUs (a LocalCluster on
  a CUDA machine: ``cores // 2`` workers by default, worker *i* on GPU *i* mod the GPU count; an
  external cluster's ``--resources GPU=1``) every job asks for one ``GPU`` unit and runs on its
  worker's device;
* **what stays here**: the caller's bookkeeping — stage-cache lookups, the atomic stage folders,
  MLflow child runs — runs in this process (one thread per job in flight, :meth:`JobPool.run_jobs`);
  only the job function itself travels to a worker, with its tracker (an MLflow run id and tracking
  URI), so the MLflow runs, the stage keys and the cached folders are the same wherever a job ran.

Training is thread-count invariant (:mod:`optinter.layers.norm`), so a job gives bit-identical
metrics here with every core and on a worker with one. Worker log records of ``optinter`` are
forwarded to this process's loggers (epoch progress reaches the Prefect run log).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

WORKERS_ENV = "OPTINTER_JOB_WORKERS"
THREADS_ENV = "OPTINTER_JOB_THREADS"
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
#: The Dask resource a training job asks for, when the cluster's workers declare it.
TRAIN_RESOURCE = "train"
GPU_RESOURCE = "GPU"


@dataclass
class JobsConfig:
    """Where independent training jobs run (see the module docstring)."""

    workers: int = 0  # jobs at once: 0 = auto (a LocalCluster when >= 2 fit the cores: use_cluster), 1 = here
    threads: int = 0  # CPU threads per job (0 = the cores split between the workers)
    scheduler: str | None = None  # a Dask scheduler address (None = $DASK_SCHEDULER_ADDRESS, else a LocalCluster)

    @classmethod
    def from_env(cls, **given: Any) -> "JobsConfig":
        """The settings ``given`` (None = unset), else ``$OPTINTER_JOB_WORKERS`` / ``$OPTINTER_JOB_THREADS`` /
        ``$DASK_SCHEDULER_ADDRESS``, else the defaults."""
        kw: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        for key, env in (("workers", WORKERS_ENV), ("threads", THREADS_ENV)):
            if key not in kw and os.environ.get(env, "").strip():
                try:
                    kw[key] = int(os.environ[env])
                except ValueError:
                    raise ValueError(f"${env} must be an integer, got {os.environ[env]!r}") from None
        if "scheduler" not in kw and os.environ.get(SCHEDULER_ENV, "").strip():
            kw["scheduler"] = os.environ[SCHEDULER_ENV].strip()
        jc = cls(**kw)
        jc.validate()
        return jc

    def validate(self) -> None:
        if self.workers < 0:
            raise ValueError(f"jobs: workers must be >= 0 (0 = auto), got {self.workers}")
        if self.threads < 0:
            raise ValueError(f"jobs: threads must be >= 0 (0 = the cores split between the workers), got {self.threads}")

    def job_threads(self, gpus: int = 0) -> int:
        """The thread budget the automatic worker count assumes: ``threads``, else 1 (2 on a GPU machine: a
        GPU job's loader needs a staging and a decode thread to keep the device fed)."""
        return self.threads or (2 if gpus else 1)

    def local_workers(self, cores: int | None = None, gpus: int | None = None) -> int:
        """Workers of the LocalCluster this config starts (1 = none: the jobs run here)."""
        if self.workers:
            return self.workers
        cores = cores or os.cpu_count() or 1
        n = cores // self.job_threads(cuda_devices() if gpus is None else gpus)
        return n if n >= 2 else 1

    @property
    def distributed(self) -> bool:
        """Whether jobs leave this process (a scheduler, or a LocalCluster of >= 2 workers)."""
        return bool(self.scheduler) or self.local_workers() > 1


def cuda_devices() -> int:
    """CUDA devices this process sees (0 without torch's CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable CUDA build
        return 0


@contextmanager
def thread_budget(threads: int) -> Iterator[None]:
    """torch's and Arrow's CPU thread pools at ``threads`` (> 0) inside the block, restored after."""
    import pyarrow as pa
    import torch

    before_torch, before_arrow = torch.get_num_threads(), pa.cpu_count()
    if threads > 0:
        torch.set_num_threads(threads)
        pa.set_cpu_count(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before_torch)
        pa.set_cpu_count(before_arrow)


def run_job(fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any], threads: int, gpu: bool,
            log_level: int) -> R:
    """What a worker runs for one job: ``fn(*args, **kwargs)`` with its thread budget (``threads``; 0 =
    the worker's thread count), on its worker's GPU when ``gpu``, logging at ``log_level``."""
    from distributed import get_worker

    worker = get_worker()
    logging.getLogger("optinter").setLevel(log_level)  # records below WARNING reach the forwarding handler
    if gpu:
        import torch

        index = worker.name if isinstance(worker.name, int) else abs(hash(str(worker.name)))
        torch.cuda.set_device(index % max(1, torch.cuda.device_count()))
    with thread_budget(threads or worker.state.nthreads):
        return fn(*args, **kwargs)


class JobPool:
    """Runs job functions here or on the cluster of ``config`` (see the module docstring).

    Use as a context manager (or call :meth:`close`): a LocalCluster it started is shut down there.
    """

    def __init__(self, config: JobsConfig | None = None) -> None:
        self.config = config or JobsConfig.from_env()
        self.config.validate()
        self._client: Any = None
        self._cluster: Any = None
        self._resources: dict[str, float] | None = None
        self._threads = self.config.threads
        self._gpu = False
        self._lock = threading.Lock()
        self._inline = 0  # > 0 inside inline(): call() runs here

    # ---- where ---------------------------------------------------------------------------------------
    @property
    def distributed(self) -> bool:
        """Whether jobs run on a Dask cluster (else here, one after the other)."""
        return self.config.distributed

    def use_cluster(self, n_jobs: int) -> bool:
        """Whether a round of ``n_jobs`` independent jobs goes to the cluster: always with a scheduler or an
        explicit ``workers`` > 1; in *auto* mode when the round has at least two jobs a worker — fewer do not
        pay back the workers' start-up (~8 s each here: imports, the first MLflow connection) and the
        longest job's slow-down on its share of the cores (the quick start's 3 baselines: 100 s on 2 workers
        × 1 thread against ~70 s one after the other on 2 threads)."""
        if not self.distributed or n_jobs < 1:
            return False
        if self.config.scheduler or self.config.workers > 1:
            return True
        return n_jobs >= 2 * self.config.local_workers()

    @contextmanager
    def inline(self) -> Iterator[None]:
        """Inside the block :meth:`call` runs its job here, whatever the pool's cluster."""
        with self._lock:
            self._inline += 1
        try:
            yield
        finally:
            with self._lock:
                self._inline -= 1

    @property
    def slots(self) -> int:
        """How many jobs run at once (1 here; the cluster's job slots once it is connected)."""
        if not self.distributed:
            return 1
        self.client()
        info = self._client.scheduler_info(n_workers=-1)["workers"].values()
        if self._resources:
            name = next(iter(self._resources))
            return max(1, int(sum(w.get("resources", {}).get(name, 0) for w in info)))
        return max(1, sum(int(w.get("nthreads", 1)) for w in info))

    def client(self) -> Any:
        """The ``distributed.Client`` (connected, or its LocalCluster started, on first use)."""
        with self._lock:
            if self._client is None:
                self._connect()
            return self._client

    def _connect(self) -> None:
        from preprocess.cluster import connect_scheduler, start_local_cluster

        cfg = self.config
        if cfg.scheduler:
            log.info("training jobs: connecting to Dask scheduler %s", cfg.scheduler)
            self._client = connect_scheduler(cfg.scheduler)
            workers = self._client.scheduler_info(n_workers=-1)["workers"].values()
            declared = [w.get("resources", {}) for w in workers]
            if declared and all(r.get(GPU_RESOURCE) for r in declared):
                self._resources, self._gpu = {GPU_RESOURCE: 1}, True
            elif declared and all(r.get(TRAIN_RESOURCE) for r in declared):
                self._resources = {TRAIN_RESOURCE: 1}
            else:
                self._resources = None
                log.info("training jobs: the workers declare no %r resource; jobs share their worker threads "
                         "(start workers with --resources %s=1 for one job per worker)", TRAIN_RESOURCE, TRAIN_RESOURCE)
        else:
            gpus = cuda_devices()
            n = cfg.local_workers(gpus=gpus)  # each worker one GPU unit: jobs share the GPUs round-robin
            cores = os.cpu_count() or 1
            self._threads = cfg.threads or max(1, cores // n)
            self._gpu = gpus > 0
            resources = {TRAIN_RESOURCE: 1, **({GPU_RESOURCE: 1} if self._gpu else {})}
            log.info("training jobs: starting a LocalCluster of %d worker(s) x %d thread(s)%s", n, self._threads,
                     f", {gpus} GPU(s)" if gpus else "")
            self._cluster, self._client = start_local_cluster(n, 1, processes=True, resources=resources)
            self._resources = {GPU_RESOURCE: 1} if self._gpu else {TRAIN_RESOURCE: 1}
        workers = self._client.scheduler_info(n_workers=-1)["workers"]
        if not all(str(addr).startswith("inproc://") for addr in workers):
            # worker processes' records to this process's loggers; in-process (thread) workers log here already,
            # and forwarding their records would send each back into the logger it came from
            self._client.forward_logging("optinter", level=logging.INFO)

    # ---- running -------------------------------------------------------------------------------------
    def call(self, fn: Callable[..., R], *args: Any, name: str | None = None, **kwargs: Any) -> R:
        """``fn(*args, **kwargs)``: here, or on a worker (blocking until it is done; an error is raised here).
        ``fn`` must be importable by the workers (a module-level function) and its arguments picklable."""
        if not self.distributed or self._inline:
            return fn(*args, **kwargs)
        client = self.client()
        fut = client.submit(run_job, fn, args, kwargs, self._threads, self._gpu,
                            logging.getLogger("optinter").getEffectiveLevel(), pure=False,
                            resources=self._resources, key=_task_key(name or getattr(fn, "__name__", "job")))
        try:
            return fut.result()
        except BaseException:
            fut.cancel()
            raise

    def run_jobs(self, jobs: Sequence[T], run_one: Callable[[T], R]) -> list[R]:
        """``[run_one(j) for j in jobs]``, in input order: one after the other here unless
        :meth:`use_cluster` says the round goes to the cluster; there, one thread per job slot runs
        ``run_one`` (which ships its job function through :meth:`call`). The first error is raised once
        every started job has ended; jobs not started yet are skipped."""
        if not self.use_cluster(len(jobs)):
            with self.inline():
                return [run_one(j) for j in jobs]
        if len(jobs) < 2:
            return [run_one(j) for j in jobs]
        slots = self.slots
        log.info("%d training jobs on the Dask cluster, %d at once", len(jobs), slots)
        stop = threading.Event()

        def guarded(j: T) -> R:
            if stop.is_set():
                raise _Skipped()
            try:
                return run_one(j)
            except BaseException:
                stop.set()
                raise

        with ThreadPoolExecutor(max_workers=min(len(jobs), slots), thread_name_prefix="optinter-job") as ex:
            futures = [ex.submit(guarded, j) for j in jobs]
        errors = [f.exception() for f in futures]
        real = [e for e in errors if e is not None and not isinstance(e, _Skipped)]
        if real:
            raise real[0]
        return [f.result() for f in futures]

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            if self._cluster is not None:
                self._cluster.close()
            self._client = self._cluster = None

    def __enter__(self) -> "JobPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # a pool travels (inside a Prefect task's context) as its settings only: the client stays here
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]


class _Skipped(Exception):
    """A job not started because an earlier one failed."""


def _task_key(name: str) -> str:
    import uuid

    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:60]
    return f"optinter-job-{safe}-{uuid.uuid4().hex[:8]}"


# ---- command line ---------------------------------------------------------------------------------------
def add_jobs_arguments(parser: Any) -> None:
    """``--workers`` / ``--threads`` / ``--scheduler`` of the commands that run independent training jobs."""
    g = parser.add_argument_group("training jobs on a Dask cluster")
    g.add_argument("--workers", type=int, default=None,
                   help=f"jobs at once: 0 = auto (a LocalCluster when two or more fit the cores and a round has two "
                        f"jobs a worker), 1 = one after the "
                        f"other in this process (default ${WORKERS_ENV}, else 0)")
    g.add_argument("--threads", type=int, default=None,
                   help=f"CPU threads per job (default ${THREADS_ENV}, else the cores split between the workers)")
    g.add_argument("--scheduler", default=None,
                   help=f"a Dask scheduler address to run the jobs on (default ${SCHEDULER_ENV}, else a LocalCluster)")


def jobs_config(args: Any) -> JobsConfig:
    """The :class:`JobsConfig` of :func:`add_jobs_arguments`' options (unset ones from the environment)."""
    return JobsConfig.from_env(workers=args.workers, threads=args.threads, scheduler=args.scheduler)
