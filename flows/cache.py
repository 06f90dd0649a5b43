"""The pipeline's stage keys: content and code fingerprints over :mod:`optinter.store`, the one
stage cache (plain Python: no Prefect, no MLflow). Its names are re-exported here.

A pipeline stage's key is a hash of everything its output depends on: its settings, the keys (or
content fingerprints, :func:`file_fingerprint` / :func:`dir_fingerprint`) of its inputs, and a
fingerprint of the source code that computes it (:func:`code_fingerprint`). The folders, markers
and remote roots are :class:`optinter.store.ArtifactStore`'s.
"""

from __future__ import annotations

import ast
import dis
import hashlib
import importlib.util
import inspect
import os
import re
import types
from pathlib import Path
from typing import Any, Callable, Iterable

from optinter.store import (  # noqa: F401 - the store's names, re-exported
    _HASH_LEN, CACHE_VERSION, MARKER, WORK_DIR_ENV, ArtifactStore, StageRecord, _json_default, stable_hash, stage_key)

_PROJECT_ROOT = Path(__file__).resolve().parents[1]


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
