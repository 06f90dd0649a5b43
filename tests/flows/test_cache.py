"""The content-keyed stage store (flows.cache): keys, reuse, force, failures, fsspec roots."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from flows.cache import MARKER, ArtifactStore, file_fingerprint, stable_hash, stage_key


def _writer(calls: list[str], text: str):
    def fn(out: Path) -> dict:
        calls.append(text)
        out.mkdir(parents=True)
        (out / "a.txt").write_text(text)
        (out / "sub").mkdir()
        (out / "sub" / "b.txt").write_text(text * 2)
        return {"value": len(text), "path": str(out / "a.txt")}

    return fn


def test_stable_hash_ignores_key_order_and_sees_values():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert stage_key("search", {"x": 1}) != stage_key("retrain", {"x": 1})


def test_file_fingerprint_is_content_hash(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"hello" * 1000)
    assert file_fingerprint(p) == hashlib.sha256(b"hello" * 1000).hexdigest()[:16]
    q = tmp_path / "g.bin"
    q.write_bytes(b"hello" * 1000)
    assert file_fingerprint(q) == file_fingerprint(p)  # names do not matter, content does
    q.write_bytes(b"hellO" * 1000)
    assert file_fingerprint(q) != file_fingerprint(p)


def test_run_then_reuse_local(tmp_path):
    store = ArtifactStore(tmp_path / "root")
    calls: list[str] = []
    rec = store.run("search", "k1", {"x": 1}, _writer(calls, "one"), run_id="r1")
    assert not rec.cached and calls == ["one"]
    assert rec.path == tmp_path / "root" / "search" / "k1"
    assert (rec.path / "a.txt").read_text() == "one" and (rec.path / "sub" / "b.txt").read_text() == "oneone"
    # paths the stage returned were rewritten from the staging folder to the final one
    assert rec.result["path"] == str(rec.path / "a.txt")
    marker = json.loads((rec.path / MARKER).read_text())
    assert marker["run_id"] == "r1" and marker["inputs"] == {"x": 1} and marker["key"] == "k1"

    again = store.run("search", "k1", {"x": 1}, _writer(calls, "two"))
    assert again.cached and calls == ["one"] and again.run_id == "r1"
    assert (again.path / "a.txt").read_text() == "one"
    # no staging leftovers
    assert sorted(p.name for p in (tmp_path / "root" / "search").iterdir()) == ["k1"]


def test_force_recomputes_and_replaces(tmp_path):
    store = ArtifactStore(tmp_path)
    calls: list[str] = []
    store.run("retrain", "k", {}, _writer(calls, "one"))
    rec = store.run("retrain", "k", {}, _writer(calls, "two"), force=True)
    assert calls == ["one", "two"] and not rec.cached
    assert (rec.path / "a.txt").read_text() == "two"
    assert sorted(p.name for p in (tmp_path / "retrain").iterdir()) == ["k"]


def test_failed_stage_leaves_previous_outputs_and_no_marker(tmp_path):
    store = ArtifactStore(tmp_path)
    calls: list[str] = []
    good = store.run("preprocess", "p", {}, _writer(calls, "data"))

    def boom(out: Path) -> dict:
        out.mkdir(parents=True)
        (out / "half.txt").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        store.run("search", "s", {}, boom)
    assert store.lookup("search", "s") is None
    assert not (tmp_path / "search" / "s").exists()
    assert not (tmp_path / "search" / ".tmp-s" / "out").exists()  # the half-written output is gone
    # the earlier stage is intact and reused
    assert store.lookup("preprocess", "p").result == good.result
    # a failed forced recompute keeps the old finished folder
    with pytest.raises(RuntimeError):
        store.run("preprocess", "p", {}, boom, force=True)
    assert (tmp_path / "preprocess" / "p" / "a.txt").read_text() == "data"


def test_failed_stage_keeps_checkpoints_for_the_next_attempt(tmp_path):
    """Stage functions checkpoint into ``<out_dir>.work``; a retry of the same key finds them."""
    store = ArtifactStore(tmp_path)
    seen: list[bool] = []

    def flaky(out: Path) -> dict:
        work = out.with_name(out.name + ".work")
        seen.append((work / "epoch1.pt").exists())
        work.mkdir(parents=True, exist_ok=True)
        (work / "epoch1.pt").write_text("ckpt")
        if len(seen) == 1:
            raise RuntimeError("killed")
        out.mkdir()
        (out / "model.pt").write_text("final")
        return {}

    with pytest.raises(RuntimeError):
        store.run("retrain", "k", {}, flaky)
    rec = store.run("retrain", "k", {}, flaky)
    assert seen == [False, True]
    assert (rec.path / "model.pt").read_text() == "final"
    assert sorted(p.name for p in (tmp_path / "retrain").iterdir()) == ["k"]  # staging removed on success


def test_folder_without_marker_is_not_done(tmp_path):
    store = ArtifactStore(tmp_path)
    (tmp_path / "search" / "k").mkdir(parents=True)
    (tmp_path / "search" / "k" / "architecture.json").write_text("{}")
    calls: list[str] = []
    rec = store.run("search", "k", {}, _writer(calls, "fresh"))
    assert calls == ["fresh"] and not rec.cached
    assert not (rec.path / "architecture.json").exists()


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_fsspec_root_upload_and_download(tmp_path, scheme):
    if scheme == "memory":
        root = f"memory://optinter-test-{uuid.uuid4().hex[:8]}/artifacts"
    else:
        root = (tmp_path / "remote").as_uri()
    store = ArtifactStore(root, work_dir=tmp_path / "work1")
    calls: list[str] = []
    rec = store.run("train", "k", {"m": "fm"}, _writer(calls, "w"))
    assert rec.uri == f"{store.root}/train/k"
    assert (rec.path / "sub" / "b.txt").read_text() == "ww"
    # a second "machine" (another work folder) finds it under the root and downloads it
    other = ArtifactStore(root, work_dir=tmp_path / "work2")
    got = other.lookup("train", "k")
    assert got is not None and got.cached and calls == ["w"]
    if scheme == "memory":  # copied to this machine's work folder
        assert Path(got.local_dir) == tmp_path / "work2" / stable_hash(store.root, 12) / "train" / "k"
    else:  # file:// is a local folder: read in place
        assert Path(got.local_dir) == tmp_path / "remote" / "train" / "k" == Path(rec.local_dir)
    assert (got.path / "a.txt").read_text() == "w" and (got.path / "sub" / "b.txt").read_text() == "ww"
    # load by URL (a --from reference)
    loaded = other.load(rec.uri)
    assert loaded.key == "k" and loaded.stage == "train" and (loaded.path / "a.txt").read_text() == "w"


def test_memory_root_failed_upload_is_not_done(tmp_path):
    root = f"memory://optinter-test-{uuid.uuid4().hex[:8]}"
    store = ArtifactStore(root, work_dir=tmp_path)
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.makedirs(f"{store.root}/search/k", exist_ok=True)
    fs.pipe(f"{store.root}/search/k/partial.bin", b"x")  # an interrupted upload: files, no marker
    assert store.lookup("search", "k") is None


def test_load_reference_errors(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ValueError, match="not a finished optinter stage folder"):
        store.load(tmp_path / "nothing")


def _stage_fn(out):  # a stage's compute function: never called, only read
    from pkg.a import run

    return run(out)


@pytest.fixture()
def fake_project(tmp_path, monkeypatch):
    """A project root with package ``pkg``: a imports b inside a function, b loads c by name, d is unused."""
    import flows.cache as cache

    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "def run(out):\n    from . import b\n    return b.go(out)\n",
        "pkg/b.py": "import importlib\n\ndef go(out):\n    return importlib.import_module('pkg.c').f(out)\n",
        "pkg/c.py": "def f(out):\n    return 1\n",
        "pkg/d.py": "x = 1\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(cache, "_PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(cache, "PROJECT_PACKAGES", ("pkg",))
    monkeypatch.delenv(cache.IGNORE_CODE_ENV, raising=False)
    return tmp_path


def test_code_fingerprint_follows_what_the_stage_imports(fake_project, monkeypatch):
    import flows.cache as cache

    files = {p.relative_to(fake_project).as_posix() for p in cache.code_files(_stage_fn)}
    assert files == {"pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/c.py"}
    k0 = stage_key("train", {"m": 1, "code": cache.code_fingerprint(_stage_fn)})
    (fake_project / "pkg" / "d.py").write_text("x = 2\n")  # not imported: same key
    assert stage_key("train", {"m": 1, "code": cache.code_fingerprint(_stage_fn)}) == k0
    seen = {k0}
    for rel in ("pkg/c.py", "pkg/b.py", "pkg/__init__.py"):  # each dependency, however reached, changes the key
        with open(fake_project / rel, "a") as f:
            f.write("# edited\n")
        k = stage_key("train", {"m": 1, "code": cache.code_fingerprint(_stage_fn)})
        assert k not in seen, rel
        seen.add(k)
    monkeypatch.setenv(cache.IGNORE_CODE_ENV, "1")
    k_ignored = cache.code_fingerprint(_stage_fn)
    (fake_project / "pkg" / "a.py").write_text("def run(out):\n    return 2\n")
    assert cache.code_fingerprint(_stage_fn) == k_ignored == "ignored"


def test_analyze_fingerprint_covers_report_and_architecture():
    """The analyze stage runs optinter.report and optinter.architecture besides optinter.analysis."""
    from flows.cache import module_closure

    mods = module_closure(["optinter.analysis"])
    assert {"optinter.analysis", "optinter.report", "optinter.architecture", "preprocess.feature_map"} <= set(mods)
    assert "optinter.models.deep" not in mods
    # the model stages reach the registry's lazily imported model modules (module names as strings)
    assert {"optinter.models.deep", "optinter.models.optinter", "optinter.layers.combination"} <= set(
        module_closure(["optinter.stages"]))


def test_editing_a_dependency_recomputes_the_stage(tmp_path, monkeypatch, mlflow_uri):
    """The evaluate step on a copy of the project: editing a module it imports (optinter/report.py,
    through flows/results.py) recomputes it; editing one it does not import reuses it."""
    import shutil

    import flows.cache as cache
    from flows import steps
    from flows.spec import resolve_spec
    from tiny import tiny_params

    src = Path(cache.__file__).resolve().parents[1]
    for pkg in cache.PROJECT_PACKAGES:
        shutil.copytree(src / pkg, tmp_path / "src" / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "_PROJECT_ROOT", tmp_path / "src")
    monkeypatch.delenv(cache.IGNORE_CODE_ENV, raising=False)
    trained = []
    for model in ("lr", "fm"):
        d = tmp_path / "trained" / model
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"model": model, "valid_auc": 0.6, "test_auc": 0.6 + len(model) / 100,
                                                    "test_logloss": 0.5, "params": 10, "epochs": 1}))
        trained.append(cache.StageRecord(stage="train", key=f"key-{model}", uri=str(d), local_dir=str(d),
                                         name=f"train:{model}"))
    ctx = steps.open_context(resolve_spec(**tiny_params(tmp_path / "art")))
    first = steps.step_evaluate(ctx, trained)
    assert not first.cached
    assert steps.step_evaluate(ctx, trained).cached
    with open(tmp_path / "src" / "optinter" / "models" / "deep.py", "a") as f:
        f.write("\n# an edit evaluate cannot see\n")
    assert steps.step_evaluate(ctx, trained).key == first.key
    with open(tmp_path / "src" / "optinter" / "report.py", "a") as f:
        f.write("\n# an edit of a module evaluate imports\n")
    again = steps.step_evaluate(ctx, trained)
    assert not again.cached and again.key != first.key
