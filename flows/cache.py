"""Content-keyed stage outputs under an artifact root (plain Python: no Prefect, no MLflow).

Every stage writes one folder ``<root>/<stage>/<key>/`` where ``key`` is a hash of everything the
stage's output depends on: its settings, the keys (or content fingerprints) of its inputs, and a
fingerprint of the source code that computes it. A folder counts as done only when its marker
``_stage.json`` is present; the marker is written last, so a stage that fails (or a process that
dies) leaves no marker and earlier stages' folders stay intact for the next run to reuse.

The root is a local folder or any fsspec URL (``file://``, ``memory://``, ``s3://``...). Stages always
read and write local files: with a remote root the stage runs in a local work folder
(``OPTINTER_WORK_DIR``, default ``.optinter/work``) and the finished folder is uploaded, marker
last; a later run (on any machine) downloads it when it needs it.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as _dt
import dis
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import re
import shutil
import time
import types
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

log = logging.getLogger(__name__)

MARKER = "_stage.json"
#: Local folder for stage work and copies of remote stage folders (default ``.optinter/work``).
WORK_DIR_ENV = "OPTINTER_WORK_DIR"
#: Bump to invalidate every cached stage (e.g. when the marker format changes).
CACHE_VERSION = 1
_HASH_LEN = 16

_PROJECT_ROOT = Path(__file__).resolve().parents[1]


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


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 (truncated) of a file's bytes; memoized per (path, size, mtime) within the process."""
    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo in _FILE_HASHES:
        return _FILE_HASHES[memo]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    out = h.hexdigest()[:_HASH_LEN]
    _FILE_HASHES[memo] = out
    return out


def paths_fingerprint(paths: Iterable[str | Path]) -> str:
    """Content fingerprint of several files (order-sensitive, names ignored: moving data keeps keys)."""
    return stable_hash([file_fingerprint(p) for p in paths])


def dir_fingerprint(path: str | Path, pattern: str = "*") -> str:
    """Content fingerprint of every file below ``path`` matching ``pattern`` (relative names + bytes)."""
    root = Path(path)
    files = sorted(p for p in root.rglob(pattern) if p.is_file() and p.name != MARKER)
    return stable_hash([[str(p.relative_to(root)), file_fingerprint(p)] for p in files])


# ---- code fingerprints --------------------------------------------------------------------------------------
#: Top-level packages of this project: only their modules go into code fingerprints (a library
#: upgrade does not change keys: ``--force`` the stages after one, see docs/flows.md).
PROJECT_PACKAGES = ("preprocess", "optinter", "flows")
#: Turns code out of the keys (then ``--force`` a stage after changing the code that computes it).
IGNORE_CODE_ENV = "OPTINTER_CACHE_IGNORE_CODE"
_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _is_project_module(name: str | None) -> bool:
    return bool(name) and name.split(".", 1)[0] in PROJECT_PACKAGES  # type: ignore[union-attr]


def module_file(name: str) -> Path | None:
    """The source file of project module ``name`` under the project root (``None`` when there is none)."""
    if not _is_project_module(name) or not _MODULE_NAME.match(name):
        return None
    base = _PROJECT_ROOT.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


_PARSED: dict[tuple[str, int, int], frozenset[str]] = {}


def _module_refs(name: str, path: Path) -> frozenset[str]:
    """Project module names that module ``name`` (file ``path``) imports anywhere in its source —
    top-level, inside functions or ``TYPE_CHECKING`` blocks — or names as a string constant (modules
    loaded by ``importlib``, like the model registry's)."""
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo in _PARSED:
        return _PARSED[memo]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    refs: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            refs.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                try:
                    base = importlib.util.resolve_name("." * node.level + base, package)
                except ImportError:  # a relative import above the top-level package
                    continue
            refs.add(base)
            refs.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.match(node.value):
            refs.add(node.value)
    out = frozenset(r for r in refs if _is_project_module(r))
    _PARSED[memo] = out
    return out


def module_closure(names: Iterable[str]) -> list[str]:
    """``names`` and every project module they import, directly or not (and the packages they are
    in, whose ``__init__`` runs on import), sorted; names without a source file are dropped."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            mod = ".".join(parts[:i])
            if mod in seen:
                continue
            path = module_file(mod)
            if path is None:
                continue
            seen.add(mod)
            todo.extend(_module_refs(mod, path))
    return sorted(seen)


_CONST_OPS = ("LOAD_CONST", "LOAD_SMALL_INT")


def _function_refs(fn: Callable[..., Any]) -> tuple[set[str], list[Callable[..., Any]]]:
    """(project modules that ``fn`` imports or uses, the project functions it calls, ``fn`` first).

    Reads ``fn``'s byte code (and that of its nested functions): ``import`` statements, and the
    globals it loads — modules, classes of project modules, and project functions, whose code is
    read the same way.
    """
    modules: set[str] = set()
    funcs: list[Callable[..., Any]] = []
    todo: list[Callable[..., Any]] = [fn]
    while todo:
        f = todo.pop()
        if f in funcs:
            continue
        funcs.append(f)
        g = getattr(f, "__globals__", {})
        package = g.get("__package__") or str(g.get("__name__", "")).rpartition(".")[0]
        codes = [f.__code__]
        while codes:
            code = codes.pop()
            codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
            consts: list[Any] = [None, None]
            for ins in dis.get_instructions(code):
                if ins.opname in _CONST_OPS:
                    consts = [consts[-1], ins.argval]
                elif ins.opname == "IMPORT_NAME":
                    level, fromlist = consts
                    name = str(ins.argval)
                    if isinstance(level, int) and level > 0:
                        name = importlib.util.resolve_name("." * level + name, package)
                    modules.add(name)
                    modules.update(f"{name}.{a}" for a in (fromlist or ()) if isinstance(a, str))
                elif ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval in g:
                    obj = g[ins.argval]
                    if isinstance(obj, types.ModuleType):
                        modules.add(obj.__name__)
                    elif isinstance(obj, types.FunctionType) and _is_project_module(obj.__module__):
                        todo.append(obj)
                    elif _is_project_module(getattr(obj, "__module__", None)):
                        modules.add(obj.__module__)
    return {m for m in modules if _is_project_module(m)}, funcs


def code_files(fn: Callable[..., Any]) -> list[Path]:
    """Source files of the project modules that ``fn`` (a stage's compute function) runs: what it
    imports or uses, and everything those modules import (see :func:`module_closure`)."""
    return _code_parts(fn)[1]


def _code_parts(fn: Callable[..., Any]) -> tuple[list[Callable[..., Any]], list[Path]]:
    modules, funcs = _function_refs(fn)
    return funcs, [p for p in (module_file(m) for m in module_closure(modules)) if p is not None]


def _source_hash(fn: Callable[..., Any]) -> str:
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):  # no source file (e.g. built in a REPL): the byte code then
        return hashlib.sha256(fn.__code__.co_code).hexdigest()[:_HASH_LEN]
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LEN]


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """Fingerprint of the code that computes a stage: the source of ``fn`` and of the project
    functions it calls, and the bytes of every project module it imports, directly or not.

    ``OPTINTER_CACHE_IGNORE_CODE=1`` leaves code out of the keys (then ``--force`` a stage after
    changing the code that computes it).
    """
    if os.environ.get(IGNORE_CODE_ENV, "").lower() in ("1", "true", "yes"):
        return "ignored"
    funcs, files = _code_parts(fn)
    return stable_hash({
        "functions": [[f"{f.__module__}.{f.__qualname__}", _source_hash(f)] for f in funcs],
        "modules": [[p.relative_to(_PROJECT_ROOT).as_posix(), file_fingerprint(p)] for p in files],
    })


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
            _replace_dir(tmp, local)
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
            _replace_dir(out, final_local)
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
            tmp = rec.path / f".{MARKER}.{uuid.uuid4().hex[:8]}"
            tmp.write_text(marker)
            os.replace(tmp, rec.path / MARKER)
        else:
            with self.fs.open(f"{rec.uri}/{MARKER}", "w") as f:  # type: ignore[union-attr]
                f.write(marker)
            (rec.path / MARKER).write_text(marker)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move folder ``src`` to ``dst``, replacing an existing ``dst`` (rename, then delete the old one)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dst.exists():
        old = dst.parent / f".old-{dst.name}-{uuid.uuid4().hex[:8]}"
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
