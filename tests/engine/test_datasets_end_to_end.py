"""Every `--dataset` choice of `mvpose train` trains, saves, evaluates and plots end to end (tiny models, tiny data).

Human3.6M and Ski-Pose data come from the synthetic generator in their published layouts (`mvpose synth`),
COCO from the conftest writer. The MPJPE breakdown follows the data: per action for Human3.6M, per
sequence for Ski-Pose (which has no actions), none for COCO (no 3D ground truth).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import BAR_COLOURS, colour_pixels, panel_ink, write_coco

from mvpose.cli import main
from mvpose.data import DATASETS

# (pipeline, extra --set) per dataset: the tiny demo models; COCO is single-view.
RECIPES = {
    "h36m": ("demo_mv_ppt", ["dataset.views=2"]),
    "skipose": ("demo_mv_ppt", ["dataset.views=6"]),
    "coco": ("demo_sv_ppt", ["dataset.views=1", "dataset.image_size=[128,96]", "dataset.heatmap_size=[32,24]",
                             "model.image_size=[128,96]", "model.heatmap_size=[32,24]"]),
}
COMMON = ["train.epochs=1", "train.max_steps_per_epoch=1", "train.batch_size=2", "train.workers=0", "eval.batch_size=4",
          "dataset.train_every=1", "dataset.eval_every=1", "train.keep_ratio_warmup_epochs=0", "train.keep_ratio_decay_epochs=0"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    from mvpose.data.synth import generate

    base = tmp_path_factory.mktemp("e2e")
    generate(base / "h36m", fmt="h36m", subjects=(1, 9), frames=2, actions=(2, 14), subactions=(1,), image_size=96, seed=0)
    generate(base / "skipose", fmt="skipose", subjects=(1, 5), frames=2, seed=0)
    for split in ("train2017", "val2017"):
        write_coco(base / "coco", split, num_images=2)
    return {"h36m": base / "h36m", "skipose": base / "skipose" / "Ski-PosePTZ-CameraDataset-png", "coco": base / "coco"}


def test_every_dataset_choice_has_a_recipe():
    assert set(DATASETS) == set(RECIPES)


@pytest.mark.parametrize("dataset", sorted(RECIPES))
def test_train_save_evaluate_plot(dataset, roots, tmp_path):
    runner = CliRunner()
    pipeline, extra = RECIPES[dataset]
    run = tmp_path / "run"
    sets = [a for s in COMMON + extra for a in ("--set", s)]
    res = runner.invoke(main, ["train", "--dataset", dataset, "--pipeline", pipeline, "--data-root", str(roots[dataset]),
                               "--out", str(run), *sets])
    assert res.exit_code == 0, res.output
    assert f"pipeline {pipeline}" in res.output and str(roots[dataset]) in res.output
    last = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 0 and last["config"]["dataset"]["name"] == dataset
    assert (run / "best.pt").is_file()

    res = runner.invoke(main, ["evaluate", "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path), "--name", "rep"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["dataset"] == dataset and 0.0 <= rep["jdr"]["overall"] <= 1.0
    if dataset == "coco":
        assert rep["mpjpe_mm"] is None and "AP" in rep["coco"]
    else:
        mp = rep["mpjpe_mm"]
        assert mp["overall"] > 0
        if dataset == "h36m":
            assert mp["breakdown"] == "action" and set(mp["per_action"]) == {"Directions", "Walking"}
            assert "per_sequence" not in mp and rep["rays"] == "exact"
            res = runner.invoke(main, ["evaluate", "--checkpoint", str(run / "best.pt"), "--out", str(tmp_path), "--name", "off",
                                       "--rays", "official"])
            assert res.exit_code == 0, res.output
            off = json.loads((tmp_path / "off.json").read_text())
            assert off["rays"] == "official" and off["mpjpe_mm"]["overall"] != mp["overall"]
        else:  # Ski-Pose has no actions: per sequence (the test split holds skiers 5 and 6's runs)
            assert mp["breakdown"] == "sequence" and "per_action" not in mp
            assert mp["per_sequence"] and all(k.startswith("seq_") for k in mp["per_sequence"])
            assert min(mp["per_sequence"].values()) <= mp["overall"] <= max(mp["per_sequence"].values())
        res = runner.invoke(main, ["plot", "mpjpe", str(tmp_path / "rep.json"), "-o", str(tmp_path / "bars.png")])
        assert res.exit_code == 0, res.output
        assert colour_pixels(tmp_path / "bars.png", BAR_COLOURS[0]) > 200  # the report's bars
    res = runner.invoke(main, ["plot", "tokens", "--checkpoint", str(run / "best.pt"), "--samples", "1", "-o", str(tmp_path / "t.png")])
    assert res.exit_code == 0, res.output
    views = json.loads((tmp_path / "rep.json").read_text())["views"]
    ink = panel_ink(tmp_path / "t.png", rows=1, cols=views)  # one sample: a row of one panel per view
    assert (ink > 0.3).all(), ink


def test_a_failing_validation_keeps_the_trained_epoch(roots, tmp_path, monkeypatch):
    import mvpose.engine.train as train_mod

    def broken(*args, **kwargs):
        raise RuntimeError("validation broke")

    monkeypatch.setattr(train_mod, "build_report", broken)
    pipeline, extra = RECIPES["skipose"]
    sets = [a for s in COMMON + extra for a in ("--set", s)]
    res = CliRunner().invoke(main, ["train", "--dataset", "skipose", "--pipeline", pipeline, "--data-root", str(roots["skipose"]),
                                    "--out", str(tmp_path), *sets])
    assert res.exit_code != 0 and "validation broke" in str(res.exception)
    last = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 0 and last["step"] == 1
    assert (tmp_path / "log.csv").read_text().count("\n") == 2  # header + the epoch's row (no validation figures)


def test_evaluate_help_says_checkpoint_is_always_required():
    res = CliRunner().invoke(main, ["evaluate", "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "always required" in text and "Required unless" not in text
    res = CliRunner().invoke(main, ["evaluate", "--model", "ppt_tiny"])
    assert res.exit_code == 2 and "--checkpoint" in res.output


def test_loader_workers_fit_the_machine():
    from mvpose.engine.train import loader_workers

    assert loader_workers(4, cpus=2) == 1  # the paper pipelines' 4 workers on a 2-core machine
    assert loader_workers(4, cpus=16) == 4
    assert loader_workers(4, processes=2, cpus=4) == 1
    assert loader_workers(2, cpus=1) == 0


def test_default_train_says_what_it_runs_and_the_quick_alternative():
    from mvpose.cli import _train_plan
    from mvpose.engine.config import load_pipeline

    text = _train_plan(load_pipeline("h36m_mv_ppt_s"), paper_default=True)
    assert "model mv_ppt_s, 4 views at 256x256, 20 epochs of batch 8" in text
    assert "synthetic h36m demo set" in text and "--pipeline demo_mv_ppt" in text and "s per step" in text
    assert len(_train_plan(load_pipeline("demo_mv_ppt"), paper_default=False).splitlines()) == 1
