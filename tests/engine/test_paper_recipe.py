"""The paper pipelines resolve to the official code's recipe (multi-view-PPT experiments-local/h36m/ppt_multi/
256_fusion_enc3_GPE.yaml, lib/core/function.py, lib/utils/utils.py get_optimizer, lib/dataset/joints_dataset.py)."""

from __future__ import annotations

import pytest

from mvpose.data.transforms import AugmentConfig
from mvpose.engine.config import load_pipeline

PAPER = ("h36m_mv_ppt_s", "h36m_sv_ppt_s", "h36m_mv_ppt_s_no3dpe", "skipose_mv_ppt_s")


@pytest.mark.parametrize("name", PAPER)
def test_paper_pipelines_follow_the_official_recipe(name):
    cfg = load_pipeline(name)
    d, t, m = cfg["dataset"], cfg["train"], cfg["model"]
    aug = AugmentConfig(**d["augment_config"])  # the fields the dataset builds its augmentation from
    assert (aug.scale_factor, aug.rotation_factor, aug.flip_prob, aug.half_body_prob, aug.color_jitter) == (0, 0, 0, 0, 0)
    assert d["image_size"] == [256, 256] and d["heatmap_size"] == [64, 64] and d["sigma"] == 2.0
    assert t["epochs"] == 20 and t["batch_size"] == 8
    assert t["lr"] == 1.0e-3 and t["lr_steps"] == [10, 15] and t["lr_factor"] == 0.1
    assert t["weight_decay"] == 0.0 and not t["grad_clip"]
    assert m["keep_ratio"] == 0.7 and t["keep_ratio_warmup_epochs"] == 0 and t["keep_ratio_decay_epochs"] == 0
    assert d["views"] == (6 if name.startswith("skipose") else 4)


def test_paper_pipelines_build_an_unaugmented_dataset_with_target_weights(h36m_root):
    from mvpose.engine.train import build_datasets

    cfg = load_pipeline("h36m_mv_ppt_s")
    cfg["dataset"].update(root=str(h36m_root), train_every=1, image_size=[64, 64], heatmap_size=[16, 16], token_grid=[4, 4])
    ds = build_datasets(cfg, splits=("train",))["train"]
    assert ds.augment and ds.augment_config == AugmentConfig(0.0, 0.0, 0.6, 0.0, 0.0, 8, 0.0)
    a, b = ds[0], ds[0]
    # No augmentation: the crop is the box, the same every epoch, all labelled joints (hidden ones too) weighted.
    assert (a["image"] == b["image"]).all() and not a["flipped"] and (a["rotation"] == 0).all()
    assert a["target_weight"].sum() > 0
