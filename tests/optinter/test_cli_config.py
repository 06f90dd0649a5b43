"""`--paper` gives Table IV exactly; the default gives the sample-tuned Criteo settings."""

from optinter.cli_train import build_config
from optinter.config import paper_config


def test_paper_flag_gives_table_iv():
    cfg = build_config("criteo", "optinter", [], paper=True)
    assert cfg.to_dict() == paper_config("criteo", "optinter").to_dict()
    assert cfg.model.mlp_dims == (700,) * 5 and cfg.model.embed_dim == 20 and cfg.train.lr_a == 3e-5


def test_default_and_overrides():
    cfg = build_config("criteo", "optinter", ["train.epochs=3"])
    assert cfg.model.mlp_dims != (700,) * 5  # sample-tuned defaults
    assert cfg.train.epochs == 3
    assert build_config("criteo", "optinter", ["train.epochs=3"], paper=True).model.mlp_dims == (700,) * 5
