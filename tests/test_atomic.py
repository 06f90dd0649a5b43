"""The one never-half-written output mechanism every stage uses."""

import pytest

from preprocess.atomic import atomic_output_dir


def test_replace_merge_and_failure(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not out.exists()  # nothing visible until the end
    assert (out / "a.txt").read_text() == "1"

    with atomic_output_dir(out) as tmp:  # replace: the old content is gone
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]

    with atomic_output_dir(out, merge=True) as tmp:  # merge: namesakes replaced, others kept
        (tmp / "b.txt").write_text("3")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "c.txt").write_text("4")
    assert (out / "b.txt").read_text() == "3" and (out / "sub" / "c.txt").read_text() == "4"

    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "b.txt").write_text("half")
            raise RuntimeError("stage failed")
    assert (out / "b.txt").read_text() == "3"  # the earlier output is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folders left
