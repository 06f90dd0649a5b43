"""The package's public API: the documented names resolve to the functions they name, and
``import optinter`` stays light (no torch, MLflow or Prefect until a name is used)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_is_light():
    code = ("import sys, optinter; heavy = [m for m in ('torch', 'mlflow', 'prefect', 'pandas') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_public_names():
    import optinter
    from optinter import analysis, config, experiments, predict, scoring, stages, tune
    from preprocess.feature_map import FeatureMap

    assert optinter.load is predict.load
    assert optinter.run_search is stages.run_search and optinter.run_retrain is stages.run_retrain
    assert optinter.run_train is stages.run_train and optinter.run_tune is tune.run_tune
    assert optinter.run_analyze is analysis.run_analyze and optinter.run_compare is experiments.run_compare
    assert optinter.run_score is scoring.run_score
    assert optinter.FeatureMap is FeatureMap
    assert optinter.RunConfig is config.RunConfig and optinter.default_config is config.default_config
    assert isinstance(optinter.__version__, str) and optinter.__version__
    assert set(optinter.__all__) <= set(dir(optinter))
    assert (ROOT / "optinter" / "py.typed").exists()


def test_public_api_adds_nothing_to_stage_fingerprints():
    """The names optinter/__init__.py exports are resolved lazily: a stage's code fingerprint
    still covers only what the stage runs (not the scoring or compare modules)."""
    from flows.cache import module_closure

    mods = set(module_closure(["optinter.stages"]))
    assert "optinter.stages" in mods
    assert not mods & {"optinter.predict", "optinter.scoring", "optinter.pyfunc", "optinter.experiments",
                       "optinter.tune", "optinter.analysis"}
