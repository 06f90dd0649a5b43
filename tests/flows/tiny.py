"""Tiny pipeline parameters shared by the flow tests (seconds per stage on 2 cores)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

TINY_SYNTH: dict[str, Any] = {
    "n_train": 3000, "n_valid": 600, "n_test": 600, "cardinalities": [5, 6, 7, 8, 30, 40], "n_continuous": 1,
    "memorize_pairs": [[0, 1], [2, 3]], "factorize_pairs": [[4, 5]],
}
TINY_OVERRIDES = ["model.embed_dim=4", "model.cross_embed_dim=2", "model.mlp_dims=16", "train.epochs=2",
                  "train.batch_size=256", "train.eval_batch_size=1024"]
#: The tune stage's budget in the tests that turn it on (tiny_params leaves it off).
TINY_TUNE: dict[str, Any] = {"trials": 2, "max_epochs": 1, "startup_trials": 1}
# A thread-based LocalCluster starts in a fraction of the time of a process-based one.
TINY_PREPROCESS = {"processes": False, "n_workers": 1, "threads_per_worker": 2}


def tiny_params(root: str, **kw: Any) -> dict[str, Any]:
    p = dict(dataset="synthetic", synth=dict(TINY_SYNTH), overrides=list(TINY_OVERRIDES), baselines=["lr", "fm"],
             artifact_root=str(root), preprocess=dict(TINY_PREPROCESS), tune_mode="off")
    p.update(kw)
    return p


@contextmanager
def flow_env(root: Path, work: bool = False) -> Iterator[dict[str, Any]]:
    """A flow test module's environment under ``root``: its own MLflow SQLite store, code left out
    of the stage keys (other people edit the code while these tests run: keys must not change
    under our feet; code fingerprints are tested in test_cache.py) and, with ``work``, its own
    work folder."""
    import pytest

    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        if work:
            mp.setenv("OPTINTER_WORK_DIR", str(root / "work"))
        mp.setenv("OPTINTER_CACHE_IGNORE_CODE", "1")
        yield {"root": root, "artifacts": root / "artifacts", "uri": uri}
