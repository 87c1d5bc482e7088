"""Equivalence with the official PPT code (github HowieMa/PPT) on the same weights and inputs.

The fixture (``tests/fixtures/official_ppt/ppt_s_reduced.pt``, made by ``scripts/make_official_fixture.py``
from the official classes) holds a reduced official TokenPose-S state dict, the multi-view model's extra
``pos_3d_linear``, fixed inputs and the official outputs. Here the state dicts go through mvpose's
converter and mvpose's models must reproduce the heatmaps to 1e-4 and the kept token indices exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import mvpose
from conftest import panel_ink
from mvpose.cli import main
from mvpose.engine.config import DEFAULTS, ConfigError, deep_update
from mvpose.engine.train import build_model_from_config
from mvpose.models.convert import COCO_TO_H36M_TOKENS, ConversionError, convert_file, convert_state_dict

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "official_ppt" / "ppt_s_reduced.pt"
ATOL = 1e-4


@pytest.fixture(scope="module")
def fx() -> dict:
    data = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    f32 = lambda sd: {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}  # noqa: E731
    data["single"] = f32(data["official_state_dict"])
    data["multi"] = {**data["single"], **f32(data["pos_3d_linear"])}
    data["images"] = data["images"].float()
    return data


def _write_official(tmp_path: Path, state: dict, name: str, wrap: bool = True) -> Path:
    """As the official training scripts save: DataParallel's ``module.`` prefix, under ``state_dict``."""
    path = tmp_path / name
    body = {f"module.{k}": v for k, v in state.items()}
    torch.save({"state_dict": body, "epoch": 300} if wrap else body, path)
    return path


@pytest.mark.parametrize("key, ratio, name", [("tokenpose_r1", 1.0, "tokenpose_s_reduced.pth"),
                                              ("ppt_r07", 0.7, "ppt_s_reduced.pth")])
def test_single_view_matches_official(tmp_path, fx, key, ratio, name):
    src = _write_official(tmp_path, fx["single"], name)
    dst = tmp_path / "converted.pt"
    record = convert_file(src, dst)  # the keep ratio follows the file name: ppt -> 0.7, else 1
    assert record["dataset"] == "coco" and record["model"] == ("ppt_s" if ratio < 1 else "tokenpose_s")
    assert set(torch.load(dst, weights_only=True)) >= {"model", "config", "model_config", "converted_from"}
    model, cfg = mvpose.load_model(dst)
    assert model.keep_ratio == ratio and cfg["dataset"]["name"] == "coco"
    ref = fx["outputs"][key]
    with torch.no_grad():
        out = model(fx["images"][:2])
    assert (out["heatmaps"] - ref["heatmaps"]).abs().max().item() < ATOL
    assert ref["heatmaps"].abs().max() > 1.0  # the comparison is not between near-zero maps
    assert torch.equal(out["kept_indices"], ref["kept"])
    assert out["kept_indices"].shape[1] == (48 if ratio == 1 else 17)  # 48 -> 34 -> 24 -> 17 with r = 0.7


def test_multiview_with_3d_pe_matches_official(tmp_path, fx):
    src = _write_official(tmp_path, fx["multi"], "multiview_model_best.pth", wrap=False)
    dst = tmp_path / "mv.pt"
    convert_file(src, dst)
    model, cfg = mvpose.load_model(dst)
    # The official default: 10 layers per view with HTI at 3, 6, 9, then 2 fusion layers, r = 0.7.
    assert (cfg["model"]["fusion_layers"], cfg["model"]["prune_layers"], model.ppt.keep_ratio) == (2, [3, 6, 9], 0.7)
    assert cfg["dataset"]["name"] == "h36m" and cfg["dataset"]["views"] == 4
    ref = fx["outputs"]["multiview_r07"]
    # mvpose takes the ray direction; the official model the ray point and the camera centre.
    rays = (fx["rays"] - fx["centers"][:, None])[None]  # (1, V, N, 3)
    with torch.no_grad():
        out = model(fx["images"][None], rays=rays)
        no_pe = model(fx["images"][None], rays=torch.ones_like(rays))
    assert (out["heatmaps"][0] - ref["heatmaps"]).abs().max().item() < ATOL
    assert torch.equal(out["kept_indices"][0], ref["kept"])
    assert (no_pe["heatmaps"][0] - ref["heatmaps"]).abs().max().item() > 100 * ATOL  # the 3D PE matters
    # the ray's length does not: it is normalised, as the official normalises centre -> point
    with torch.no_grad():
        scaled = model(fx["images"][None], rays=rays * 7.5)
    assert (scaled["heatmaps"] - out["heatmaps"]).abs().max().item() < ATOL


def test_unmappable_keys_and_wrong_shapes_are_errors_naming_the_file(fx):
    state = dict(fx["single"])
    with pytest.raises(ConversionError, match=r"bad\.pth: 1 key\(s\) map to no mvpose weight.*features\.extra_head"):
        convert_state_dict({**state, "features.extra_head.weight": torch.zeros(3)}, "bad.pth")
    wrong = {**state, "features.transformer.layers.2.1.fn.fn.net.3.bias": torch.zeros(5)}
    with pytest.raises(ConversionError, match=r"bad\.pth: 1 shape\(s\) do not fit.*layers\.2\.mlp\.fc2\.bias"):
        convert_state_dict(wrong, "bad.pth")
    missing = {k: v for k, v in state.items() if "layers.4.0.fn.to_qkv" not in k}
    with pytest.raises(ConversionError, match=r"not in the file.*layers\.4\.attn\.qkv\.weight"):
        convert_state_dict(missing, "bad.pth")
    with pytest.raises(ConversionError, match="not an official TokenPose / PPT checkpoint"):
        convert_state_dict({"backbone.conv.weight": torch.zeros(1)}, "other.pth")
    learnable = {**state, "features.pos_embedding": torch.randn_like(state["features.pos_embedding"])}
    with pytest.raises(ConversionError, match="learnable"):
        convert_state_dict(learnable, "bad.pth")


def test_convert_weights_cli(tmp_path, fx):
    src = _write_official(tmp_path, fx["single"], "ppt_s_reduced.pth")
    dst = tmp_path / "out.pt"
    r = CliRunner().invoke(main, ["convert-weights", str(src), str(dst), "--keep-ratio", "0.8"])
    assert r.exit_code == 0, r.output
    assert "TokenPose-S/PPT-S D12, 64x48, 17 joints (coco)" in r.output and "keep ratio 0.8" in r.output
    assert mvpose.load_model(dst)[0].keep_ratio == 0.8
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {"features.keypoint_token": torch.zeros(1, 17, 16)}}, bad)
    r = CliRunner().invoke(main, ["convert-weights", str(bad), str(tmp_path / "x.pt")])
    assert r.exit_code != 0 and "bad.pth" in r.output


def test_pretrained_official_file_maps_coco_tokens_to_h36m(tmp_path, fx):
    """``model.pretrained`` takes the official COCO file; Human3.6M training maps its keypoint tokens."""
    src = _write_official(tmp_path, fx["single"], "ppt_s_ratio_07_coco_reduced.pth")
    _, single_cfg, _ = convert_state_dict(fx["single"], "ppt_s.pth")
    model_cfg = {k: v for k, v in single_cfg.items() if k != "name"}
    model_cfg.update(name="mv_ppt_s", fusion_layers=2, prune_layers=[3, 6, 9], use_3d_pe=True, pretrained=str(src))
    cfg = deep_update(DEFAULTS, {"model": model_cfg, "dataset": {"name": "h36m"}})
    model = build_model_from_config(cfg)
    coco = fx["single"]["features.keypoint_token"]
    assert torch.equal(model.ppt.keypoint_tokens, coco[:, list(COCO_TO_H36M_TOKENS)])
    assert torch.equal(model.ppt.keypoint_tokens[0, 9], coco[0, 0])  # H36M nose <- COCO nose
    assert torch.equal(model.ppt.head[3].weight, fx["single"]["features.mlp_head.3.weight"])
    # COCO training keeps the COCO order
    model = build_model_from_config(deep_update(cfg, {"dataset": {"name": "coco"}}))
    assert torch.equal(model.ppt.keypoint_tokens, coco)
    with pytest.raises(FileNotFoundError, match="model.pretrained.*missing.pth"):
        build_model_from_config(deep_update(cfg, {"model": {"pretrained": str(tmp_path / "missing.pth")}}))
    bad = tmp_path / "bad.pth"
    torch.save({"features.keypoint_token": torch.zeros(1, 17, 16), "features.other": torch.zeros(2)}, bad)
    with pytest.raises(ConfigError, match="model.pretrained.*bad.pth"):
        build_model_from_config(deep_update(cfg, {"model": {"pretrained": str(bad)}}))


@pytest.mark.parametrize("arch, expected", [
    ("ppt_s_coco_256x192", dict(name="ppt_s", backbone="stem", image_size=[256, 192], heatmap_size=[64, 48],
                                patch_size=[4, 3], num_joints=17, depth=12, prune_layers=[3, 6, 9],
                                scale_with_head=False, head_hidden=384)),
    ("ppt_s_mpii_256x256", dict(name="ppt_s", backbone="stem", image_size=[256, 256], heatmap_size=[64, 64],
                                patch_size=[4, 4], num_joints=16, depth=12, head_hidden=512)),
    ("ppt_b_coco_256x192", dict(name="ppt_b", backbone="hrnet_w32", image_size=[256, 192], depth=12,
                                prune_layers=[3, 6, 9], scale_with_head=True)),
    ("ppt_l_d6_coco_256x192", dict(name="ppt_l", backbone="hrnet_w48", image_size=[256, 192], depth=6,
                                   prune_layers=[3], scale_with_head=True)),
    ("multiview_ppt_s_h36m_256x256", dict(name="mv_ppt_s", backbone="stem", image_size=[256, 256], depth=12,
                                          fusion_layers=2, prune_layers=[3, 6, 9], use_3d_pe=True, keep_ratio=0.7)),
])
def test_full_size_official_layouts_are_recognised(arch, expected):
    """Keys and shapes of the official full-size models (official_keys.json.gz) give the official configuration."""
    import gzip
    import json

    from mvpose.models.blocks import sine_positional_encoding_2d

    with gzip.open(FIXTURE.with_name("official_keys.json.gz"), "rt") as fh:
        keys = json.load(fh)[arch]
    state = {}
    for k, shape, dtype in keys:
        if k.endswith("pos_embedding"):
            state[k] = sine_positional_encoding_2d(16, 16, 192)[None]  # 16x16 tokens in all
        else:
            state[k] = torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
    _, cfg, info = convert_state_dict(state, f"{arch}.pth")
    assert {k: cfg[k] for k in expected} == expected
    assert info["dataset"] == {16: "mpii", 17: "coco" if "mv" not in cfg["name"] else "h36m"}[cfg["num_joints"]]


def test_converted_models_in_evaluate_and_plot_tokens(tmp_path, fx, coco_root, h36m_root):
    """`mvpose evaluate` (COCO) and `mvpose plot tokens` (multi-view, Human3.6M) take converted checkpoints."""
    import json

    coco, _ = coco_root
    single = tmp_path / "ppt_s.pt"
    convert_file(_write_official(tmp_path, fx["single"], "ppt_s_reduced.pth"), single)
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(single), "--dataset", "coco", "--data-root",
                                  str(coco), "--out", str(tmp_path / "eval")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["model"] == "ppt_s" and report["samples"] > 0 and -1.0 <= report["coco"]["AP"] <= 1.0
    multi = tmp_path / "mv.pt"
    convert_file(_write_official(tmp_path, fx["multi"], "multiview_ppt.pth"), multi)
    png = tmp_path / "tokens.png"
    r = CliRunner().invoke(main, ["plot", "tokens", "--checkpoint", str(multi), "--data-root", str(h36m_root),
                                  "--samples", "1", "-o", str(png)])
    assert r.exit_code == 0, r.output
    views = torch.load(multi, map_location="cpu", weights_only=False)["config"]["dataset"]["views"]
    ink = panel_ink(png, rows=1, cols=views)  # one sample: a row of one panel per view, each drawn
    assert views == 4 and (ink > 0.3).all(), ink
