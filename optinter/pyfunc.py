"""The MLflow model of a trained optinter model: a pyfunc taking raw rows, returning click probabilities.

:func:`save_pyfunc_model` writes an MLflow model folder holding

* the bundle (``model.pt``, ``encoder/`` — feature map and vocabularies as saved —,
  ``metrics.json``, ``architecture.json``) as the artifact ``bundle``;
* the project's code (``optinter/``, ``preprocess/``) as code paths, and pinned requirements;
* a signature over the raw columns the model reads (categorical and multivalent → ``string``,
  continuous → ``double``; the optional parameter ``on_bad_rows``), and an input example built from
  the vocabularies (frequent values).

:func:`log_pyfunc_model` logs it into an MLflow run at ``runs:/<run id>/model`` — what
``mlflow.pyfunc.load_model(uri).predict(raw_df)`` and ``mlflow models serve -m runs:/<run id>/model
--env-manager local`` read (served: ``POST /invocations`` with ``{"dataframe_split": {"columns":
[...], "data": [[...]]}}``). :func:`register_model` adds a version to the Model Registry.
Logging loads the model once (for the signature) and copies the bundle and the code: no requirement
inference, no subprocess.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from .predict import ARCH_FILE, BUNDLE_ARTIFACT, ENCODER_DIR, METRICS_FILE, MODEL_FILE, Predictor, find_bundle
from .tracking import MODEL_ARTIFACT

log = logging.getLogger(__name__)

#: Run tag with the model's URI.
TAG_MODEL_URI = "optinter.model_uri"
#: Distributions the model imports (pinned to the versions installed when it is saved).
REQUIREMENTS = ("torch", "numpy", "pandas", "pyarrow", "scipy", "pyyaml", "mlflow")
_PROJECT = Path(__file__).resolve().parents[1]
_CODE = ("optinter", "preprocess")


_ENTRY = '''"""Entry point of an optinter MLflow model (MLflow "models from code")."""
import mlflow

from optinter.pyfunc import OptInterModel

mlflow.models.set_model(OptInterModel())
'''


class OptInterModel(PythonModel):
    """``predict(raw DataFrame) -> float32 click probabilities`` (one per row)."""

    def load_context(self, context: Any) -> None:
        self.predictor = Predictor.load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """``model_input``: a DataFrame of raw columns (N rows); ``params["on_bad_rows"]``: error | skip.
        Returns float32 click probabilities (N)."""
        return self.predictor.predict(model_input, on_bad_rows=(params or {}).get("on_bad_rows", "error"))


def requirements() -> list[str]:
    """``dist==version`` of :data:`REQUIREMENTS` as installed (local version labels such as +cpu dropped)."""
    out = []
    for dist in REQUIREMENTS:
        try:
            out.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:  # pragma: no cover - every one is a dependency
            pass
    return out


def signature(predictor: Predictor) -> Any:
    """Raw columns in, one float32 probability per row out, ``on_bad_rows`` as a parameter."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    cols = [ColSpec("double" if kind == "continuous" else "string", c) for c, kind in predictor.raw_columns.items()]
    return ModelSignature(inputs=Schema(cols), outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]),
                          params=ParamSchema([ParamSpec("on_bad_rows", "string", "error")]))


def _copy_bundle(bundle: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in (MODEL_FILE, METRICS_FILE, ARCH_FILE):
        if (bundle / name).is_file():
            shutil.copy2(bundle / name, dest / name)
    shutil.copytree(bundle / ENCODER_DIR, dest / ENCODER_DIR)
    return dest


def save_pyfunc_model(bundle_dir: str | Path, path: str | Path, run_id: str | None = None,
                      artifact_path: str | None = None) -> Path | None:
    """Write the MLflow model of the bundle ``bundle_dir`` to ``path`` (which must not exist).

    Returns None (and writes nothing) for a model without vocabularies: it cannot read raw rows.
    """
    from mlflow.models import Model

    bundle = find_bundle(bundle_dir)
    pred = Predictor.load(bundle)
    if pred.encoder is None:
        log.info("%s: no vocabularies, so no MLflow model (it could not read raw rows)", bundle)
        return None
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="optinter-pyfunc-") as tmp:
        staged = _copy_bundle(bundle, Path(tmp) / BUNDLE_ARTIFACT)
        code = [shutil.copytree(_PROJECT / pkg, Path(tmp) / "code" / pkg,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc")) for pkg in _CODE]
        entry = Path(tmp) / "optinter_model.py"  # MLflow's "models from code": no pickled object
        entry.write_text(_ENTRY)
        mlflow.pyfunc.save_model(
            path=str(path), python_model=str(entry), artifacts={BUNDLE_ARTIFACT: str(staged)},
            code_paths=[str(c) for c in code], signature=signature(pred),
            input_example=pd.DataFrame(pred.require_encoder().example(2)), pip_requirements=requirements(),
            mlflow_model=Model(run_id=run_id, artifact_path=artifact_path),
            metadata={"optinter_model": pred.name, "feature_map_hash": pred.feature_map.content_hash})
    return path


def log_pyfunc_model(client: Any, run_id: str, bundle_dir: str | Path, artifact_path: str = MODEL_ARTIFACT) -> str | None:
    """Log the MLflow model of ``bundle_dir`` into run ``run_id`` (through ``client``, an
    ``MlflowClient``); returns its URI ``runs:/<run id>/<artifact_path>`` (None when not logged)."""
    with tempfile.TemporaryDirectory(prefix="optinter-pyfunc-") as tmp:
        saved = save_pyfunc_model(bundle_dir, Path(tmp) / artifact_path, run_id=run_id, artifact_path=artifact_path)
        if saved is None:
            return None
        client.log_artifacts(run_id, str(saved), artifact_path)
    uri = f"runs:/{run_id}/{artifact_path}"
    client.set_tag(run_id, TAG_MODEL_URI, uri)
    log.info("logged the MLflow model %s", uri)
    return uri


def register_model(run_id: str, name: str, tracking_uri: str | None = None,
                   artifact_path: str = MODEL_ARTIFACT) -> str:
    """Register the model logged in run ``run_id`` as a new version of ``name``; returns
    ``models:/<name>/<version>``."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    if not client.list_artifacts(run_id, artifact_path):
        raise ValueError(f"MLflow run {run_id!r} has no logged model at {artifact_path!r} (train it through a "
                         f"pipeline run, or give its folder to `optinter register`)")
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run_id,
                                     tags={"optinter.model": run.data.tags.get("model", "")})
    log.info("registered %s version %s (run %s)", name, mv.version, run_id)
    return f"models:/{name}/{mv.version}"


def register(ref: str | Path, name: str, tracking_uri: str | None = None, experiment: str = "optinter") -> str:
    """Register a trained model as a new version of ``name``; returns ``models:/<name>/<version>``.

    ``ref``: a bundle folder (logged first as the model of a new run named ``register:<name>`` in
    ``experiment``), an MLflow run id (a pipeline run: its re-trained OptInter) or ``runs:/<id>/<path>``.
    A run without a logged model whose output folder is on this machine gets it logged first.
    """
    from mlflow.tracking import MlflowClient

    from . import tracking as tr
    from .predict import _RUN_ID, _model_run

    uri = tracking_uri or tr.default_tracking_uri()
    s = str(ref)
    path = Path(s).expanduser()
    artifact = MODEL_ARTIFACT
    if path.exists():
        bundle = find_bundle(path)
        exp = tr.ensure_experiment(experiment, uri)
        run_id = tr.start_run(exp, f"register:{name}", {tr.TAG_STAGE: "register", tr.TAG_OUTPUT: str(bundle)},
                              tracking_uri=uri)
        t = tr.MlflowTracker(run_id, tracking_uri=uri)
        try:
            if (bundle / METRICS_FILE).is_file():
                t.log_artifact(bundle / METRICS_FILE)
            if log_pyfunc_model(t.client, run_id, bundle) is None:
                raise ValueError(f"{bundle}: the model has no vocabularies, so no MLflow model that reads raw rows")
        except BaseException:
            tr.end_run(run_id, "FAILED", uri)
            raise
        tr.end_run(run_id, "FINISHED", uri)
    elif s.startswith("runs:/"):
        run_id, _, artifact = s[len("runs:/"):].partition("/")
        artifact = artifact.strip("/") or MODEL_ARTIFACT
    elif _RUN_ID.match(s):
        run = _model_run(s, uri)
        run_id = run.info.run_id
        out = run.data.tags.get(tr.TAG_OUTPUT, "")
        client = MlflowClient(tracking_uri=uri)
        if not client.list_artifacts(run_id, MODEL_ARTIFACT) and out and (Path(out) / MODEL_FILE).is_file():
            log_pyfunc_model(client, run_id, out)
    else:
        raise ValueError(f"model {s!r}: not a folder, an MLflow run id or runs:/<run id>/<path>")
    return register_model(run_id, name, uri, artifact)
