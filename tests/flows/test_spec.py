"""Bad pipeline input fails fast with a message naming the parameter (no Prefect needed)."""

from __future__ import annotations

import pytest
from tiny import TINY_OVERRIDES, tiny_params

from flows.spec import FULL_PIPELINE, SpecError, needed_stages, resolve_spec, scoped_overrides


def _spec(tmp_path, **kw):
    return resolve_spec(**tiny_params(tmp_path / "art", **kw))


def test_defaults_resolve(tmp_path):
    spec = _spec(tmp_path)
    assert spec.needed == ["synth", "preprocess", "search", "retrain", "baselines", "evaluate", "analyze"]
    assert spec.synth["n_train"] == 3000 and spec.synth["seed"] == 2026
    assert spec.run_config("retrain", "optinter").model.embed_dim == 4
    assert spec.run_config("retrain", "optinter").train.seed == 2026


def test_tune_stage_is_on_by_default_and_feeds_retrain(tmp_path):
    spec = _spec(tmp_path, tune_mode="auto")
    assert spec.needed == ["synth", "preprocess", "search", "tune", "retrain", "baselines", "evaluate", "analyze"]
    assert "tune" not in _spec(tmp_path, tune_mode="off").needed
    tc = _spec(tmp_path, tune_mode="on", tune={"trials": 3}).tune_config()
    assert tc.trials == 3 and tc.model == "optinter"
    # a setting the user fixes for the re-train is not tuned
    fixed = _spec(tmp_path, tune_mode="on", overrides=[*TINY_OVERRIDES, "retrain:train.lr_o=1e-3"]).tune_config()
    assert all(not s.startswith("train.lr_o=") for s in fixed.space_strings())


@pytest.mark.parametrize("kw, match", [
    ({"tune_mode": "sometimes"}, "parameter 'tune_mode'"),
    ({"tune_mode": "on", "tune": {"trials": 0, "minutes": 0}}, "budget is empty"),
    ({"tune_mode": "on", "tune": {"tirals": 3}}, "unknown keys"),
    ({"tune_mode": "on", "tune": {"space": ["train.nope=log:1:2"]}}, "unknown setting"),
    ({"config_file": "/nonexistent/tuned.yaml"}, "parameter 'config_file'"),
])
def test_bad_tune_parameters(tmp_path, kw, match):
    with pytest.raises(SpecError, match=match):
        _spec(tmp_path, **kw)


@pytest.mark.parametrize("kw, match", [
    ({"dataset": "critteo"}, "parameter 'dataset': unknown dataset 'critteo'"),
    ({"dataset": "criteo", "synth": None, "raw": ["/nonexistent/day_0.gz"]}, "parameter 'raw': no file matches '/nonexistent/day_0.gz'"),
    ({"dataset": "criteo", "synth": None, "train_path": "/nope/train.tsv", "valid_path": "/nope/v", "test_path": "/nope/t"},
     "parameter 'train_path': no file matches"),
    ({"dataset": "criteo", "synth": None}, "needs data"),
    ({"dataset": "criteo", "raw": ["/etc/hostname"]}, "parameter 'synth' only applies to dataset 'synthetic'"),
    ({"stages": ["baselines"], "baselines": []}, "nothing to run"),
    ({"oov_threshold": 0}, "parameter 'oov_threshold': must be an integer >= 1, got 0"),
    ({"cross_threshold": "many"}, "parameter 'cross_threshold': expected an integer >= 1"),
    ({"cross_threshold": 2.5}, "parameter 'cross_threshold'"),
    ({"baselines": ["lr", "deepfn"]}, "parameter 'baselines': unknown model 'deepfn'; known models:"),
    ({"force": ["serach"]}, "parameter 'force': unknown stage 'serach'"),
    ({"stages": ["retrian"]}, "parameter 'stages': unknown stage 'retrian'"),
    ({"overrides": ["model.embed_dimm=4"]}, "unknown key"),
    ({"overrides": ["train.epochs=two"]}, "train.epochs"),
    ({"overrides": ["retrian:train.epochs=2"]}, "unknown scope 'retrian'"),
    ({"overrides": ["train.epochs"]}, "expected key=value"),
    ({"synth": {"n_rows": 5}}, "parameter 'synth': unknown keys \\['n_rows'\\]"),
    ({"preprocess": {"threads": 3}}, "parameter 'preprocess': unknown keys \\['threads'\\]"),
    ({"jobs": {"nodes": 3}}, "parameter 'jobs': unknown keys \\['nodes'\\]"),
    ({"jobs": {"workers": -1}}, "parameter 'jobs': jobs: workers must be >= 0"),
    ({"jobs": {"threads": "two"}}, "parameter 'jobs': invalid literal"),
])
def test_bad_parameters_name_the_parameter(tmp_path, kw, match):
    with pytest.raises(SpecError, match=match):
        _spec(tmp_path, **kw)


def test_raw_and_splits_exclude_each_other(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("label,c0\n1,a\n")
    with pytest.raises(SpecError, match="exclude each other"):
        _spec(tmp_path, raw=[str(f)], train_path=str(f), valid_path=str(f), test_path=str(f))
    with pytest.raises(SpecError, match="missing: valid_path, test_path"):
        _spec(tmp_path, train_path=str(f))


def test_raw_globs_expand(tmp_path):
    for i in range(3):
        (tmp_path / f"part{i}.csv").write_text("label,c0\n1,a\n")
    spec = _spec(tmp_path, synth=None, raw=[str(tmp_path / "part*.csv")])
    assert [p.rsplit("/", 1)[-1] for p in spec.raw] == ["part0.csv", "part1.csv", "part2.csv"]
    assert "synth" not in spec.needed and spec.synth is None


def test_scoped_overrides_apply_to_their_stage_or_model_only(tmp_path):
    ov = TINY_OVERRIDES + ["retrain:train.lr_o=0.0042", "fm:model.embed_dim=6", "train.epochs=3"]
    spec = _spec(tmp_path, overrides=ov)
    assert spec.run_config("retrain", "optinter").train.lr_o == 0.0042
    assert spec.run_config("search", "optinter").train.lr_o != 0.0042
    assert spec.run_config("baselines", "fm").model.embed_dim == 6
    assert spec.run_config("baselines", "lr").model.embed_dim == 4
    assert spec.run_config("search", "optinter").train.epochs == 3  # later unscoped ones win
    assert scoped_overrides(["a=1", "search:b=2", "fm:c=3"], "search", "optinter") == ["a=1", "b=2"]


def test_needed_stages_follow_dependencies():
    assert needed_stages(["retrain"], True, True) == ["synth", "preprocess", "search", "retrain"]
    assert needed_stages(["retrain"], False, True) == ["preprocess", "search", "retrain"]
    assert needed_stages(["baselines"], False, False) == []
    assert needed_stages(FULL_PIPELINE, False, False) == ["preprocess", "search", "retrain", "evaluate", "analyze"]


def test_unknown_from_run_fails_before_any_stage(tmp_path, mlflow_uri):
    from flows.steps import open_context

    spec = _spec(tmp_path, from_run="0123456789abcdef0123456789abcdef")
    with pytest.raises(ValueError, match="MLflow run '0123456789abcdef0123456789abcdef' does not exist"):
        open_context(spec)
    spec = _spec(tmp_path, from_run=str(tmp_path / "no-such-folder"))
    with pytest.raises(ValueError, match="not a finished optinter stage folder"):
        open_context(spec)
    assert not (tmp_path / "art").exists()  # nothing was computed


def test_user_overrides_win_over_quickstart_settings(tmp_path, monkeypatch):
    import flows.spec

    # the quick start lays no settings of its own now (the data-derived defaults apply); the
    # layering is checked with stand-in quick-start settings
    assert flows.spec.SYNTHETIC_QUICKSTART_OVERRIDES == ()
    monkeypatch.setattr(flows.spec, "SYNTHETIC_QUICKSTART_OVERRIDES",
                        ("search:train.lr_o=3e-3", "search:train.lr_a=0.1", "retrain:model.layer_norm=false"))
    spec = _spec(tmp_path, overrides=TINY_OVERRIDES + ["train.lr_o=0.0007"])
    assert spec.run_config("search", "optinter").train.lr_o == 0.0007  # unscoped user value beats scoped default
    assert spec.run_config("search", "optinter").train.lr_a == 0.1  # quick-start value where the user is silent
    assert spec.run_config("retrain", "optinter").model.layer_norm is False


def test_jobs_settings_are_not_part_of_the_run_key(tmp_path):
    from flows.steps import spec_key

    a, b = _spec(tmp_path), _spec(tmp_path, jobs={"workers": 2, "threads": 1})
    assert b.jobs == {"workers": 2, "threads": 1} and b.jobs_config().workers == 2
    assert spec_key(a) == spec_key(b)

