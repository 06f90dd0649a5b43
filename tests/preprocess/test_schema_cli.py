"""Schemas (built-ins, YAML) and the ``optinter preprocess`` command line."""

from __future__ import annotations

import json

import pytest

from conftest import criteo_lines, write_lines
from preprocess.errors import PreprocessError
from preprocess.schema import AVAZU, CRITEO, IPINYOU, IPINYOU_COLUMNS, SYNTHETIC, get_schema, load_schema_yaml


def test_builtin_schemas_resolve() -> None:
    rs = CRITEO.resolve(CRITEO.columns)
    assert len(rs.fields) == 39 and all(f[1] == "categorical" for f in rs.fields)
    assert [f[0] for f in rs.fields if f[3]] == [f"I{i}" for i in range(1, 14)]
    assert len(rs.pairs) == 325 and rs.cross_fields == [f"C{i}" for i in range(1, 27)]
    both = get_schema("criteo")
    both.continuous_mode = "both"
    rb = both.resolve(both.columns)
    assert len(rb.fields) == 52 and rb.cont_fields == [f"I{i}_v" for i in range(1, 14)]
    header = ("id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,"
              "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21").split(",")
    ra = AVAZU.resolve(header)
    names = [f[0] for f in ra.fields]
    assert "id" not in names and "hour" not in names and names[-2:] == ["hour_of_day", "weekday"] and len(names) == 23
    ri = IPINYOU.resolve(IPINYOU_COLUMNS)
    assert len(ri.fields) == 17 and ri.multivalent == {"usertag": ","} and len(ri.pairs) == 120
    rsyn = SYNTHETIC.resolve(["label", "p_true", "c0", "c1", "c2", "n0", "n1"])
    assert rsyn.cat_fields == ["c0", "c1", "c2"] and rsyn.cont_fields == ["n0", "n1"] and rsyn.drop == ["p_true"]


def test_schema_errors(tmp_path) -> None:
    with pytest.raises(PreprocessError, match="unknown dataset 'kaggle'"):
        get_schema("kaggle")
    with pytest.raises(PreprocessError, match="not assigned|neither label"):
        SYNTHETIC.resolve(["label", "p_true", "c0", "other"])
    p = tmp_path / "s.yaml"
    p.write_text("label: y\ncontinuous_mode: squares\n")
    with pytest.raises(PreprocessError, match="continuous_mode") as ei:
        load_schema_yaml(p)
    assert str(p) in str(ei.value)
    p.write_text("label: y\noov_threshold: 0\n")
    with pytest.raises(PreprocessError, match="oov_threshold"):
        load_schema_yaml(p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(PreprocessError, match="mapping"):
        load_schema_yaml(p)
    p.write_text("label: y\nheader: false\n")
    with pytest.raises(PreprocessError, match="columns"):
        load_schema_yaml(p)


def test_cli_preprocess_writes_summary_and_fails_cleanly(tmp_path, scheduler, capsys) -> None:
    from optinter.cli import main

    raw = write_lines(tmp_path / "r.tsv", criteo_lines(400, 8))
    out = tmp_path / "o"
    rc = main(["-q", "preprocess", "--dataset", "criteo", "--raw", str(raw), "--out", str(out), "--scheduler", scheduler,
               "--oov-threshold", "2", "--cross-fields", "C1", "C2", "C3", "--field-threshold", "C1=1",
               "--seed", "5", "--ratios", "6,2,2"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    printed = json.loads(capsys.readouterr().out)
    assert printed["rows"] == summary["rows"] and sum(summary["rows"].values()) == 400
    assert summary["n_pairs"] == 3 and set(summary["seconds"]) >= {"ingest", "fit_oov", "fit_cross", "encode_pairs"}
    fm = json.loads((out / "feature_map.json").read_text())
    assert fm["settings"]["field_thresholds"] == {"C1": 1} and fm["settings"]["seed"] == 5
    bad = write_lines(tmp_path / "bad.tsv", criteo_lines(10, 8) + ["1\t2"])
    rc = main(["-q", "preprocess", "--dataset", "criteo", "--raw", str(bad), "--out", str(tmp_path / "o2"),
               "--scheduler", scheduler])
    err = capsys.readouterr().err
    assert rc != 0 and "line 11" in err and str(bad) in err and not (tmp_path / "o2").exists()
    rc = main(["-q", "preprocess", "--dataset", "criteo", "--out", str(tmp_path / "o3")])
    assert rc != 0 and "--raw" in capsys.readouterr().err
