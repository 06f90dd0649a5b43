"""Content-keyed stage folders under an artifact root (plain Python: no Prefect, no MLflow): the
one stage cache of the project. ``flows`` keys the pipeline's stages with it (``flows/cache.py``
adds the code fingerprints), and the ``compare`` stage (:mod:`optinter.experiments`) keeps each
of its training jobs in it.

Every stage writes one folder ``<root>/<stage>/<key>/`` where ``key`` is a hash of everything the
stage's output depends on (:func:`stage_key`). A folder counts as done only when its marker
``_stage.json`` is present; the marker is written last, so a stage that fails (or a process that
dies) leaves no marker and earlier stages' folders stay intact for the next run to reuse.

The root is a local folder or any fsspec URL (``file://``, ``memory://``, ``s3://``...). Stages always
read and write local files: with a remote root the stage runs in a local work folder
(``OPTINTER_WORK_DIR``, default ``.optinter/work``) and the finished folder is uploaded, marker
last; a later run (on any machine) downloads it when it needs it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from preprocess.atomic import replace_dir, write_text_atomic

log = logging.getLogger(__name__)

MARKER = "_stage.json"
#: Local folder for stage work and copies of remote stage folders (default ``.optinter/work``).
WORK_DIR_ENV = "OPTINTER_WORK_DIR"
#: Bump to invalidate every cached stage (e.g. when the marker format changes).
CACHE_VERSION = 1
_HASH_LEN = 16


def stable_hash(obj: Any, length: int = _HASH_LEN) -> str:
    """Hex SHA-256 of ``obj`` as canonical JSON (sorted keys), truncated to ``length``."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _json_default(o: Any) -> Any:
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)
def stage_key(stage: str, inputs: Mapping[str, Any]) -> str:
    """The cache key of ``stage`` given its key material ``inputs`` (settings, upstream keys, code)."""
    return stable_hash({"stage": stage, "inputs": inputs, "cache_version": CACHE_VERSION})


@dataclass
class StageRecord:
    """One finished stage folder, as described by its ``_stage.json`` marker.

    ``local_dir`` is where the outputs can be read on this machine; ``uri`` is the folder under the
    artifact root; ``run_id`` is the MLflow run that computed it; ``meta`` is what the computing run
    recorded beside the key (not part of it, e.g. its overrides, inherited by ``from_run``).
    ``cached`` (not stored) says whether this process reused the folder instead of computing it.
    """

    stage: str
    key: str
    uri: str
    local_dir: str
    inputs: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    created: str = ""
    cached: bool = False

    @property
    def path(self) -> Path:
        return Path(self.local_dir)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("cached")
        d.pop("local_dir")
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], local_dir: str, cached: bool = True) -> "StageRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known and k not in ("local_dir", "cached")}
        return cls(**kw, local_dir=local_dir, cached=cached)


def _split_protocol(root: str) -> tuple[str, str]:
    if "://" in root:
        proto, rest = root.split("://", 1)
        return proto, rest
    return "file", root


class ArtifactStore:
    """Stage folders ``<root>/<stage>/<key>/`` under a local folder or an fsspec URL.

    >>> store = ArtifactStore("artifacts")                  # doctest: +SKIP
    >>> rec = store.run("search", key, inputs, lambda out: run_search(data, out, cfg))  # doctest: +SKIP
    """

    def __init__(self, root: str | Path, work_dir: str | Path | None = None) -> None:
        root = str(root)
        proto, rest = _split_protocol(root)
        self.local = proto in ("file", "local")
        if self.local:
            self.root = str(Path(rest).expanduser().resolve())
            self.fs = None
        else:
            import fsspec

            self.root = root.rstrip("/")
            self.fs = fsspec.filesystem(proto)
        work = Path(work_dir or os.environ.get(WORK_DIR_ENV, ".optinter/work")).expanduser().resolve()
        # Remote roots: local copies live in a work folder of their own per root.
        self.work_dir = Path(self.root) if self.local else work / stable_hash(self.root, 12)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    # ---- locations --------------------------------------------------------------------------------
    def uri(self, stage: str, key: str) -> str:
        return f"{self.root}/{stage}/{key}"

    def local_path(self, stage: str, key: str) -> Path:
        return self.work_dir / stage / key

    # ---- reading ------------------------------------------------------------------------------------
    def _read_marker(self, uri: str) -> dict[str, Any] | None:
        try:
            if self.local:
                return json.loads((Path(uri) / MARKER).read_text())
            with self.fs.open(f"{uri}/{MARKER}", "r") as f:  # type: ignore[union-attr]
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def exists(self, stage: str, key: str) -> bool:
        """Whether ``stage``/``key`` is finished under the root (nothing is downloaded)."""
        return self._read_marker(self.uri(stage, key)) is not None

    def lookup(self, stage: str, key: str) -> StageRecord | None:
        """The finished folder of ``stage``/``key`` (downloaded when the root is remote), or ``None``."""
        uri = self.uri(stage, key)
        marker = self._read_marker(uri)
        if marker is None:
            return None
        local = self.local_path(stage, key)
        if not self.local:
            self._ensure_local(uri, local, marker)
        return StageRecord.from_json(marker, local_dir=str(local), cached=True)

    def _ensure_local(self, uri: str, local: Path, marker: Mapping[str, Any]) -> None:
        try:
            if json.loads((local / MARKER).read_text()) == marker:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        log.info("downloading %s -> %s", uri, local)
        tmp = local.parent / f".tmp-{local.name}-{uuid.uuid4().hex[:8]}"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fs.get(uri + "/", str(tmp) + "/", recursive=True)  # type: ignore[union-attr]
            replace_dir(tmp, local)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load(self, ref: str | Path) -> StageRecord:
        """A finished stage folder given by path or URL (a ``--from`` reference)."""
        ref = str(ref).rstrip("/")
        proto, rest = _split_protocol(ref)
        if proto in ("file", "local"):
            p = Path(rest).expanduser().resolve()
            try:
                marker = json.loads((p / MARKER).read_text())
            except FileNotFoundError:
                raise ValueError(f"{p} is not a finished optinter stage folder (no {MARKER}); "
                                 f"pass a folder like <artifact_root>/search/<key> or an MLflow run id") from None
            return StageRecord.from_json(marker, local_dir=str(p), cached=True)
        import fsspec

        fs = fsspec.filesystem(proto)
        try:
            with fs.open(f"{ref}/{MARKER}", "r") as f:
                marker = json.load(f)
        except FileNotFoundError:
            raise ValueError(f"{ref} is not a finished optinter stage folder (no {MARKER})") from None
        root = ref[: -len(f"/{marker['stage']}/{marker['key']}")] if ref.endswith(
            f"/{marker['stage']}/{marker['key']}") else ref.rsplit("/", 2)[0]
        store = ArtifactStore(root, work_dir=None if self.local else self.work_dir.parent)
        rec = store.lookup(marker["stage"], marker["key"])
        if rec is None:
            raise ValueError(f"{ref}: stage folder is not under <root>/{marker['stage']}/{marker['key']}")
        return rec

    # ---- writing ----------------------------------------------------------------------------------------
    def run(self, stage: str, key: str, inputs: Mapping[str, Any], fn: Callable[[Path], Mapping[str, Any] | None],
            *, force: bool = False, run_id: str | None = None, name: str = "",
            meta: Mapping[str, Any] | None = None) -> StageRecord:
        """Reuse ``stage``/``key`` when finished (unless ``force``), else compute it with ``fn(out_dir)``.

        ``fn`` gets a fresh local folder that does not exist yet and must write the stage's outputs
        there; its return value (JSON-safe, paths inside ``out_dir`` are rewritten to the final
        folder) is kept in the marker. Nothing is published unless ``fn`` returns normally.
        """
        if not force:
            rec = self.lookup(stage, key)
            if rec is not None:
                log.info("stage %s: reusing %s", stage, rec.uri)
                return rec
        final_local = self.local_path(stage, key)
        # A fixed staging folder per key: a stage that fails keeps its checkpoints there
        # (``out.work``) and the next attempt resumes from them; ``out`` itself is always fresh.
        staging = final_local.parent / f".tmp-{key}"
        out = staging / "out"
        if out.exists():
            shutil.rmtree(out)
        staging.mkdir(parents=True, exist_ok=True)
        uri = self.uri(stage, key)
        t0 = time.perf_counter()
        ok = False
        try:
            result = fn(out) or {}
            seconds = time.perf_counter() - t0
            out.mkdir(parents=True, exist_ok=True)
            # Paths the stage returned point into the staging folder: make them point to the final one.
            blob = json.dumps(dict(result), default=_json_default).replace(str(out), str(final_local))
            rec = StageRecord(stage=stage, key=key, uri=uri, local_dir=str(final_local), inputs=dict(inputs),
                              result=json.loads(blob), run_id=run_id, name=name, meta=dict(meta or {}),
                              seconds=round(seconds, 3),
                              created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                              cached=False)
            marker = json.dumps(rec.to_json(), indent=1, sort_keys=True, default=_json_default)
            (out / MARKER).write_text(marker)
            if not self.local:
                self._publish(out, uri, marker)
            replace_dir(out, final_local)
            ok = True
        finally:
            if ok:
                shutil.rmtree(staging, ignore_errors=True)
            else:
                shutil.rmtree(out, ignore_errors=True)
        log.info("stage %s: wrote %s in %.1f s", stage, uri, rec.seconds)
        return rec

    def _publish(self, local: Path, uri: str, marker: str) -> None:
        fs = self.fs
        assert fs is not None
        if fs.exists(uri):
            fs.rm(uri, recursive=True)
        files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != MARKER)
        for p in files:  # every file first, the marker last: a half upload is never "done"
            fs.makedirs(f"{uri}/{p.parent.relative_to(local).as_posix()}".rstrip("/."), exist_ok=True)
            fs.put_file(str(p), f"{uri}/{p.relative_to(local).as_posix()}")
        with fs.open(f"{uri}/{MARKER}", "w") as f:
            f.write(marker)

    def set_run_id(self, rec: StageRecord, run_id: str) -> None:
        """Record the MLflow run that computed ``rec`` in its marker (after the fact)."""
        rec.run_id = run_id
        marker = json.dumps(rec.to_json(), indent=1, sort_keys=True, default=_json_default)
        if self.local:
            write_text_atomic(rec.path / MARKER, marker)
        else:
            with self.fs.open(f"{rec.uri}/{MARKER}", "w") as f:  # type: ignore[union-attr]
                f.write(marker)
            (rec.path / MARKER).write_text(marker)
