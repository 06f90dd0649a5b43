"""OptInter: search memorize / factorize / naive for every feature interaction, then train and score.

The public API (everything else is reachable through the submodules)::

    import optinter

    fm = optinter.FeatureMap.load("data")                      # an encoded dataset's feature map
    cfg = optinter.default_config(fm, "optinter")               # settings derived from the data
    optinter.run_search("data", "out/search", cfg)              # → architecture.json, metrics.json
    optinter.run_retrain("data", "out/search", "out/retrain", cfg)  # → model.pt (+ encoder/), metrics.json
    optinter.run_train("data", "deepfm", "out/deepfm", optinter.default_config(fm, "deepfm"))
    optinter.run_analyze("data", "out/analysis", arch_path="out/search")
    optinter.load("out/retrain").predict(raw_frame)             # click probabilities of raw rows

* :func:`load` — a trained model ready to score raw rows (:func:`optinter.predict.load`: a run
  folder, an MLflow run id or ``models:/NAME/VERSION``);
* the stage functions (plain, Prefect-free; each writes its outputs atomically into ``out_dir``):
  :func:`run_search`, :func:`run_retrain`, :func:`run_train` (:mod:`optinter.stages`),
  :func:`run_tune` (:mod:`optinter.tune`), :func:`run_analyze` (:mod:`optinter.analysis`),
  :func:`run_compare` (:mod:`optinter.experiments`), :func:`run_score` (:mod:`optinter.scoring`);
* :class:`FeatureMap` (:mod:`preprocess.feature_map`), :class:`RunConfig` and
  :func:`default_config` (:mod:`optinter.config`);
* ``__version__``.

Every name is imported when first used (module ``__getattr__``), so ``import optinter`` loads
neither torch nor MLflow nor Prefect. The module names below are joined at run time, never
written out whole (and not imported for type checkers either): the pipeline's stage
fingerprints (``flows/cache.py``) follow every module a package's ``__init__`` imports or names,
and every stage would otherwise depend on all of them (the scoring modules included).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name → (top-level package, module): where it lives.
_EXPORTS: dict[str, tuple[str, str]] = {
    "load": (__name__, "predict"),
    "run_search": (__name__, "stages"),
    "run_retrain": (__name__, "stages"),
    "run_train": (__name__, "stages"),
    "run_tune": (__name__, "tune"),
    "run_analyze": (__name__, "analysis"),
    "run_compare": (__name__, "experiments"),
    "run_score": (__name__, "scoring"),
    "RunConfig": (__name__, "config"),
    "default_config": (__name__, "config"),
    "FeatureMap": ("preprocess", "feature_map"),
}

__all__ = ["__version__", *_EXPORTS]

def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(__name__)
    except PackageNotFoundError:  # a source checkout that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _EXPORTS:
        package, module = _EXPORTS[name]
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
