"""Input gaps of issue 12: non-finite literals in number columns, per-field / per-pair threshold names.

* ``nan`` / ``inf`` / ``infinity`` (any case, signed) in a continuous (Criteo integer) column are read as
  missing whatever else is in the cell's partition; forms that are not numbers (``nan(1)``, ``1_0``) are
  rejected the same way everywhere. Checked cell by cell (a column with and without an empty cell, which
  decides the parser's path) and end to end with several block sizes against a pandas reading.
* ``--field-threshold`` / ``--pair-threshold`` with a bad value or an unknown name stop with exit code 2
  and the parameter named, before a cluster is started.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import criteo_lines, write_lines
from preprocess.errors import PreprocessError
from preprocess.feature_map import FeatureMap
from preprocess.io import parse_numbers
from preprocess.pipeline import PreprocessConfig, run_preprocess
from preprocess.schema import CRITEO_COLUMNS

INT_COLS = [f"I{i}" for i in range(1, 14)]
NONFINITE = ["nan", "NaN", "-nan", "NAN", "inf", "-inf", "+inf", "Inf", "Infinity", "-Infinity", "1e400", " nan "]
NOT_NUMBERS = ["nan(1)", "1_0", "abc", "infinit", "0x10", "1e", "--1", "."]


def _cell(s: str) -> tuple[float, bool]:
    """parse_numbers of a one-cell column, and of the same cell beside an empty one (the other path)."""
    a1, b1 = parse_numbers(pa.array([s]))
    a2, b2 = parse_numbers(pa.array([s, ""]))
    assert np.array_equal(a1, a2[:1], equal_nan=True) and b1[0] == b2[0], f"{s!r}: {a1} {b1} vs {a2} {b2}"
    assert np.isnan(a2[1]) and not b2[1]
    return float(a1[0]), bool(b1[0])


def test_cells_read_the_same_on_both_parser_paths() -> None:
    for s in NONFINITE:
        x, bad = _cell(s)
        assert np.isnan(x) and not bad, s
    for s in NOT_NUMBERS:
        x, bad = _cell(s)
        assert np.isnan(x) and bad, s
    for s, v in (("12", 12.0), ("-3", -3.0), (" 7 ", 7.0), ("+.5", 0.5), ("5.", 5.0), ("2e3", 2000.0)):
        assert _cell(s) == (v, False)
    # random strings over the characters numbers are made of: the two paths never disagree
    rng = np.random.default_rng(12)
    alphabet = list("0123456789+-.eE ") + ["nan", "inf", "inity", "NaN", "Inf", "(1)", "x", "_"]
    for _ in range(1500):
        _cell("".join(rng.choice(alphabet) for _ in range(int(rng.integers(1, 6)))))


def _lines_with(n: int, seed: int, specials: list[str], blank_rows: range) -> list[str]:
    """Criteo lines whose integer columns get ``specials`` in scattered cells; blanks only in ``blank_rows``
    (so that some partitions have no empty integer cell — the cast path — and others have — the regex path)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, line in enumerate(criteo_lines(n, seed)):
        cells = line.split("\t")
        for j in range(1, 14):
            if cells[j] == "" and i not in blank_rows:
                cells[j] = str(int(rng.integers(0, 50)))
            if rng.random() < 0.04:
                cells[j] = specials[int(rng.integers(len(specials)))]
        out.append("\t".join(cells))
    return out


def _pandas_numbers(path: Path) -> pd.DataFrame:
    """An independent reading: pandas' own float parser (its NA strings include nan, -nan, NaN), ±inf → NaN."""
    df = pd.read_csv(path, sep="\t", header=None, names=CRITEO_COLUMNS, dtype={c: np.float64 for c in INT_COLS},
                     keep_default_na=True, na_values=["", "NAN"])  # pandas lacks "NAN"
    for c in INT_COLS:
        df[c] = df[c].where(np.isfinite(df[c]))
    return df


def _run(files: dict[str, Path], out: Path, scheduler: str, blocksize: int, **kw) -> dict:
    return run_preprocess(PreprocessConfig(dataset="criteo", out=str(out), train=[str(files["train"])],
                                           valid=[str(files["valid"])], test=[str(files["test"])],
                                           oov_threshold=2, cross_threshold=2, cross_fields=["C1", "C2", "C3"],
                                           scheduler=scheduler, blocksize=blocksize, **kw))


@pytest.fixture(scope="module")
def nonfinite_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("nonfinite")
    specials = [s.strip() for s in NONFINITE]
    return {s: write_lines(d / f"{s}.tsv", _lines_with(n, seed, specials, range(n // 2, n // 2 + n // 10)))
            for s, n, seed in (("train", 1200, 21), ("valid", 300, 22), ("test", 300, 23))}


@pytest.mark.parametrize("mode", ["minmax", "bucketize"])
def test_nonfinite_is_missing_for_any_partitioning(nonfinite_files, tmp_path, scheduler, mode) -> None:
    ref = {s: _pandas_numbers(p) for s, p in nonfinite_files.items()}
    tables = []
    for bs in (1024, 5000, 32 << 20):
        out = tmp_path / f"o{bs}"
        summary = _run(nonfinite_files, out, scheduler, bs, continuous_mode=mode)
        assert sum(summary["rows_rejected"].values()) == 0
        assert summary["rows"] == {s: len(r) for s, r in ref.items()}
        tables.append({s: pq.read_table(out / s) for s in ref})
        fm = FeatureMap.load(out)
        if mode == "minmax":
            for c in INT_COLS:
                f = fm.field(c)
                x = ref["train"][c].to_numpy()
                assert (f.min, f.max) == (np.nanmin(x), np.nanmax(x)), c
                assert f.missing_train == int(np.isnan(x).sum()), c
                for s in ref:
                    x = ref[s][c].to_numpy()
                    want = np.where(np.isnan(x), 0.0, np.clip((x - f.min) / (f.max - f.min), 0, 1)).astype(np.float32)
                    np.testing.assert_array_equal(tables[-1][s][c].to_numpy(), want, err_msg=f"{bs} {s} {c}")
        else:  # the missing token "" of a bucketized field: the same ids as a blank cell
            for c in INT_COLS:
                for s in ref:
                    miss = np.isnan(ref[s][c].to_numpy())
                    ids = tables[-1][s][c].to_numpy()
                    assert len(set(ids[miss].tolist())) <= 1, (bs, s, c)
    for t in tables[1:]:
        for s in ref:
            assert t[s].equals(tables[0][s]), s


def test_not_numbers_rejected_for_any_partitioning(tmp_path, scheduler) -> None:
    d = tmp_path / "in"
    d.mkdir()
    files = {s: write_lines(d / f"{s}.tsv", _lines_with(n, seed, [s.strip() for s in NONFINITE] + NOT_NUMBERS,
                                                        range(0, n // 5)))
             for s, n, seed in (("train", 900, 31), ("valid", 200, 32), ("test", 200, 33))}
    # reference: a row is bad when one of its integer cells is neither blank, nor a pandas number, nor inf
    n_bad = 0
    for p in files.values():
        raw = pd.read_csv(p, sep="\t", header=None, names=CRITEO_COLUMNS, dtype=str, keep_default_na=False)
        bad = np.zeros(len(raw), dtype=bool)
        for c in INT_COLS:
            cell = raw[c].str.strip()
            bad |= cell.isin(NOT_NUMBERS).to_numpy()
            num = pd.to_numeric(cell.where(~cell.isin(NOT_NUMBERS), "0").replace("", "0"), errors="coerce")
            assert not num.isna().any() or cell[num.isna()].str.lower().str.lstrip("+-").eq("nan").all()
        n_bad += int(bad.sum())
    assert n_bad > 0
    outs = []
    for bs in (1024, 5000, 32 << 20):
        summary = _run(files, tmp_path / f"o{bs}", scheduler, bs, on_bad_rows="skip", continuous_mode="minmax")
        assert summary["rows_rejected"]["non_numeric"] == n_bad, bs  # rows, not cells
        assert summary["rows_read"] == sum(summary["rows"].values()) + sum(summary["rows_rejected"].values())
        outs.append(pq.read_table(tmp_path / f"o{bs}" / "train"))
    assert all(o.equals(outs[0]) for o in outs[1:])
    with pytest.raises(PreprocessError, match="not a number") as ei:
        _run(files, tmp_path / "err", scheduler, 1024)
    assert ei.value.line is not None and str(files["train"]) in str(ei.value)


# ---- per-field / per-pair thresholds --------------------------------------------------------------
@pytest.mark.parametrize("args, names", [
    (["--field-threshold", "C3=-1"], ["field_thresholds", "--field-threshold", "C3", "-1"]),
    (["--field-threshold", "C3=0"], ["field_thresholds", "C3"]),
    (["--field-threshold", "C99=5"], ["field_thresholds", "'C99'"]),
    (["--field-threshold", "I1=5", "--continuous-mode", "minmax"], ["field_thresholds", "'I1'"]),
    (["--pair-threshold", "C1|C99=5"], ["pair_thresholds", "--pair-threshold", "'C99'"]),
    (["--pair-threshold", "C2|C1=5"], ["pair_thresholds", "did you mean 'C1|C2'"]),
    (["--pair-threshold", "C1|C2=-3"], ["pair_thresholds", "C1|C2"]),
    (["--pair-threshold", "C1=4"], ["pair_thresholds", "'A|B'"]),
    (["--pair-threshold", "C1|C9=4", "--cross-fields", "C1", "C2"], ["pair_thresholds", "not crossed"]),
])
def test_bad_threshold_names_exit_2(tmp_path, capsys, args, names) -> None:
    from optinter.cli import main

    raw = write_lines(tmp_path / "r.tsv", criteo_lines(50, 3))
    out = tmp_path / "o"
    # no --scheduler: a LocalCluster would be started if the check came after it; it must come before
    rc = main(["-q", "preprocess", "--dataset", "criteo", "--raw", str(raw), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    for n in names:
        assert n in err, (n, err)
    assert not out.exists()


def test_good_thresholds_still_apply(tmp_path, scheduler) -> None:
    raw = write_lines(tmp_path / "r.tsv", criteo_lines(600, 4))
    out = tmp_path / "o"
    run_preprocess(PreprocessConfig(dataset="criteo", out=str(out), raw=[str(raw)], scheduler=scheduler,
                                    oov_threshold=3, cross_threshold=3, cross_fields=["C1", "C2", "C3"],
                                    field_thresholds={"C2": 1, "I4": 7}, pair_thresholds={"C1|C3": 1}))
    fm = FeatureMap.load(out)
    assert fm.field("C2").oov_threshold == 1 and fm.field("I4").oov_threshold == 7
    assert fm.field("C1").oov_threshold == 3
    assert {p.name: p.threshold for p in fm.pairs} == {"C1|C2": 3, "C1|C3": 1, "C2|C3": 3}
    with pytest.raises(PreprocessError, match="field_thresholds"):
        run_preprocess(PreprocessConfig(dataset="criteo", out=str(out), raw=[str(raw)], field_thresholds={"C2": 1.5}))
