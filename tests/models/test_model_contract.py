"""The engine's model contract (mvpose.models.base.PoseModel), checked on every registered model."""

from __future__ import annotations

import pytest
import torch

from mvpose.data.targets import heatmap_targets, simcc_targets
from mvpose.engine.decode import decode_heatmaps
from mvpose.models import build_model, list_models
from mvpose.models.base import PoseModel, heatmap_loss
from mvpose.models.sharpose import keypoint_similarity

IMG = (128, 96)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_implements_the_contract(name):
    with torch.device("meta"):
        model = build_model(name)
    assert isinstance(model, PoseModel)
    assert model.output_kind in ("heatmap", "simcc")
    assert isinstance(model.multiview, bool) and model.multiview == name.startswith("mv_")
    assert model.config["name"] == name
    expected = model.config.get("keep_ratio")
    assert model.scheduled_keep_ratio == (None if expected is None else pytest.approx(expected))


def _batch(B=2, V=1):
    joints = 12 + torch.rand(B * V, 17, 2) * torch.tensor([71.0, 103.0])  # 12 px inside the crop
    w = torch.ones(B * V, 17)
    w[0, :3] = 0
    target, weight = heatmap_targets(joints, w, IMG, (32, 24), 1.5)
    tx, ty, _ = simcc_targets(joints, w, IMG, 2.0, 2.0)
    unflat = lambda t: t.unflatten(0, (B, V))  # noqa: E731
    return joints, {"target": unflat(target), "target_weight": unflat(weight), "target_x": unflat(tx), "target_y": unflat(ty)}


def test_default_loss_and_predict_are_the_heatmap_ones():
    torch.manual_seed(0)
    model = build_model("lite_hrnet_tiny")
    joints, batch = _batch(B=2, V=3)
    out = {"heatmaps": torch.rand(2, 3, 17, 32, 24)}
    flat = lambda t: t.flatten(0, 1)  # noqa: E731
    expected = heatmap_loss(flat(out["heatmaps"]), flat(batch["target"]), flat(batch["target_weight"]))
    assert model.loss(out, batch).item() == pytest.approx(expected.item(), rel=1e-6)
    # Heatmaps that are the targets decode to the joints (UDP, sub-pixel).
    xy, conf = model.predict({"heatmaps": batch["target"]}, IMG)
    assert xy.shape == (2, 3, 17, 2) and conf.shape == (2, 3, 17)
    torch.testing.assert_close(xy, decode_heatmaps(batch["target"], IMG)[0])
    labelled = batch["target_weight"].flatten(0, 1) > 0
    assert (xy.flatten(0, 1) - joints).abs()[labelled].max() < 0.2
    model.set_keep_ratio(0.5)  # the default hook does nothing (no token pruning)


def test_sharpose_loss_adds_its_coarse_and_quality_terms():
    torch.manual_seed(0)
    model = build_model("sharpose_tiny").train()
    _, batch = _batch()
    out = {k: v[:, None] for k, v in model(torch.randn(2, 3, *IMG)).items() if isinstance(v, torch.Tensor) and v.dim() > 0}
    target, w = batch["target"][:, 0], batch["target_weight"][:, 0]
    base = heatmap_loss(out["heatmaps"][:, 0], target, w)
    coarse = heatmap_loss(out["coarse_heatmaps"][:, 0], target, w)
    quality = torch.nn.functional.mse_loss(out["quality"][:, 0], keypoint_similarity(out["coarse_heatmaps"][:, 0], target, w))
    assert model.quality_loss_weight == 0.03
    assert model.loss(out, batch).item() == pytest.approx((base + coarse + 0.03 * quality).item(), rel=1e-5)


def test_simcc_model_predicts_its_own_keypoints():
    torch.manual_seed(0)
    model = build_model("hrpvt_tiny").eval()
    joints, batch = _batch()
    out = {k: v[:, None] for k, v in model(torch.randn(2, 3, *IMG)).items()}
    xy, conf = model.predict(out, IMG)
    torch.testing.assert_close(xy, out["keypoints"])
    torch.testing.assert_close(conf, out["confidence"])
    # Logits equal to the labels give a lower loss than random logits.
    perfect = {"simcc_x": batch["target_x"].log().clamp_min(-30), "simcc_y": batch["target_y"].log().clamp_min(-30)}
    assert model.loss(perfect, batch) < 0.1 * model.loss(out, batch)


def test_ppt_keep_ratio_hook_prunes():
    model = build_model("ppt_tiny")
    assert model.scheduled_keep_ratio == pytest.approx(0.7)
    model.set_keep_ratio(0.5)
    assert model.keep_ratio == 0.5
    with pytest.raises(ValueError, match="keep_ratio"):
        model.set_keep_ratio(0.0)
