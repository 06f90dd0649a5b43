"""Never half-written outputs, the one set of helpers for them (preprocess, optinter and flows):

* :func:`atomic_output_dir` — a stage folder built in a temporary sibling and moved into place at
  the end (every stage: preprocess, synth, search / re-train / train, analyze, compare, evaluate);
* :func:`atomic_file` / :func:`write_text_atomic` / :func:`write_json_atomic` — one file written
  to a unique temporary file beside it, then renamed onto it (checkpoints, markers, metrics);
* :func:`replace_dir` — a finished folder moved onto another, replacing it (rename, then delete
  the old one);
* :func:`scratch_beside` — a scratch folder on the same file system as a target.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _temp_beside(out: Path) -> Path:
    """A new empty folder ``.<name>.tmp-*`` in the parent of ``out`` (created if needed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


@contextmanager
def atomic_output_dir(out_dir: str | os.PathLike[str], merge: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir`` (``.<name>.tmp-*``); on success it becomes
    ``out_dir``, on error it is removed and ``out_dir`` is left as it was.

    ``merge=False`` replaces an existing ``out_dir`` whole. ``merge=True`` moves each top-level
    entry onto its namesake inside an existing ``out_dir`` (files with ``os.replace``), leaving
    other entries of ``out_dir`` alone.
    """
    out = Path(out_dir)
    tmp = _temp_beside(out)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if merge and out.exists():
        for entry in sorted(tmp.iterdir()):
            target = out / entry.name
            if entry.is_dir() and target.exists():
                shutil.rmtree(target)
            os.replace(entry, target)
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        replace_dir(tmp, out)


def replace_dir(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Move folder ``src`` onto ``dst`` (same file system), replacing an existing ``dst``: the old
    one is renamed aside first and deleted after, so ``dst`` is always either old or new, whole."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        os.replace(src, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    os.replace(dst, old / dst.name)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; write the file there. On success it is
    renamed onto ``path`` (readers see the old file or the new one, whole); on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_file`."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return path


@contextmanager
def scratch_beside(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary folder beside ``path`` (``.<name>.tmp-*``, same file system: a file written there
    is moved onto ``path`` with ``os.replace``), removed at the end whatever happens."""
    tmp = _temp_beside(Path(path))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def json_path(path: str | Path, default_name: str) -> Path:
    """``path`` itself, or ``path / default_name`` when ``path`` is a folder."""
    path = Path(path)
    return path / default_name if path.is_dir() else path


def read_json(path: str | Path, missing: str = "file not found") -> Any:
    """Parse a JSON file; a missing file or bad JSON is a clear error naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {missing}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def write_json_atomic(path: str | Path, content: str | Any, default_name: str | None = None) -> Path:
    """Write JSON (a string, or an object dumped with indent 2) through :func:`atomic_file`."""
    path = json_path(path, default_name) if default_name else Path(path)
    text = content if isinstance(content, str) else json.dumps(content, indent=2)
    return write_text_atomic(path, text)
