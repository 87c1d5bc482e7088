"""`--set` keys and values are checked against the defaults' schema and the model's constructor."""

import json

import pytest
from click.testing import CliRunner

from mvpose.cli import main
from mvpose.engine.config import ConfigError, apply_overrides, check_model_keys, load_pipeline


@pytest.fixture(scope="module")
def demo_cfg():
    return load_pipeline("demo_mv_ppt")


@pytest.mark.parametrize("item, message", [
    ("train.epoch=7", "--set train.epoch: unknown key; did you mean train.epochs?"),
    ("eval.jdr_factr=0.9", "--set eval.jdr_factr: unknown key; did you mean eval.jdr_factor?"),
    ("foo.bar=1", "--set foo.bar: unknown key"),
    ("train.epochs=abc", "--set train.epochs: expected an integer, found 'abc'"),
    ("train.lr=abc", "--set train.lr: expected a number, found 'abc'"),
    ("train.batch_size=0", "--set train.batch_size: expected at least 1, found 0"),
    ("train.epochs=0", "--set train.epochs: expected at least 1, found 0"),
    ("dataset.rays=bogus", "--set dataset.rays: expected one of exact, official, found 'bogus'"),
    ("train.amp=3", "--set train.amp: expected true or false, found 3"),
    ("train.epochs=null", "--set train.epochs: expected int, found null"),
])
def test_bad_override_is_named(demo_cfg, item, message):
    with pytest.raises(ConfigError) as err:
        apply_overrides(demo_cfg, [item])
    assert str(err.value) == message


def test_good_overrides_pass_including_open_sections(demo_cfg):
    out = apply_overrides(demo_cfg, ["train.lr=1", "train.grad_clip=null", "dataset.augment_config={flip_prob: 0.0}",
                                     "model.keep_ratio=0.5", "dataset.root=/x", "train.lr_steps=[1, 2]"])
    assert out["train"]["lr"] == 1 and out["train"]["grad_clip"] is None
    assert out["dataset"]["augment_config"] == {"flip_prob": 0.0} and out["model"]["keep_ratio"] == 0.5
    check_model_keys(out)


def test_model_keys_checked_against_constructor(demo_cfg):
    with pytest.raises(ConfigError, match=r"model.keep_ratoi: unknown key for model 'mv_ppt_tiny'; did you mean keep_ratio\?"):
        check_model_keys(apply_overrides(demo_cfg, ["model.keep_ratoi=0.5"]))
    single = apply_overrides(load_pipeline("demo_sv_ppt"), ["model.nonexistent_param=3"])
    with pytest.raises(ConfigError, match=r"model.nonexistent_param: unknown key for model 'ppt_tiny'.*accepted: .*keep_ratio"):
        check_model_keys(single)


def test_every_shipped_pipeline_passes_the_checks():
    from mvpose.resources import pipelines_dir

    files = sorted(pipelines_dir().glob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        cfg = load_pipeline(f)
        check_model_keys(cfg)  # raises on a key the model does not take
        # every key of the file can be given again as an override
        items = [f"{sec}.{k}={json.dumps(v)}" for sec in ("train", "eval") for k, v in cfg[sec].items()]
        assert apply_overrides(cfg, items)["train"] == cfg["train"]


def test_cli_rejects_unknown_key_before_training(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--pipeline", "demo_mv_ppt", "--out", str(out),
                                    "--set", "train.epoch=7", "--set", "foo.bar=1"])
    assert res.exit_code == 1
    assert "Error: --set train.epoch: unknown key; did you mean train.epochs?" in res.output
    assert not out.exists()
    res = CliRunner().invoke(main, ["train", "--pipeline", "demo_mv_ppt", "--out", str(out), "--set", "model.nonexistent_param=3"])
    assert res.exit_code == 1 and "unknown key for model 'mv_ppt_tiny'" in res.output and res.exception.__class__ is SystemExit


def test_scientific_notation_is_a_number():
    """`--set train.lr=2e-3` is what users type; YAML 1.1 (PyYAML) reads it as a string without this."""
    cfg = apply_overrides(load_pipeline("demo_mv_ppt"), ["train.lr=2e-3", "train.grad_clip=1E1", "dataset.sigma=1.5e+0"])
    assert cfg["train"]["lr"] == 0.002 and cfg["train"]["grad_clip"] == 10.0 and cfg["dataset"]["sigma"] == 1.5
    with pytest.raises(ConfigError, match="expected a number above 0, found -1.5$"):  # read as a number, then refused
        apply_overrides(load_pipeline("demo_mv_ppt"), ["dataset.sigma=-1.5e+0"])
    assert apply_overrides(load_pipeline("demo_mv_ppt"), ["name=1e3x"])["name"] == "1e3x"  # not a number: a string
    with pytest.raises(ConfigError, match="expected a number, found 'e-3'"):
        apply_overrides(load_pipeline("demo_mv_ppt"), ["train.lr=e-3"])
