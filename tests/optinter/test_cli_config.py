"""`--paper` gives Table IV exactly; the default gives the settings derived from the data; a
schema's name never changes them; `--config FILE` merges under `--set`."""

import json

import pytest

from optinter.cli_train import build_config
from optinter.config import default_config, load_config_file, paper_config
from preprocess.feature_map import FeatureMap


@pytest.fixture(scope="module")
def fmap(tiny_data) -> FeatureMap:
    return FeatureMap.load(tiny_data[0])


def test_paper_flag_gives_table_iv(fmap):
    cfg = build_config(fmap, "optinter", [], paper="criteo")
    assert cfg.to_dict() == paper_config("criteo", "optinter").to_dict()
    assert cfg.model.mlp_dims == (700,) * 5 and cfg.model.embed_dim == 20 and cfg.train.lr_a == 3e-5
    with pytest.raises(ValueError, match="Table IV has settings for"):
        build_config(fmap, "optinter", [], paper="mydata")


def test_default_and_overrides(fmap):
    cfg = build_config(fmap, "optinter", ["train.epochs=3"])
    assert cfg.model.mlp_dims != (700,) * 5  # data-derived defaults
    assert cfg.train.epochs == 3
    assert build_config(fmap, "optinter", ["train.epochs=3"], paper="criteo").model.mlp_dims == (700,) * 5


def test_schema_name_does_not_change_the_defaults(fmap):
    renamed = FeatureMap.from_dict({**fmap.to_dict(), "dataset": "ipinyou"})
    assert default_config(renamed, "optinter").to_dict() == default_config(fmap, "optinter").to_dict()
    assert default_config(renamed, "lr").to_dict() == default_config(fmap, "lr").to_dict()


def test_config_file_merges_under_set(tmp_path, fmap):
    f = tmp_path / "tuned.yaml"
    f.write_text("tuned: {model: lr, valid_auc: 0.7}\ntrain:\n  lr_o: 0.02\n  epochs: 4\nmodel.embed_dim: 6\n")
    cfg = build_config(fmap, "lr", ["train.epochs=2"], config_file=str(f))
    assert cfg.train.lr_o == 0.02  # from the file
    assert cfg.model.embed_dim == 6
    assert cfg.train.epochs == 2  # --set wins over the file
    base = default_config(fmap, "lr")
    assert cfg.train.batch_size == base.train.batch_size  # untouched settings keep the defaults
    j = tmp_path / "tuned.json"
    j.write_text(json.dumps({"train.lr_o": 0.5}))
    assert load_config_file(j) == {"train.lr_o": 0.5}


@pytest.mark.parametrize("text, match", [
    ("train:\n  lr_oo: 0.1\n", "unknown key"),
    ("model.embed_dim: many\n", "expected a int"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("train: 3\n", "must be a mapping"),
    ("train: [\n", "not valid YAML"),
])
def test_bad_config_file_is_a_clear_error(tmp_path, text, match):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match) as e:
        load_config_file(f)
    assert str(f) in str(e.value)


def test_cli_rejects_a_bad_config_before_training(tmp_path, tiny_data, capsys):
    from optinter.cli import main

    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  nope: 1\n")
    rc = main(["train", "--data", str(tiny_data[0]), "--model", "lr", "--out", str(tmp_path / "o"), "--config", str(f)])
    assert rc == 2
    assert "unknown key" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
