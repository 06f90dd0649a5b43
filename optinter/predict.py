"""Score new data with a trained model: ``optinter.load(...)`` → :class:`Predictor` → ``.predict``.

A trained model is a *bundle* folder — the output folder of a re-train / train stage::

    model.pt         weights, model name, RunConfig, architecture, feature-map hash
    metrics.json     the run's figures (test AUC / log loss ...)
    encoder/         feature_map.json + vocab/ (fields.json, minmax.json, cross.json/.npz of the
                     pairs the model reads only): the state of the preprocessing run it was trained on

:func:`resolve_model` finds a bundle from what a user has: the folder itself, an MLflow pyfunc model
folder (``MLmodel`` + ``artifacts/bundle``), an MLflow run id (a training run, or a pipeline run:
its ``retrain`` stage), or a model URI (``runs:/<id>/model``, ``models:/NAME/VERSION``,
``models:/NAME@alias``), downloaded from the tracking server.

:meth:`Predictor.predict` takes raw rows — a pandas DataFrame or Arrow table of raw columns, or raw
files (paths / globs; plain or gzip text in the dataset's format) — or encoded parquet (files or a
folder of ``part-*.parquet``), and returns one click probability per input row (float32, shape N).
Raw rows go through :class:`preprocess.encoder.RawEncoder`, the encoder of the preprocessing jobs:
an unseen category is OOV, a missing value is encoded as in training, extra columns are ignored and
order does not matter; a missing required column or a column of the wrong type is an error naming
it. A row that cannot be read (``on_bad_rows="error"``, the default) is an error naming the file /
line or row and column; with ``on_bad_rows="skip"`` its probability is NaN.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from preprocess.atomic import read_json
from preprocess.encoder import RawEncoder, has_vocabularies
from preprocess.errors import PreprocessError
from preprocess.feature_map import FEATURE_MAP_FILE, FeatureMap

from .architecture import ARCH_FILE, Architecture
from .config import RunConfig
from .data import EncodedColumns
from .models.base import CTRModel
from .registry import build_model
from .stages import ENCODER_DIR, METRICS_FILE, MODEL_FILE
from .train import predict as predict_batches
from .train import resolve_device

log = logging.getLogger(__name__)

#: Key of the bundle among an MLflow pyfunc model's artifacts (``<model>/artifacts/bundle``).
BUNDLE_ARTIFACT = "bundle"
ON_BAD_ROWS = ("error", "skip")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


# ---- finding a bundle ---------------------------------------------------------------------------------
def find_bundle(path: str | Path) -> Path:
    """The bundle folder inside ``path`` (a bundle, or an MLflow pyfunc model folder)."""
    p = Path(path)
    if (p / MODEL_FILE).is_file():
        return p
    if (p / "MLmodel").is_file() and (p / "artifacts" / BUNDLE_ARTIFACT / MODEL_FILE).is_file():
        return p / "artifacts" / BUNDLE_ARTIFACT
    if p.is_dir():
        raise ValueError(f"{p}: not a trained model folder (no {MODEL_FILE}, and not an optinter MLflow model)")
    raise FileNotFoundError(f"{p}: model folder does not exist")


def _model_run(run_id: str, tracking_uri: str | None) -> Any:
    """The MLflow run holding the model of ``run_id`` (a pipeline run → its OptInter re-train run)."""
    from . import tracking as tr

    run = tr.get_run(run_id, tracking_uri)
    if run.data.tags.get(tr.TAG_STAGE) != "pipeline":
        return run
    kids = [c for c in tr.child_runs(run_id, tracking_uri) if c.data.tags.get(tr.TAG_STAGE) == "retrain"]
    if not kids:
        raise ValueError(f"MLflow run {run_id!r} is a pipeline run without a re-train stage: give the run id of "
                         f"one of its train:<model> / retrain:<model> runs")
    return kids[-1]


def resolve_model(ref: str | Path, tracking_uri: str | None = None, dst: str | Path | None = None) -> Path:
    """The local bundle folder of ``ref`` (see the module docstring); downloads go under ``dst``
    (default: a new temporary folder, which the caller may delete after loading)."""
    p = Path(str(ref)).expanduser()
    if p.exists():
        return find_bundle(p)
    s = str(ref)
    from . import tracking as tr

    uri = tracking_uri or tr.default_tracking_uri()
    if _RUN_ID.match(s):
        run = _model_run(s, uri)
        out = run.data.tags.get(tr.TAG_OUTPUT, "")
        if out and (Path(out) / MODEL_FILE).is_file():  # the stage folder is on this machine
            return find_bundle(out)
        s = f"runs:/{run.info.run_id}/model"
    if not s.startswith(("runs:/", "models:/")) and "://" not in s:
        raise ValueError(f"model {s!r}: not a folder, an MLflow run id, or a model URI (runs:/<run id>/model, "
                         f"models:/<name>/<version>)")
    target = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="optinter-model-"))
    target.mkdir(parents=True, exist_ok=True)
    return find_bundle(tr.download_artifacts(s, target, uri))


# ---- the predictor ------------------------------------------------------------------------------------------
@dataclass
class Predictor:
    """A trained model with the encoder of its training data (see the module docstring).

    ``feature_map`` is the training data's contract, ``architecture`` the searched architecture
    (None for models without one), ``metrics`` the run's ``metrics.json``; ``encoder`` is None for
    models trained on encoded data that was not made by ``optinter preprocess`` (then only encoded
    parquet can be scored). ``batch_size`` rows go through the model at a time (default: the run's
    ``train.eval_batch_size``, as in its evaluation).
    """

    model: CTRModel
    feature_map: FeatureMap
    config: RunConfig
    architecture: Architecture | None
    encoder: RawEncoder | None
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 10_000

    @classmethod
    def load(cls, bundle: str | Path, device: str = "cpu", batch_size: int | None = None) -> "Predictor":
        """Load a bundle folder (or an MLflow pyfunc model folder)."""
        bundle = find_bundle(bundle)
        enc_dir = bundle / ENCODER_DIR
        if not (enc_dir / FEATURE_MAP_FILE).is_file():
            raise ValueError(f"{bundle}: no {ENCODER_DIR}/{FEATURE_MAP_FILE}; this model was trained before models "
                             f"carried their encoder: re-run its training stage")
        fmap = FeatureMap.load(enc_dir)
        ck = torch.load(bundle / MODEL_FILE, map_location="cpu", weights_only=True)
        if ck.get("feature_map_hash") and fmap.content_hash and ck["feature_map_hash"] != fmap.content_hash:
            raise ValueError(f"{bundle}: {MODEL_FILE} was trained on another encoding (feature map hash "
                             f"{ck['feature_map_hash'][:12]}, encoder has {fmap.content_hash[:12]})")
        cfg = RunConfig.from_dict(ck["config"])
        arch = Architecture.from_dict(ck["architecture"], where=f"{bundle}/{MODEL_FILE}") \
            if ck.get("architecture") else None
        model = build_model(ck["model"], fmap, cfg.model, arch=arch)
        model.load_state_dict(ck["state_dict"])
        dev = resolve_device(device)
        model.to(dev).eval()
        encoder = RawEncoder.load(enc_dir, pairs=model.required_pairs()) if has_vocabularies(enc_dir) else None
        metrics = read_json(bundle / METRICS_FILE) if (bundle / METRICS_FILE).is_file() else {}
        return cls(model=model, feature_map=fmap, config=cfg, architecture=arch, encoder=encoder, metrics=metrics,
                   path=bundle, device=dev, batch_size=int(batch_size or cfg.train.eval_batch_size))

    @property
    def name(self) -> str:
        """The registry name of the model (``optinter``, ``deepfm``, ...)."""
        return self.model.name

    @property
    def raw_columns(self) -> dict[str, str]:
        """Raw column → kind (``categorical`` / ``multivalent`` / ``continuous``) the model reads."""
        return dict(self.require_encoder().columns)

    def require_encoder(self) -> RawEncoder:
        if self.encoder is None:
            raise ValueError(f"{self.path}: this model has no vocabularies (it was trained on encoded data not made "
                             f"by `optinter preprocess`): only encoded parquet can be scored")
        return self.encoder

    # ---- scoring --------------------------------------------------------------------------------------------
    def columns(self) -> EncodedColumns:
        return EncodedColumns(self.feature_map, self.model.required_pairs())

    def probabilities(self, encoded: pa.Table | Iterable[Any]) -> np.ndarray:
        """Click probabilities (float32, N) of an encoded table (the columns of the stage's parquet;
        the label is not needed) or of an iterable of :class:`~optinter.models.base.Batch`."""
        if isinstance(encoded, pa.Table):
            cols = self.columns()
            batches: Iterable[Any] = cols.batches(cols.convert(encoded), self.batch_size)
        else:
            batches = encoded
        with torch.inference_mode():
            _, p = predict_batches(self.model, batches, self.device)
        return p.astype(np.float32, copy=False)

    def score_parsed(self, parsed: dict[str, Any], on_bad_rows: str = "error", where: str = "input") -> np.ndarray:
        """Probabilities of the good rows of parsed raw rows (:meth:`RawEncoder.parse_text` /
        :meth:`RawEncoder.parse_frame`); with ``on_bad_rows="error"`` a bad row raises."""
        check_on_bad_rows(on_bad_rows)
        if parsed["bad"] and on_bad_rows == "error":
            raise bad_rows_error(parsed["bad"], where, "row", 0)
        return self.probabilities(self.require_encoder().encode(parsed["table"]))

    def predict_frame(self, frame: Any, on_bad_rows: str = "error") -> np.ndarray:
        """Probabilities (float32, N) of a pandas DataFrame / Arrow table of raw rows (NaN: skipped bad rows)."""
        parsed = self.require_encoder().parse_frame(frame)
        p = self.score_parsed(parsed, on_bad_rows)
        if parsed["bad"]:
            log.warning("%d bad rows scored as NaN: %s", len(parsed["bad"]), dict(Counter(r for _, r, _ in parsed["bad"])))
        return aligned(parsed["n_lines"], parsed["lines"], p)

    def predict(self, data: Any, on_bad_rows: str = "error") -> np.ndarray:
        """Click probabilities (float32, shape N: one per input row, in input order).

        ``data``: a pandas DataFrame / Arrow table (or a dict) of raw columns, a path / glob / list of paths of
        raw files, or encoded parquet (files or a folder). ``on_bad_rows``: ``"error"`` (default)
        or ``"skip"`` (a bad row's probability is NaN).
        """
        check_on_bad_rows(on_bad_rows)
        if isinstance(data, Mapping):
            data = pd.DataFrame(dict(data))
        if isinstance(data, (pa.Table, pa.RecordBatch, pd.DataFrame)):
            return self.predict_frame(data, on_bad_rows)
        from .scoring import predict_files

        paths = [data] if isinstance(data, (str, Path)) else list(data)
        return predict_files(self, [str(p) for p in paths], on_bad_rows)


def check_on_bad_rows(value: str) -> None:
    if value not in ON_BAD_ROWS:
        raise ValueError(f"parameter 'on_bad_rows' must be 'error' or 'skip', got {value!r}")


def bad_rows_error(bad: Sequence[tuple[int, str, str]], where: str, unit: str, base: int) -> PreprocessError:
    """The error for the first of ``bad`` (``(position, reason, detail)``), at ``unit`` ``base + position``."""
    pos, reason, detail = bad[0]
    skip = "on_bad_rows='skip' (--on-bad-rows skip)"
    more = f" ({len(bad) - 1} more bad rows; use {skip} to drop them)" if len(bad) > 1 else \
        f" (use {skip} to drop such rows)"
    return PreprocessError(f"{where}, {unit} {base + pos}: {detail}{more}", reason=reason)


def aligned(n: int, positions: np.ndarray, values: np.ndarray) -> np.ndarray:
    """float32 array of length ``n``: ``values`` at ``positions``, NaN elsewhere."""
    if len(positions) == n:
        return values
    out = np.full(n, np.nan, dtype=np.float32)
    out[positions] = values
    return out


def load(model: str | Path, tracking_uri: str | None = None, device: str = "cpu",
         batch_size: int | None = None) -> Predictor:
    """A :class:`Predictor` from a run folder, an MLflow run id or a model URI (``runs:/…``, ``models:/…``).

    >>> import optinter                                                     # doctest: +SKIP
    >>> m = optinter.load("artifacts/retrain/3f2a…")                       # doctest: +SKIP
    >>> p = m.predict(df)            # numpy float32, one click probability per row of df
    """
    p = Path(str(model)).expanduser()
    if p.exists():
        return Predictor.load(p, device=device, batch_size=batch_size)
    tmp = Path(tempfile.mkdtemp(prefix="optinter-model-"))
    try:
        bundle = resolve_model(model, tracking_uri, dst=tmp)
        pred = Predictor.load(bundle, device=device, batch_size=batch_size)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if tmp in bundle.parents:
        pred.path = None  # downloaded: nothing stays on disk
    return pred
