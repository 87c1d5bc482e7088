"""The engine end to end on a tiny synthetic set: train, exact resume, DDP, evaluate, plots."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import BAR_COLOURS, colour_pixels, panel_ink

from mvpose.cli import main
from mvpose.engine.config import apply_overrides, load_pipeline
from mvpose.engine.train import train, weights_checksum

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from mvpose.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, fmt="h36m", subjects=(1, 9), frames=2, actions=(2, 14), image_size=128, seed=0)
    return root


def tiny_cfg(root, **over):
    cfg = load_pipeline("demo_mv_ppt")
    sets = [
        f"dataset.root={root}", "dataset.views=2", "dataset.eval_every=1", "train.batch_size=2",
        "train.workers=0", "train.max_steps_per_epoch=2", "train.epochs=2", "eval.batch_size=4",
    ] + [f"{k}={v}" for k, v in over.items()]
    return apply_overrides(cfg, sets)


def state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_continues_exactly(synth_root, tmp_path, workers):
    # workers=1: a persistent DataLoader worker, started in the first epoch of each run, must draw each epoch's
    # augmentation (it holds its own copy of the dataset, so the epoch travels with the index).
    w = {"train.workers": workers}
    straight = train(tiny_cfg(synth_root, **w), tmp_path / "a", progress=False)
    train(tiny_cfg(synth_root, **{"train.epochs": 1}, **w), tmp_path / "b", progress=False)
    resumed = train(tiny_cfg(synth_root, **w), tmp_path / "b", resume=True, progress=False)
    a, b = state(tmp_path / "a" / "last.pt"), state(tmp_path / "b" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight["last_epoch"] == resumed["last_epoch"] == 2
    rows = (tmp_path / "b" / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,")  # header + one row per epoch, across the resume
    # Training moved the weights (a test that resumes a no-op would pass trivially).
    first = state(tmp_path / "b" / "best.pt") if (tmp_path / "b" / "best.pt").exists() else None
    assert first is not None
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tiny_cfg(synth_root), tmp_path / "c", resume=True, progress=False)


def test_persistent_workers_draw_each_epochs_augmentation(synth_root):
    from torch.utils.data import DataLoader, SequentialSampler

    from mvpose.data import EpochSampler, collate
    from mvpose.engine.train import build_datasets

    cfg = tiny_cfg(synth_root)
    ds = build_datasets(cfg, splits=("train",), token_grid=(16, 16))["train"]
    sampler = EpochSampler(SequentialSampler(range(2)))
    loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=1, persistent_workers=True, collate_fn=collate)
    seen = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        seen.append(next(iter(loader))["image"])
    for epoch in range(2):
        expected = torch.stack([ds.load(i, epoch=epoch)["image"] for i in range(2)])
        assert torch.equal(seen[epoch], expected), epoch
    assert not torch.equal(seen[0], seen[1])  # the augmentation changes from epoch to epoch


def test_training_changes_weights_and_lowers_loss(synth_root, tmp_path):
    from mvpose.engine.train import build_model_from_config

    cfg = tiny_cfg(synth_root, **{"train.epochs": 3, "train.max_steps_per_epoch": 2})
    torch.manual_seed(cfg["seed"])
    init = weights_checksum(build_model_from_config(cfg))
    train(cfg, tmp_path / "r", progress=False)
    rows = [r.split(",") for r in (tmp_path / "r" / "log.csv").read_text().strip().splitlines()[1:]]
    losses = [float(r[3]) for r in rows]
    assert losses[-1] < losses[0]
    from mvpose.engine.runner import load_model

    model, _ = load_model(tmp_path / "r" / "last.pt")
    assert weights_checksum(model) != init


def test_ddp_two_cpu_processes_keep_identical_replicas(synth_root, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
        "-m", "mvpose", "train", "--pipeline", "demo_mv_ppt", "--data-root", str(synth_root), "--device", "cpu",
        "--out", str(out), "--set", "dataset.views=2", "--set", "train.batch_size=2", "--set", "train.workers=0",
        "--set", "train.max_steps_per_epoch=2", "--set", "train.epochs=1", "--set", "dataset.eval_every=1",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((out / "ddp_replicas.json").read_text())
    assert rep["world_size"] == 2
    assert rep["checksums"][0] == rep["checksums"][1]
    assert (out / "last.pt").exists() and (out / "log.csv").exists()


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    mv = train(tiny_cfg(synth_root, **{"train.epochs": 1}), out / "mv", progress=False)
    sv = train(tiny_cfg(synth_root, **{"train.epochs": 1, "model.name": "ppt_tiny", "name": "demo_sv"}), out / "sv", progress=False)
    return Path(mv["checkpoint"]), Path(sv["checkpoint"])


def test_evaluate_cli_writes_reports_for_multiview_and_single_view(trained, tmp_path):
    runner = CliRunner()
    reports = []
    for ckpt, name in zip(trained, ("mv", "sv")):
        res = runner.invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--out", str(tmp_path), "--name", name])
        assert res.exit_code == 0, res.output
        assert "MPJPE" in res.output and "JDR" in res.output
        rep = json.loads((tmp_path / f"{name}.json").read_text())
        for key in ("jdr", "mpjpe_mm", "pa_mpjpe_mm", "model", "views", "dataset"):
            assert key in rep
        assert set(rep["jdr"]) >= {"overall", "per_joint"} and len(rep["jdr"]["per_joint"]) == 17
        assert set(rep["mpjpe_mm"]) >= {"overall", "per_action", "per_joint"}
        assert set(rep["mpjpe_mm"]["per_action"]) == {"Directions", "Walking"}
        assert 0.0 <= rep["jdr"]["overall"] <= 1.0 and rep["mpjpe_mm"]["overall"] > 0
        assert (tmp_path / f"{name}.csv").read_text().startswith("metric,key,value")
        reports.append(tmp_path / f"{name}.json")
    assert json.loads(reports[0].read_text())["model"] != json.loads(reports[1].read_text())["model"]
    res = runner.invoke(main, ["plot", "mpjpe", *map(str, reports), "-o", str(tmp_path / "bars.png")])
    assert res.exit_code == 0, res.output
    # one bar colour per report, each drawn (several actions and the average: many pixels)
    assert [colour_pixels(tmp_path / "bars.png", c) > 500 for c in BAR_COLOURS] == [True, True]
    # Fewer views at inference than in training: the multi-view model takes any V.
    res = runner.invoke(main, ["evaluate", "--checkpoint", str(trained[0]), "--views", "3", "--out", str(tmp_path), "--name", "v3"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "v3.json").read_text())["views"] == 3


def test_plot_tokens_draws_every_view(trained, tmp_path):
    res = CliRunner().invoke(main, ["plot", "tokens", "--checkpoint", str(trained[0]), "--samples", "1", "-o", str(tmp_path / "t.png")])
    assert res.exit_code == 0, res.output
    # one sample: one row of panels, one per view (2), each holding its crop
    ink = panel_ink(tmp_path / "t.png", rows=1, cols=2)
    assert (ink > 0.3).all(), ink


def test_cli_errors_are_clear(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["train", "--pipeline", "no_such_pipeline"])
    assert res.exit_code != 0 and "not found" in res.output
    res = runner.invoke(main, ["train", "--pipeline", "demo_mv_ppt", "--set", "oops"])
    assert res.exit_code != 0 and "key=value" in res.output
    res = runner.invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "none.pt")])
    assert res.exit_code != 0 and "does not exist" in res.output
    bad = tmp_path / "r.json"
    bad.write_text("{}")
    res = runner.invoke(main, ["plot", "mpjpe", str(bad)])
    assert res.exit_code != 0 and "mpjpe_mm.overall" in res.output


@pytest.mark.parametrize("model_name", ["hrpvt_tiny", "sharpose_tiny", "vitranspose_tiny", "lite_hrnet_tiny"])
def test_baselines_train_and_evaluate_on_the_same_engine(synth_root, tmp_path, model_name):
    """Monocular baselines (SimCC and two-stage models included) go through the same loop and report."""
    from mvpose.engine.runner import evaluate_checkpoint

    cfg = tiny_cfg(synth_root, **{"model.name": model_name, "train.epochs": 1, "name": model_name})
    summary = train(cfg, tmp_path / model_name, progress=False)
    with open(tmp_path / model_name / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert float(rows[0]["train_loss"]) == pytest.approx(summary["train_loss"], rel=1e-6) and 0 < summary["train_loss"] < 10
    assert float(rows[0]["val_jdr"]) == pytest.approx(summary["best_jdr"], rel=1e-9) and 0 <= summary["best_jdr"] <= 1
    report, (jpath, _) = evaluate_checkpoint(summary["checkpoint"], out_dir=tmp_path, name=model_name)
    assert report["model"] == model_name and report["views"] == 2
    assert set(report["mpjpe_mm"]["per_action"]) == {"Directions", "Walking"}
    assert json.loads(jpath.read_text())["jdr"]["overall"] == report["jdr"]["overall"]


def test_evaluation_path_is_exact_with_ground_truth_heatmaps(synth_root):
    """Decoding, crop -> original mapping and crop-camera DLT lose nothing: feeding the target
    heatmaps as the prediction gives ~0 mm MPJPE and a JDR of ~1."""
    from torch.utils.data import DataLoader

    from mvpose.data import collate
    from mvpose.engine.evaluate import build_report, joint_names_for, predict
    from mvpose.engine.train import build_datasets
    from mvpose.models.base import PoseModel

    cfg = tiny_cfg(synth_root, **{"dataset.views": 4})
    ds = build_datasets(cfg, splits=("val",), token_grid=(16, 16))["val"]
    loader = DataLoader(ds, batch_size=4, collate_fn=collate)

    class Oracle(PoseModel):
        multiview = True
        batch = None

        def forward(self, images, rays=None, view_mask=None):
            return {"heatmaps": self.batch["target"]}

    oracle = Oracle()

    def batches():
        for b in loader:
            oracle.batch = b
            yield b

    pred = predict(oracle, batches(), torch.device("cpu"), progress=False)
    rep = build_report(pred, joint_names_for("h36m", 17), 6.55, 0.5)
    assert rep["mpjpe_mm"]["overall"] < 0.5
    assert rep["jdr"]["overall"] > 0.97
    # And a prediction shifted by 20 px in one view is caught by JDR.
    shifted = dict(pred, pred2d=pred["pred2d"] + np.array([20.0, 0.0]) * (np.arange(4) == 0)[None, :, None, None])
    assert build_report(shifted, joint_names_for("h36m", 17), 6.55, 0.5)["jdr"]["overall"] < 0.8


def test_train_cli_reports_bad_data_without_a_traceback(tmp_path):
    res = CliRunner().invoke(main, ["train", "--pipeline", "demo_mv_ppt", "--data-root", str(tmp_path / "nowhere"),
                                    "--out", str(tmp_path / "run")])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert "annotation file not found" in res.output and str(tmp_path / "nowhere") in res.output


def test_validation_and_evaluate_agree_on_keep_ratio_and_figures(synth_root, tmp_path):
    """After one epoch of the demo schedule (r = 1 during the warm-up epoch), training validates at the
    model's target ratio 0.7, as `mvpose evaluate` does: the logged figures are the report's."""
    import csv

    from mvpose.engine.runner import evaluate_checkpoint

    train(tiny_cfg(synth_root, **{"train.epochs": 1}), tmp_path / "k", progress=False)
    with open(tmp_path / "k" / "log.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["keep_ratio"]) == 1.0 and float(row["val_keep_ratio"]) == 0.7
    report, _ = evaluate_checkpoint(tmp_path / "k" / "best.pt", progress=False)
    assert report["keep_ratio"] == 0.7
    assert report["jdr"]["overall"] == pytest.approx(float(row["val_jdr"]), abs=1e-9)
    assert report["mpjpe_mm"]["overall"] == pytest.approx(float(row["val_mpjpe_mm"]), rel=1e-6)


def test_resume_refuses_settings_it_cannot_apply(synth_root, tmp_path):
    """A resumed run keeps its model, optimiser and schedule: other settings are refused in one line, naming
    them, instead of training on with the old ones while config.yaml records the new."""
    from mvpose.engine.checkpoint import load_weights
    from mvpose.engine.config import ConfigError
    from mvpose.models import build_model

    run = tmp_path / "r"
    train(tiny_cfg(synth_root, **{"train.epochs": 1}), run, progress=False)
    before = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.001 in the run, 0\.5 asked for\. A resumed run keeps"):
        train(tiny_cfg(synth_root, **{"train.lr": 0.5}), run, resume=True, progress=False)
    sv = apply_overrides(load_pipeline("demo_sv_ppt"), [f"dataset.root={synth_root}", "dataset.views=2",
                                                        "dataset.eval_every=1", "train.batch_size=2", "train.workers=0",
                                                        "train.max_steps_per_epoch=2", "train.epochs=2", "eval.batch_size=4"])
    with pytest.raises(ConfigError, match=r"another pipeline \(the run is --pipeline demo_mv_ppt\): name: 'demo_mv_ppt' in "
                                          r"the run, 'demo_sv_ppt' asked for; .*model\.name: 'mv_ppt_tiny' in the run"):
        train(sv, run, resume=True, progress=False)
    assert (run / "config.yaml").read_text() == before
    # No data root on resume: the run's own, not the synthetic default set the pipeline would fall back to.
    again = tiny_cfg(synth_root, **{"train.epochs": 2})
    again["dataset"]["root"] = None
    train(again, run, resume=True, progress=False)
    assert f"root: {synth_root}" in (run / "config.yaml").read_text()
    assert len((run / "log.csv").read_text().strip().splitlines()) == 3
    # Weights of another model: a count and the first names, not PyTorch's list of every key.
    with pytest.raises(ValueError, match=r"^x: the weights do not fit PPT: \d+ of the model's \d+ tensors missing "
                                         r"\([^)]*\); \d+ not in the model \(ppt\.[^)]*, \.\.\.\)") as info:
        load_weights(build_model("ppt_tiny"), state(run / "last.pt"), "x")
    assert len(str(info.value)) < 600


def test_a_run_stopped_before_its_first_checkpoint_starts_again(synth_root, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    (run / "log.csv").write_text("epoch,lr,keep_ratio,train_loss,samples_per_s,val_jdr,val_mpjpe_mm,seconds,val_keep_ratio\n")
    with pytest.raises(FileNotFoundError, match=r"last\.pt does not exist \(the run there stopped before its first checkpoint"):
        train(tiny_cfg(synth_root, **{"train.epochs": 1}), run, resume=True, progress=False)
    with pytest.raises(ValueError, match=r"--resume .* or --overwrite .*, not both"):
        train(tiny_cfg(synth_root, **{"train.epochs": 1}), run, resume=True, overwrite=True, progress=False)
    train(tiny_cfg(synth_root, **{"train.epochs": 1}), run, progress=False)  # no --overwrite needed: nothing to lose
    assert len((run / "log.csv").read_text().strip().splitlines()) == 2 and (run / "last.pt").is_file()
    with pytest.raises(FileExistsError, match="already holds a training run"):  # now it has a checkpoint
        train(tiny_cfg(synth_root, **{"train.epochs": 1}), run, progress=False)


def test_evaluate_names_a_relative_data_root_missing_from_here(synth_root, tmp_path, monkeypatch):
    monkeypatch.chdir(synth_root.parent)
    rel = synth_root.name  # trained with a relative root
    train(tiny_cfg(rel, **{"train.epochs": 1}), tmp_path / "r", progress=False)
    monkeypatch.chdir(tmp_path)
    ckpt = str(tmp_path / "r" / "last.pt")
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", ckpt])
    assert res.exit_code == 1 and (f"its data root {rel} (a path relative to the folder it was trained from) is not found "
                                   f"from {tmp_path}; give the dataset with --data-root") in res.output, res.output
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", ckpt, "--data-root", str(synth_root)])
    assert res.exit_code == 0, res.output


def test_evaluate_on_other_joints_warns_before_evaluating(synth_root, tmp_path, caplog):
    from mvpose.engine.runner import evaluate_checkpoint

    train(tiny_cfg(synth_root, **{"train.epochs": 1}), tmp_path / "r", progress=False)
    with caplog.at_level("WARNING", logger="mvpose.engine.runner"), pytest.raises(Exception):
        # skipose data that does not exist: the warning must come before the data is even looked for
        evaluate_checkpoint(tmp_path / "r" / "last.pt", dataset="skipose", data_root=str(tmp_path / "no_data"), progress=False)
    assert any("JDR and MPJPE do not measure the model" in r.getMessage() for r in caplog.records)
