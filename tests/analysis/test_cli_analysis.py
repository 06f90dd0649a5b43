"""`optinter analyze` / `optinter compare` through the real console entry point."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from encoded_data import write_encoded
from optinter.cli import main


def test_cli_analyze(tmp_path, capsys):
    fm, _ = write_encoded(tmp_path / "data", n_rows=600)
    rc = main(["analyze", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "an")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_pairs"] == fm.num_pairs
    assert len(pd.read_csv(tmp_path / "an" / "mi.csv")) == fm.num_pairs


def test_cli_analyze_bad_arch_is_an_error_message(tmp_path, capsys):
    write_encoded(tmp_path / "data", n_rows=300)
    (tmp_path / "a.json").write_text("{not json")
    rc = main(["analyze", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "an"), "--arch", str(tmp_path / "a.json")])
    assert rc == 2
    assert "a.json" in capsys.readouterr().err


def test_cli_compare_with_fake_trainer(tmp_path, monkeypatch, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from fake_trainer import FakeTrainer

    import optinter.experiments as ex

    fake = FakeTrainer()
    monkeypatch.setattr(ex, "stages_trainer", fake)
    write_encoded(tmp_path / "data", n_rows=300)
    rc = main(["compare", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "cmp"), "--models", "lr,fm",
               "optinter", "--seeds", "2", "--tables", "V", "VI", "--set", "train.epochs=1"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["jobs_trained"] == 6 == len(fake.calls)
    assert list(pd.read_csv(tmp_path / "cmp" / "table_V.csv")["model"]) == ["lr", "fm", "optinter"]
    with pytest.raises(SystemExit):
        main(["compare", "--data", "x"])  # --out missing
    rc = main(["compare", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "c2"), "--tables", "XI"])
    assert rc == 2 and "unknown table" in capsys.readouterr().err
