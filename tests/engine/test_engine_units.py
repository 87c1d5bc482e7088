"""Engine pieces that need no model or data: config, decoding, checkpoints, schedules."""

import math

import numpy as np
import pytest
import torch

from mvpose.engine.checkpoint import atomic_save, load_checkpoint
from mvpose.engine.config import ConfigError, apply_overrides, load_pipeline
from mvpose.engine.decode import crop_to_original, decode_heatmaps
from mvpose.engine.train import keep_ratio_at
from mvpose.models.base import heatmap_loss


def gaussian(h, w, cx, cy, sigma=2.0):
    ys, xs = torch.meshgrid(torch.arange(h).double(), torch.arange(w).double(), indexing="ij")
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))


@pytest.mark.parametrize("cx,cy", [(20.3, 33.7), (5.0, 5.0), (40.9, 12.2)])
def test_udp_decoding_is_subpixel_and_scaled(cx, cy):
    h, w = 64, 48
    hm = torch.stack([gaussian(h, w, cx, cy), gaussian(h, w, 10.5, 50.25)])[None]  # (1, 2, h, w)
    coords, conf = decode_heatmaps(hm, (256, 192), method="udp")
    sx, sy = (192 - 1) / (w - 1), (256 - 1) / (h - 1)
    assert torch.allclose(coords[0, 0], torch.tensor([cx * sx, cy * sy]).float(), atol=1e-3)
    assert torch.allclose(coords[0, 1], torch.tensor([10.5 * sx, 50.25 * sy]).float(), atol=1e-3)
    assert conf.shape == (1, 2) and (conf > 0.8).all()
    argmax, _ = decode_heatmaps(hm, (256, 192), method="argmax")
    assert torch.allclose(argmax[0, 0], torch.tensor([round(cx) * sx, round(cy) * sy]).float(), atol=1e-4)


def test_soft_argmax_is_differentiable_and_close():
    hm = gaussian(32, 32, 12.4, 20.6).float()[None, None].requires_grad_(True)
    coords, _ = decode_heatmaps(hm, (32, 32), method="soft")
    coords.sum().backward()
    assert hm.grad is not None and hm.grad.abs().sum() > 0
    # A sharp softmax is close to the peak; it is not sub-pixel exact (UDP decoding is).
    assert (coords[0, 0] - torch.tensor([12.4, 20.6])).abs().max() < 0.5


def test_crop_to_original_inverts_affine():
    rng = np.random.default_rng(0)
    A = torch.tensor(rng.normal(size=(3, 2, 3)))
    pts = torch.tensor(rng.normal(size=(3, 5, 2)) * 100)
    crop = pts @ A[..., :2].transpose(-1, -2) + A[..., None, :, 2]
    assert torch.allclose(crop_to_original(crop, A), pts, atol=1e-9)


def test_overrides_parse_yaml_values_and_reject_garbage(tmp_path):
    cfg = {"train": {"epochs": 3, "lr_steps": [1]}, "model": {"name": "x"}}
    out = apply_overrides(cfg, ["train.epochs=7", "train.lr_steps=[2, 4]", "model.keep_ratio=0.5", "dataset.root=null"])
    assert out["train"]["epochs"] == 7 and out["train"]["lr_steps"] == [2, 4]
    assert out["model"]["keep_ratio"] == 0.5 and out["dataset"]["root"] is None
    assert cfg["train"]["epochs"] == 3  # not mutated
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["train.epochs"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides(cfg, ["model.name.sub=1"])


def test_pipeline_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian: {epochs: 1}\n")
    with pytest.raises(ConfigError, match="bad.yaml.*unknown top-level keys"):
        load_pipeline(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_pipeline(tmp_path / "missing.yaml")


def test_every_shipped_pipeline_loads():
    from mvpose.resources import pipelines_dir

    files = sorted(pipelines_dir().glob("*.yaml"))
    assert len(files) >= 4
    for f in files:
        cfg = load_pipeline(f)
        assert cfg["model"]["name"] and cfg["dataset"]["views"] >= 1


def test_pipelines_and_camera_files_are_package_data(tmp_path, monkeypatch):
    """Names resolve inside the installed package (not the current folder or a checkout root), so a
    wheel install finds them; a user's own file still wins, and an unknown name lists the shipped ones."""
    from pathlib import Path

    import mvpose
    from mvpose.engine.config import resolve_pipeline
    from mvpose.resources import calibration_examples_dir, h36m_calibration_path, resource_path

    package = Path(mvpose.__file__).resolve().parent
    monkeypatch.chdir(tmp_path)
    assert resolve_pipeline("demo_mv_ppt").resolve() == package / "pipelines" / "demo_mv_ppt.yaml"
    assert resolve_pipeline("h36m_mv_ppt_s.yaml").resolve() == package / "pipelines" / "h36m_mv_ppt_s.yaml"
    assert h36m_calibration_path().resolve() == package / "calibration" / "h36m.json"
    assert (calibration_examples_dir() / "rig4.toml").is_file()
    own = tmp_path / "demo_mv_ppt"
    own.write_text("name: mine\n")
    assert resolve_pipeline("demo_mv_ppt").resolve() == own  # a file given by path comes first
    assert load_pipeline(own)["name"] == "mine"
    with pytest.raises(ConfigError, match=r"known: \[.*'demo_mv_ppt'.*'h36m_mv_ppt_s'"):
        resolve_pipeline("no_such_pipeline")
    with pytest.raises(FileNotFoundError, match="nothing.yaml"):
        resource_path("pipelines", "nothing.yaml")


def test_atomic_save_replaces_and_load_validates(tmp_path):
    p = tmp_path / "ck.pt"
    atomic_save({"model": {"w": torch.ones(2)}, "config": {}}, p)
    atomic_save({"model": {"w": torch.zeros(2)}, "config": {}}, p)
    assert load_checkpoint(p, required=("model", "config"))["model"]["w"].sum() == 0
    assert not list(tmp_path.glob(".*tmp*"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")


def test_keep_ratio_schedule_from_config():
    t = {"keep_ratio_warmup_epochs": 10, "keep_ratio_decay_epochs": 100}
    assert keep_ratio_at(5, t, 0.7) == pytest.approx(1.0)
    assert keep_ratio_at(60, t, 0.7) == pytest.approx(0.85)
    assert keep_ratio_at(110, t, 0.7) == pytest.approx(0.7)
    assert keep_ratio_at(0, {}, 0.7) == pytest.approx(0.7)
    vals = [keep_ratio_at(e, t, 0.5) for e in np.linspace(0, 120, 41)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_heatmap_loss_ignores_zero_weight_joints():
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.ones(2, 3, 4, 4)
    w = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    full = heatmap_loss(pred, target, torch.ones(2, 3))
    part = heatmap_loss(pred, target, w)
    assert math.isclose(full.item(), 0.5) and math.isclose(part.item(), 0.5 * 2 / 3, rel_tol=1e-6)


def test_augment_config_reaches_the_dataset(h36m_root):
    from mvpose.engine.config import DEFAULTS, deep_update
    from mvpose.engine.train import build_datasets

    cfg = deep_update(DEFAULTS, {"dataset": {"root": str(h36m_root), "image_size": [64, 64], "heatmap_size": [16, 16],
                                             "augment_config": {"half_body_prob": 0.0, "rotation_factor": 7.0}}})
    ds = build_datasets(cfg, ("train",), token_grid=(8, 8))["train"]
    assert ds.augment and ds.augment_config.half_body_prob == 0.0 and ds.augment_config.rotation_factor == 7.0
    assert ds.augment_config.scale_factor == 0.25  # untouched fields keep their defaults
    cfg["dataset"]["augment_config"] = {"rotation_factr": 1.0}
    with pytest.raises(TypeError, match="rotation_factr"):
        build_datasets(cfg, ("train",), token_grid=(8, 8))


def test_pretrained_weights_load_for_training_but_not_when_rebuilding(tmp_path):
    from mvpose.engine.checkpoint import atomic_save
    from mvpose.engine.config import DEFAULTS, deep_update
    from mvpose.engine.train import build_model_from_config
    from mvpose.models import build_model

    sv = build_model("ppt_tiny", image_size=(64, 64), heatmap_size=(16, 16))
    atomic_save({"model": sv.state_dict()}, tmp_path / "sv.pt")
    cfg = deep_update(DEFAULTS, {"dataset": {"image_size": [64, 64], "heatmap_size": [16, 16]},
                                 "model": {"name": "mv_ppt_tiny", "pretrained": str(tmp_path / "sv.pt")}})
    mv = build_model_from_config(cfg)
    # A single-view PPT's weights land under ``ppt.`` of the multi-view model.
    assert torch.equal(mv.state_dict()["ppt.keypoint_tokens"], sv.state_dict()["keypoint_tokens"])
    (tmp_path / "sv.pt").unlink()
    rebuilt = build_model_from_config(cfg, load_pretrained=False)  # the file may be gone by now
    assert not torch.equal(rebuilt.state_dict()["ppt.keypoint_tokens"], sv.state_dict()["keypoint_tokens"])
    with pytest.raises(FileNotFoundError):
        build_model_from_config(cfg)


def test_resumed_multistep_scheduler_still_decays(tmp_path):
    """to_plain keeps a Counter's counts (MultiStepLR milestones), so the learning rate drops after --resume."""
    import collections

    from mvpose.engine.checkpoint import load_checkpoint, save_checkpoint, to_plain

    assert to_plain(collections.Counter({3: 1, 5: 2})) == collections.Counter({3: 1, 5: 2})
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 3], gamma=0.1)
    opt.step()
    sched.step()
    save_checkpoint({"model": {}, "config": {}, "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp_path / "c.pt")
    ck = load_checkpoint(tmp_path / "c.pt", required=("model",))
    opt2 = torch.optim.Adam([p], lr=1.0)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(opt2, milestones=[2, 3], gamma=0.1)
    opt2.load_state_dict(ck["optimizer"])
    sched2.load_state_dict(ck["scheduler"])
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.1)
