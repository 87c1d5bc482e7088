"""COCO keypoint evaluation (AP / AR through pycocotools) and the two-step guided ViTransPose flow,
on small COCO-format sets written by ``conftest.write_coco``."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import write_coco
from torch.utils.data import DataLoader

from mvpose import metrics
from mvpose.cli import main
from mvpose.data import collate
from mvpose.data.coco import COCODataset
from mvpose.data.targets import heatmap_targets
from mvpose.engine.evaluate import build_report, coco_results, evaluate_coco, joint_names_for, predict
from mvpose.models.base import PoseModel

TINY = ["--set", "dataset.image_size=[128, 96]", "--set", "dataset.heatmap_size=[32, 24]",
        "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2", "--set", "train.batch_size=2",
        "--set", "train.workers=0", "--set", "eval.batch_size=8"]
COCO_KEYS = {"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_eval")
    write_coco(root, "train2017", num_images=3, seed=1)
    write_coco(root, "val2017", num_images=4, seed=2)
    return root


def ground_truth_predictions(ds: COCODataset) -> dict:
    """:func:`predict`-style arrays whose predictions are the annotations themselves."""
    gt2d = np.stack([g.views[0].joints_2d for g in ds.groups])[:, None]
    return {"pred2d": gt2d.copy(), "conf": np.ones(gt2d.shape[:-1]), "gt2d": gt2d,
            "vis": np.stack([g.views[0].joints_vis for g in ds.groups])[:, None] > 0,
            "image_id": np.array([g.extra["image_id"] for g in ds.groups])}


def test_ground_truth_keypoints_score_ap_one_and_errors_lower_it(coco, tmp_path):
    ds = COCODataset(coco, "val")
    pred = ground_truth_predictions(ds)
    stats = evaluate_coco(pred, ds.coco, tmp_path / "results.json")
    assert set(stats) == COCO_KEYS
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)
    written = json.loads((tmp_path / "results.json").read_text())
    assert len(written) == len(ds) == 8  # two labelled people per image; crowd and empty ones skipped
    assert {r["category_id"] for r in written} == {1} and all(len(r["keypoints"]) == 51 for r in written)
    assert sorted({r["image_id"] for r in written}) == sorted(ds.coco.getImgIds())

    rng = np.random.default_rng(0)
    noisy = dict(pred, pred2d=pred["pred2d"] + rng.normal(0.0, 6.0, pred["pred2d"].shape))
    ap_noisy = evaluate_coco(noisy, ds.coco, tmp_path / "noisy.json")["AP"]
    assert ap_noisy < 0.9
    # Results filed under the wrong image match nobody: the ids are what pycocotools pairs on.
    swapped = dict(pred, image_id=np.roll(pred["image_id"], 2))
    assert evaluate_coco(swapped, ds.coco, tmp_path / "swapped.json")["AP"] < 0.1

    # The score: mean confidence of the joints above 0.2 (times box score 1).
    conf = np.full(pred["conf"].shape, 0.1)
    conf[:, :, :4] = [0.5, 0.7, 0.9, 0.3]
    assert coco_results(dict(pred, conf=conf))[0]["score"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="image ids not in the ground truth"):
        metrics.coco_keypoint_ap(ds.coco, [dict(written[0], image_id=999)])

    report = build_report(pred, joint_names_for("coco", 17))
    assert report["mpjpe_mm"] is None and report["pa_mpjpe_mm"] is None and "no 3D" in report["note"]
    assert report["jdr"]["overall"] == 1.0


class GaussianOracle(PoseModel):
    """Stand-in single-view model: UDP Gaussians at the ground-truth crop joints of the current
    batch; a second call on the batch sees the horizontally flipped crops (the flip test) and
    answers for them (mirrored, left and right swapped). The test images are blank, so the crops
    alone cannot tell."""

    def __init__(self, flip_index):
        super().__init__()
        self.batch, self.calls = None, 0
        self.flip_index = list(flip_index)

    def forward(self, images):
        joints = self.batch["joints_2d_crop"].flatten(0, 1).double()  # (B, J, 2)
        H, W = images.shape[-2:]
        self.calls += 1
        if self.calls == 2:
            joints = joints[:, self.flip_index]
            joints[..., 0] = (W - 1) - joints[..., 0]
        heatmaps, _ = heatmap_targets(joints, torch.ones(joints.shape[:2]), (H, W), (H // 4, W // 4), sigma=2.0)
        return {"heatmaps": heatmaps}


@pytest.mark.parametrize("flip", [False, True])
def test_heatmaps_at_ground_truth_crop_joints_give_ap_one(coco, tmp_path, flip):
    """Decoding and the crop -> original mapping lose nothing (and the flip test maps back exactly)."""
    ds = COCODataset(coco, "val", input_hw=(128, 96), heatmap_hw=(32, 24))
    loader = DataLoader(ds, batch_size=3, collate_fn=collate)
    oracle = GaussianOracle(ds.skeleton.flip_index)

    def batches():
        for b in loader:
            oracle.batch, oracle.calls = b, 0
            yield b

    pred = predict(oracle, batches(), torch.device("cpu"), progress=False, flip_index=ds.skeleton.flip_index if flip else None)
    assert "pred3d" not in pred and pred["pred2d"].shape == (8, 1, 17, 2)
    err = np.linalg.norm(pred["pred2d"] - pred["gt2d"], axis=-1)[pred["vis"]]
    assert err.max() < 0.5  # original pixels
    stats = evaluate_coco(pred, ds.coco, tmp_path / "results.json")
    assert stats["AP"] > 0.99 and stats["AR"] > 0.99


def test_coco_train_evaluate_and_guided_vitranspose_through_the_cli(coco, tmp_path):
    runner = CliRunner()
    base = ["--dataset", "coco", "--data-root", str(coco)]
    # Step 1: the lightweight guide, trained by the same engine on COCO-format data.
    res = runner.invoke(main, ["train", *base, "--model", "lite_hrnet_tiny", *TINY, "--out", str(tmp_path / "guide")])
    assert res.exit_code == 0, res.output
    guide_ckpt = tmp_path / "guide" / "best.pt"
    res = runner.invoke(main, ["evaluate", "--checkpoint", str(guide_ckpt), *base, "--out", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert COCO_KEYS <= set(report["coco"]) and all(-1.0 <= report["coco"][k] <= 1.0 for k in COCO_KEYS)
    assert report["mpjpe_mm"] is None and report["samples"] == 8
    assert "AP50" in res.output and "no 3D ground truth" in res.output
    results = json.loads((tmp_path / "eval" / "report_coco_results.json").read_text())
    assert len(results) == 8 and all(0.0 <= r["score"] for r in results)

    # Step 2: ViTransPose with bone patch selection, guided by that checkpoint.
    guided = ["train", *base, "--model", "vitranspose_tiny_bone", *TINY, "--set", "model.guide=lite_hrnet_tiny"]
    res = runner.invoke(main, [*guided, "--set", f"model.guide_checkpoint={tmp_path / 'nothing.pt'}", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "nothing.pt does not exist" in res.output
    res = runner.invoke(main, [*guided, "--set", f"model.guide_checkpoint={guide_ckpt}", "--out", str(tmp_path / "vit")])
    assert res.exit_code == 0, res.output

    guide_state = torch.load(guide_ckpt, map_location="cpu", weights_only=True)["model"]
    vit = torch.load(tmp_path / "vit" / "last.pt", map_location="cpu", weights_only=True)
    saved_guide = {k[len("guide."):]: v for k, v in vit["model"].items() if k.startswith("guide.")}
    assert saved_guide.keys() == guide_state.keys()
    for k, v in guide_state.items():  # weights and BatchNorm statistics untouched by the training
        assert torch.equal(saved_guide[k], v), k
    # Only the ViTransPose's own parameters have optimiser state.
    from mvpose.engine.runner import load_model

    model, _ = load_model(tmp_path / "vit" / "last.pt")
    own = [n for n, _ in model.named_parameters() if not n.startswith("guide.")]
    assert len(vit["optimizer"]["state"]) == len(own)
    assert not any(p.requires_grad for p in model.guide.parameters()) and not model.guide.training
    # The checkpoint carries the guide: evaluation no longer needs the guide file.
    guide_ckpt.rename(tmp_path / "guide" / "moved.pt")
    res = runner.invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "vit" / "last.pt"), *base])
    assert res.exit_code == 0, res.output
    assert COCO_KEYS <= set(json.loads((tmp_path / "vit" / "report.json").read_text())["coco"])


def test_guide_checkpoint_of_another_architecture_is_named(tmp_path):
    from mvpose.models import build_model

    guide = build_model("lite_hrnet_tiny", image_size=(128, 96), heatmap_size=(32, 24))
    torch.save({"model": guide.state_dict(), "config": {"model": {"name": "lite_hrnet_tiny"}}}, tmp_path / "g.pt")
    with pytest.raises(ValueError, match=r"g\.pt: holds model 'lite_hrnet_tiny', but the guide is 'lite_hrnet_18'"):
        build_model("vitranspose_tiny_bfs", guide="lite_hrnet_18", guide_checkpoint=str(tmp_path / "g.pt"))
    state = guide.state_dict()
    state.pop(next(iter(state)))
    torch.save(state, tmp_path / "raw.pt")  # a raw state dict is accepted, but must fit
    with pytest.raises(ValueError, match=r"raw\.pt: does not fit the architecture of guide 'lite_hrnet_tiny': tensors 1 missing"):
        build_model("vitranspose_tiny_bfs", guide_checkpoint=str(tmp_path / "raw.pt"))
    torch.save(guide.state_dict(), tmp_path / "raw.pt")
    model = build_model("vitranspose_tiny_bfs", guide_checkpoint=str(tmp_path / "raw.pt"))
    assert all(torch.equal(model.guide.state_dict()[k], v) for k, v in guide.state_dict().items())
