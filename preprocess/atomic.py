"""Never half-written outputs: stage folders built in a temporary sibling and moved into place at
the end, and JSON files written through a temporary file + rename. Used by every stage
(preprocess, synth, search / re-train / train, analyze, compare, evaluate)."""

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
    if not out.exists():
        os.replace(tmp, out)
    elif merge:
        for entry in sorted(tmp.iterdir()):
            target = out / entry.name
            if entry.is_dir() and target.exists():
                shutil.rmtree(target)
            os.replace(entry, target)
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)


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
    """Write JSON (a string, or an object dumped with indent 2) via a temp file + rename."""
    path = json_path(path, default_name) if default_name else Path(path)
    text = content if isinstance(content, str) else json.dumps(content, indent=2)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
