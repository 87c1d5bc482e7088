"""The shipped pretrained weights (sha256-checked) and `mvpose demo` fine-tuning from them on a tiny set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mvpose.cli import main
from mvpose.data.demo import completion_stamp
from mvpose.resources import SHIPPED_WEIGHTS, WeightsChecksumError, sha256_of, shipped_weights_path, verify_sha256


def test_shipped_weights_match_their_sha256_and_rebuild_the_tiny_ppt():
    path = shipped_weights_path("ppt_tiny_synth")
    assert sha256_of(path) == SHIPPED_WEIGHTS["ppt_tiny_synth"][1]
    assert path.stat().st_size < 4_000_000  # a few MB at most
    assert path.with_name("ppt_tiny_synth.md").is_file() and path.with_name("ppt_tiny_synth_log.csv").is_file()
    import mvpose

    model, cfg = mvpose.load_model(path)
    assert cfg["model"]["name"] == "ppt_tiny" and cfg["dataset"]["name"] == "h36m"
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert "optimizer" not in raw and set(raw["model"]) == set(model.state_dict())
    out = model(torch.zeros(1, 3, 128, 128))
    assert out["heatmaps"].shape == (1, 17, 32, 32)


def test_damaged_weights_are_refused_with_both_digests(tmp_path):
    name, digest = SHIPPED_WEIGHTS["ppt_tiny_synth"]
    bad = tmp_path / name
    shutil.copyfile(shipped_weights_path("ppt_tiny_synth"), bad)
    assert verify_sha256(bad, digest) == bad
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError, match=digest) as err:
        verify_sha256(bad, digest)
    assert str(bad) in str(err.value) and sha256_of(bad) in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        verify_sha256(tmp_path / "missing.pt", digest)
    with pytest.raises(KeyError, match="ppt_tiny_synth"):
        shipped_weights_path("nope")


def test_demo_fine_tunes_both_methods_from_the_shipped_weights(tmp_path, monkeypatch):
    from mvpose.data.synth import generate

    data = tmp_path / "data"
    for name, occlusion in (("synth_h36m", False), ("synth_h36m_occl", True)):
        generate(data / name, fmt="h36m", subjects=(1, 9), frames=2, actions=(2, 14), image_size=128, seed=0, workers=1,
                 occlusion=occlusion)
        (data / name / ".complete").write_text(completion_stamp(name.removeprefix("synth_")))
    monkeypatch.setenv("MVPOSE_DATA", str(data))
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--epochs", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "| multi-view PPT + 3D PE |" in res.output and "occlusion: JDR" in res.output
    summary = json.loads((out / "results.json").read_text())
    labels = [r["label"] for r in summary["rows"]]
    assert labels[0].startswith("pretrained ppt_tiny_synth") and labels[1:] == ["single-view PPT + DLT", "multi-view PPT + 3D PE"]
    pretrained = str(shipped_weights_path("ppt_tiny_synth"))
    for pipeline in ("demo_sv_ppt", "demo_mv_ppt"):
        ckpt = torch.load(out / pipeline / "last.pt", map_location="cpu", weights_only=True)
        assert ckpt["config"]["model"]["pretrained"] == pretrained and ckpt["config"]["train"]["epochs"] == 1
        # Both fine-tune on the occlusion set; the multi-view model adds one zero-initialised fusion layer.
        assert Path(ckpt["config"]["dataset"]["root"]) == data / "synth_h36m_occl"
        if pipeline == "demo_mv_ppt":
            assert ckpt["model_config"]["depth"] == 5 and ckpt["model_config"]["fusion_layers"] == 1
            assert ckpt["model_config"]["zero_init_fusion"] is True
    # Fine-tuning starts from the shipped weights: one step moves the per-view weights only a little.
    start = torch.load(pretrained, map_location="cpu", weights_only=True)["model"]
    sv = torch.load(out / "demo_sv_ppt" / "last.pt", map_location="cpu", weights_only=True)["model"]
    key = "keypoint_tokens"
    assert 0 < (sv[key] - start[key]).abs().max() < 0.05
    # The occlusion split hides more joints than the standard one (same sequences).
    std = json.loads((out / "demo_sv_ppt" / "report.json").read_text())
    occ = json.loads((out / "demo_sv_ppt" / "report_occlusion.json").read_text())
    assert occ["jdr"]["hidden"] is not None and occ["samples"] == std["samples"]
    for png in ("per_action_mpjpe.png", "views.png", "skeleton3d.png"):
        assert (out / png).stat().st_size > 20_000, png
    import cv2

    views = cv2.imread(str(out / "views.png"))
    assert views.shape[1] > 1.5 * views.shape[0]  # two rows (methods) of four views


def test_demo_reports_damaged_weights_without_a_traceback(tmp_path, monkeypatch):
    import mvpose.resources as resources

    monkeypatch.setitem(resources.SHIPPED_WEIGHTS, "ppt_tiny_synth", ("ppt_tiny_synth.pt", "0" * 64))
    data = tmp_path / "data"
    for name in ("synth_h36m", "synth_h36m_occl"):  # marked complete: no generation
        (data / name).mkdir(parents=True)
        (data / name / ".complete").write_text(completion_stamp(name.removeprefix("synth_")))
    monkeypatch.setenv("MVPOSE_DATA", str(data))
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo")])
    assert res.exit_code == 1 and "sha256" in res.output and "0" * 64 in res.output and "Traceback" not in res.output


def test_demo_set_made_with_other_settings_is_generated_again(tmp_path, monkeypatch):
    """An occlusion set of an earlier release (validation subjects only, marked "ok") is not reused:
    the demo now trains on the occlusion set's training subjects too."""
    import mvpose.data.demo as demo

    calls = []
    monkeypatch.setenv("MVPOSE_DATA", str(tmp_path))
    monkeypatch.setattr("mvpose.data.synth.generate", lambda root, **kw: calls.append((Path(root), kw)))
    (tmp_path / "synth_h36m").mkdir()
    (tmp_path / "synth_h36m" / ".complete").write_text("ok\n")  # unchanged settings: reused
    old = tmp_path / "synth_h36m_occl"
    old.mkdir()
    (old / ".complete").write_text("ok\n")
    assert demo.ensure_demo_data("h36m") == tmp_path / "synth_h36m" and calls == []
    assert demo.ensure_demo_data("h36m_occl") == old
    assert len(calls) == 1 and calls[0][1]["occlusion"] is True and calls[0][1]["subjects"] is None
    assert (old / ".complete").read_text() == completion_stamp("h36m_occl")
    demo.ensure_demo_data("h36m_occl")  # now current: not generated again
    assert len(calls) == 1


def test_per_view_lr_factor_slows_only_the_per_view_part():
    from mvpose.engine.train import optimizer_groups
    from mvpose.models import build_model

    mv = build_model("mv_ppt_tiny", image_size=(128, 128), heatmap_size=(32, 32))
    groups = optimizer_groups(mv, {"lr": 1e-3, "per_view_lr_factor": 0.1})
    names = {id(p): n for n, p in mv.named_parameters()}
    fast = {names[id(p)] for p in groups[0]["params"]}
    slow = {names[id(p)] for p in groups[1]["params"]}
    assert groups[1]["lr"] == pytest.approx(1e-4) and "lr" not in groups[0]
    assert fast | slow == set(names.values()) and not fast & slow
    assert {n.split(".")[0] + "." + n.split(".")[1] for n in fast} == {"ppt.layers", "ppt.head", "pos_3d.weight", "pos_3d.bias"}
    assert all(n.startswith("ppt.layers.3.") for n in fast if n.startswith("ppt.layers"))  # the one fusion layer
    assert "ppt.keypoint_tokens" in slow and any(n.startswith("ppt.layers.2.") for n in slow)
    # Factor 1 and single-view models: one group, as before.
    assert len(optimizer_groups(mv, {"lr": 1e-3})) == 1
    assert len(optimizer_groups(build_model("ppt_tiny", image_size=(128, 128), heatmap_size=(32, 32)),
                                {"lr": 1e-3, "per_view_lr_factor": 0.1})) == 1


def test_report_separates_joints_hidden_in_their_view():
    import numpy as np

    from mvpose.engine.evaluate import build_report, joint_names_for, report_csv

    rng = np.random.default_rng(0)
    n, v, j = 6, 4, 17
    gt2d = rng.uniform(0, 256, (n, v, j, 2))
    vis = np.ones((n, v, j), bool)
    vis[:, 0, 11:] = False  # the arms hidden in view 0
    pred2d = gt2d.copy()
    pred2d[~vis] += 50.0  # every hidden joint missed, every visible one found
    gt3d = rng.uniform(-500, 500, (n, j, 3))
    pred = {"pred2d": pred2d, "gt2d": gt2d, "vis": vis, "conf": np.ones((n, v, j)), "pred3d": gt3d + 10.0, "gt3d": gt3d,
            "reproj": np.zeros((n, v, j)), "action": np.full(n, 2), "subaction": np.ones(n), "subject": np.full(n, 9)}
    rep = build_report(pred, joint_names_for("h36m", 17), 6.55, 0.5)
    assert rep["jdr"]["visible"] == 1.0 and rep["jdr"]["hidden"] == 0.0
    assert rep["jdr"]["overall"] == pytest.approx(1 - 6 / (v * j))
    assert rep["mpjpe_mm"]["overall"] == pytest.approx(10 * 3 ** 0.5)
    assert "jdr,hidden,0.0" in report_csv(rep) and "jdr,visible,1.0" in report_csv(rep)
    vis[:] = True
    assert build_report({**pred, "vis": vis}, joint_names_for("h36m", 17), 6.55, 0.5)["jdr"]["hidden"] is None


def test_skipose_demo_set_root_is_the_readers_root(tmp_path, monkeypatch):
    """`--dataset skipose` without --data-root: the generated set is read from its
    Ski-PosePTZ-CameraDataset-png folder (it was handed the folder above and refused)."""
    import mvpose.data.demo as demo
    from mvpose.data.skipose import SkiPoseDataset
    from mvpose.data.synth import generate

    monkeypatch.setenv("MVPOSE_DATA", str(tmp_path))
    real = generate

    def small(root, **kw):
        return real(root, **{**kw, "subjects": (1, 6), "frames": 1, "workers": 1})

    monkeypatch.setattr("mvpose.data.synth.generate", small)
    root = demo.ensure_demo_data("skipose")
    assert root == tmp_path / "synth_skipose" / "Ski-PosePTZ-CameraDataset-png"
    assert len(SkiPoseDataset(root, split="train")) > 0 and len(SkiPoseDataset(root, split="test")) > 0
    assert demo.ensure_demo_data("skipose") == root  # marked complete: found again, not regenerated
