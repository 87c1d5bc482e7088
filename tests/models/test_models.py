"""Tests of mvpose.models: blocks, backbones, PPT / HTI, multi-view PPT, registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mvpose.models import (
    MultiViewPPT,
    PPT,
    TransformerBlock,
    build_model,
    keep_ratio_schedule,
    list_models,
    sine_positional_encoding_2d,
    token_pixel_centers,
)
from mvpose.models.backbones import build_backbone
from mvpose.models.blocks import Attention
from mvpose.models.ppt import gather_tokens, num_kept_tokens, select_human_tokens


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _rays(b: int, v: int, n: int) -> torch.Tensor:
    return F.normalize(torch.randn(b, v, n, 3), dim=-1)


# ----------------------------------------------------------------------------- blocks


def _explicit_attention(attn: Attention, x: torch.Tensor, keep: torch.Tensor | None = None):
    """Textbook multi-head attention from the module's weights: (out, weights (B, H, N, N))."""
    b, n, d = x.shape
    h, dh = attn.heads, attn.head_dim
    q, k, v = (x @ attn.qkv.weight.T).split(d, dim=-1)
    q, k, v = (t.view(b, n, h, dh).transpose(1, 2) for t in (q, k, v))
    logits = q @ k.transpose(-1, -2) * attn.scale
    if keep is not None:
        logits = logits.masked_fill(~keep[:, None, None, :], float("-inf"))
    weights = logits.softmax(-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, d)
    return attn.proj(out), weights


def test_attention_matches_explicit_softmax_and_returns_requested_rows():
    attn = Attention(32, heads=4, scale=0.1)
    x = torch.randn(2, 10, 32)
    out, rows = attn(x, attn_rows=slice(0, 3))
    ref_out, ref_w = _explicit_attention(attn, x)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    assert rows.shape == (2, 3, 10)
    torch.testing.assert_close(rows, ref_w[:, :, :3].mean(1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(rows.sum(-1), torch.ones(2, 3))


def test_key_padding_mask_hides_padded_keys():
    attn = Attention(16, heads=2)
    x = torch.randn(2, 7, 16)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[0, 5:] = True
    out, rows = attn(x, key_padding_mask=padding, attn_rows=slice(0, 2))
    ref_out, ref_w = _explicit_attention(attn, x, keep=~padding)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rows, ref_w[:, :, :2].mean(1), atol=1e-6, rtol=1e-5)
    assert rows[0, :, 5:].abs().max() == 0
    # Changing padded tokens changes nothing for the queries that are not padding.
    y = x.clone()
    y[0, 5:] += 10.0
    out_y, _ = attn(y, key_padding_mask=padding)
    torch.testing.assert_close(out_y[0, :5], out[0, :5], atol=1e-5, rtol=1e-5)


def test_transformer_block_is_attend_then_feed_forward():
    block = TransformerBlock(24, heads=3, mlp_ratio=2.0).eval()
    x = torch.randn(3, 9, 24)
    y, _ = block.attend(x)
    torch.testing.assert_close(block(x), block.feed_forward(y))
    # Pre-norm: x + attn(LN(x)), then + mlp(LN(.)).
    a, _ = block.attn(block.norm1(x))
    torch.testing.assert_close(y, x + a)


def test_sine_positional_encoding_2d_layout():
    h, w, d = 4, 3, 16
    pe = sine_positional_encoding_2d(h, w, d)
    assert pe.shape == (h * w, d)
    grid = pe.view(h, w, d)
    # First half depends on the row only, second half on the column only.
    assert torch.allclose(grid[:, :1, : d // 2], grid[:, :, : d // 2])
    assert torch.allclose(grid[:1, :, d // 2 :], grid[:, :, d // 2 :])
    # Entry (row 2, feature 0) = sin(3 / h * 2 pi); (col 1, feature d/2 + 1) = cos(2 / w * 2 pi).
    assert math.isclose(grid[2, 0, 0].item(), math.sin(3 / h * 2 * math.pi), abs_tol=1e-5)
    assert math.isclose(grid[0, 1, d // 2 + 1].item(), math.cos(2 / w * 2 * math.pi), abs_tol=1e-5)
    assert len({tuple(r.tolist()) for r in pe.round(decimals=4)}) == h * w


# -------------------------------------------------------------------------- backbones


@pytest.mark.parametrize("name, channels", [("stem", 256), ("hrnet_w32", 32), ("hrnet_w48", 48)])
def test_backbones_give_stride_4_features(name, channels):
    net = build_backbone(name).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, 32, 48))
    assert net.out_channels == channels
    assert y.shape == (2, channels, 8, 12)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="hrnet_w32"):
        build_backbone("resnet50")


# ------------------------------------------------------------------------ PPT and HTI


def test_keep_ratio_schedule_is_a_cosine_from_one_to_target():
    assert keep_ratio_schedule(0, 100, 0.7) == 1.0
    assert keep_ratio_schedule(100, 100, 0.7) == pytest.approx(0.7)
    assert keep_ratio_schedule(250, 100, 0.7) == pytest.approx(0.7)
    assert keep_ratio_schedule(50, 100, 0.7) == pytest.approx(0.85)
    assert keep_ratio_schedule(25, 100, 0.7) == pytest.approx(0.7 + 0.3 * (1 + math.cos(math.pi / 4)) / 2)
    assert keep_ratio_schedule(5, 100, 0.7, warmup=10) == 1.0
    assert keep_ratio_schedule(60, 100, 0.7, warmup=10) == pytest.approx(0.85)
    values = [keep_ratio_schedule(t, 100, 0.6) for t in range(0, 101, 5)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError):
        keep_ratio_schedule(0, 100, 0.0)


def test_select_human_tokens_on_hand_built_scores():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.0, 0.5, 0.2, 0.7, 0.4, 0.6],
                           [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.2]])
    keep = select_human_tokens(scores, 0.3)  # ceil(3.0) = 3
    assert keep.shape == (2, 3)
    assert set(keep[0].tolist()) == {1, 3, 7}
    assert set(keep[1].tolist()) == {0, 8, 9}
    assert select_human_tokens(scores, 0.25).shape == (2, 3)  # ceil(2.5)
    x = torch.arange(20.0).view(2, 10, 1).expand(2, 10, 4)
    torch.testing.assert_close(gather_tokens(x, keep)[..., 0], torch.gather(x[..., 0], 1, keep))


def test_num_kept_tokens_follows_the_paper():
    # 256 visual tokens, r = 0.7, three HTI steps: 180, 126, 89 (the paper's "88" is 256 * 0.7^3).
    counts, n = [], 256
    for _ in range(3):
        n = num_kept_tokens(n, 0.7)
        counts.append(n)
    assert counts == [180, 126, 89]
    assert num_kept_tokens(100, 0.7) == 70
    assert num_kept_tokens(10, 1.0) == 10


def test_ppt_output_shapes_and_pruned_counts():
    model = build_model("ppt_tiny").eval()
    for b in (1, 3):
        with torch.no_grad():
            out = model(torch.randn(b, 3, 128, 128))
        assert out["heatmaps"].shape == (b, 17, 32, 32)
        assert out["token_grid"] == (16, 16)
        kept = out["kept_indices"]
        assert kept.shape == (b, num_kept_tokens(num_kept_tokens(256, 0.7), 0.7))  # 2 HTI steps
        assert kept.min() >= 0 and kept.max() < 256
        assert all(len(set(row.tolist())) == kept.shape[1] for row in kept)


def test_ppt_with_keep_ratio_one_is_tokenpose():
    tokenpose = build_model("tokenpose_s", image_size=(64, 48), heatmap_size=(16, 12), patch_size=(2, 2),
                            depth=4).eval()
    ppt = build_model("ppt_s", image_size=(64, 48), heatmap_size=(16, 12), patch_size=(2, 2), depth=4,
                      prune_layers=(1, 2)).eval()
    ppt.load_state_dict(tokenpose.state_dict())
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        ref = tokenpose(x)
        same = ppt(x, keep_ratio=1.0)
        pruned = ppt(x)
    assert torch.equal(same["heatmaps"], ref["heatmaps"])
    full = torch.arange(48).expand(2, 48)
    assert torch.equal(same["kept_indices"], full) and torch.equal(ref["kept_indices"], full)
    assert pruned["kept_indices"].shape == (2, 24)  # 48 -> 34 -> 24
    assert not torch.allclose(pruned["heatmaps"], ref["heatmaps"])
    ppt.set_keep_ratio(1.0)
    with torch.no_grad():
        assert torch.equal(ppt(x)["heatmaps"], ref["heatmaps"])
    with pytest.raises(ValueError):
        ppt.set_keep_ratio(1.5)


def test_hti_keeps_the_tokens_with_most_keypoint_attention():
    """Recompute the HTI score by hand (head-averaged softmax of the keypoint queries,
    summed over joints) and check the model keeps exactly its top-k tokens."""
    model = build_model("ppt_tiny", prune_layers=(2,), keep_ratio=0.4).eval()
    x = torch.randn(2, 3, 128, 128)
    j = model.num_joints
    with torch.no_grad():
        tokens, pos = model.embed(x)
        for idx in range(2):
            if idx > 0:
                tokens = torch.cat([tokens[:, :j], tokens[:, j:] + pos], 1)
            tokens = model.layers[idx](tokens)
        tokens = torch.cat([tokens[:, :j], tokens[:, j:] + pos], 1)
        layer = model.layers[2]
        _, weights = _explicit_attention(layer.attn, layer.norm1(tokens))
        scores = weights[:, :, :j, j:].mean(1).sum(1)  # (B, N)
        kept = model(x)["kept_indices"]
    k = num_kept_tokens(256, 0.4)
    assert kept.shape == (2, k)
    for b in range(2):
        expected = set(scores[b].topk(k).indices.tolist())
        assert set(kept[b].tolist()) == expected
        # Every kept token scores at least as much as every dropped one.
        dropped = torch.ones(256, dtype=torch.bool)
        dropped[kept[b]] = False
        assert scores[b, kept[b]].min() >= scores[b, dropped].max()


def test_ppt_rejects_wrong_input_shape():
    model = build_model("ppt_tiny")
    with pytest.raises(ValueError, match=r"\(B, 3, 128, 128\)"):
        model(torch.randn(1, 3, 96, 128))


def test_tiny_ppt_overfits_one_batch():
    model = build_model("ppt_tiny", image_size=(64, 64), heatmap_size=(16, 16)).train()
    x = torch.randn(2, 3, 64, 64)
    target = torch.zeros(2, 17, 16, 16)
    target[:, torch.arange(17), torch.randint(0, 16, (17,)), torch.randint(0, 16, (17,))] = 1.0
    target = F.avg_pool2d(target, 5, 1, 2) * 25  # small blobs
    best_constant = F.mse_loss(target.mean().expand_as(target), target).item()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        loss = F.mse_loss(model(x)["heatmaps"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 0.8 * losses[0]
    assert losses[-1] < best_constant  # it fits the blobs, not just their mean


# ---------------------------------------------------------------------- multi-view PPT


@pytest.fixture(scope="module")
def mv_model() -> MultiViewPPT:
    torch.manual_seed(1)
    return build_model("mv_ppt_tiny").eval()


@pytest.mark.parametrize("b, v", [(1, 2), (2, 3), (1, 4)])
def test_multiview_shapes_for_any_number_of_views(mv_model, b, v):
    n = mv_model.ppt.num_tokens
    with torch.no_grad():
        out = mv_model(torch.randn(b, v, 3, 128, 128), _rays(b, v, n))
    assert out["heatmaps"].shape == (b, v, 17, 32, 32)
    assert out["kept_indices"].shape == (b, v, num_kept_tokens(num_kept_tokens(n, 0.7), 0.7))
    assert out["token_grid"] == (16, 16)
    assert out["view_mask"].all() and out["view_mask"].shape == (b, v)


def test_multiview_per_view_tokens_match_single_view_ppt(mv_model):
    """The human tokens of each view are those the shared PPT finds on that image alone."""
    x = torch.randn(2, 3, 3, 128, 128)
    with torch.no_grad():
        out = mv_model(x, _rays(2, 3, 256))
        single = mv_model.ppt(x.flatten(0, 1), keep_ratio=0.7)
    # The single-view run prunes in the same layers, so its kept tokens after the per-view
    # layers agree with the multi-view ones.
    assert torch.equal(out["kept_indices"].flatten(0, 1), single["kept_indices"])


def test_masked_view_is_ignored_by_the_other_views(mv_model):
    x, rays = torch.randn(2, 4, 3, 128, 128), _rays(2, 4, 256)
    mask = torch.tensor([[True, False, True, True], [True, True, True, True]])
    with torch.no_grad():
        out = mv_model(x, rays, view_mask=mask)
        x2, rays2 = x.clone(), rays.clone()
        x2[0, 1] = torch.randn(3, 128, 128) * 5
        x2[0, 1, 0, 0, 0] = float("nan")
        rays2[0, 1] = _rays(1, 1, 256)[0, 0]
        out2 = mv_model(x2, rays2, view_mask=mask)
        without = mv_model(x[:1, [0, 2, 3]], rays[:1, [0, 2, 3]])
    others = [0, 2, 3]
    assert torch.equal(out2["heatmaps"][0, others], out["heatmaps"][0, others])
    assert torch.equal(out2["heatmaps"][1], out["heatmaps"][1])
    torch.testing.assert_close(out["heatmaps"][0, others], without["heatmaps"][0], atol=1e-5, rtol=1e-4)
    assert torch.isfinite(out2["heatmaps"]).all()
    assert out["view_mask"].tolist() == mask.tolist()


def test_multiview_fusion_mixes_views(mv_model):
    x, rays = torch.randn(1, 3, 3, 128, 128), _rays(1, 3, 256)
    with torch.no_grad():
        out = mv_model(x, rays)
        x2 = x.clone()
        x2[0, 2] = torch.randn(3, 128, 128)
        out2 = mv_model(x2, rays)
    assert not torch.allclose(out["heatmaps"][0, 0], out2["heatmaps"][0, 0])


def test_fusion_off_runs_each_view_alone_with_the_same_weights(mv_model):
    isolated = build_model(**{**mv_model.config, "fuse_views": False}).eval()
    isolated.load_state_dict(mv_model.state_dict())
    x, rays = torch.randn(2, 3, 3, 128, 128), _rays(2, 3, 256)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    x[0, 1] = float("nan")  # a missing camera's padding
    with torch.no_grad():
        out = isolated(x, rays, view_mask=mask)
        alone = mv_model(x[1, 2][None, None], rays[1, 2][None, None])
        fused = mv_model(x, rays, view_mask=mask)
    assert out["heatmaps"].shape == (2, 3, 17, 32, 32) and out["kept_indices"].shape == fused["kept_indices"].shape
    torch.testing.assert_close(out["heatmaps"][1, 2], alone["heatmaps"][0, 0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out["heatmaps"][1, 2], fused["heatmaps"][1, 2], atol=1e-4)
    assert torch.isfinite(out["heatmaps"]).all() and out["view_mask"].tolist() == mask.tolist()
    assert isolated.config["fuse_views"] is False and mv_model.config["fuse_views"] is True


def test_multiview_is_view_permutation_equivariant(mv_model):
    x, rays = torch.randn(2, 4, 3, 128, 128), _rays(2, 4, 256)
    perm = [2, 0, 3, 1]
    with torch.no_grad():
        out = mv_model(x, rays)
        out_p = mv_model(x[:, perm], rays[:, perm])
    torch.testing.assert_close(out_p["heatmaps"], out["heatmaps"][:, perm], atol=1e-5, rtol=1e-4)
    assert torch.equal(out_p["kept_indices"], out["kept_indices"][:, perm])


def test_3d_positional_encoding_changes_outputs(mv_model):
    x, rays = torch.randn(1, 2, 3, 128, 128), _rays(1, 2, 256)
    no_pe = build_model("mv_ppt_tiny", use_3d_pe=False).eval()
    no_pe.ppt.load_state_dict(mv_model.ppt.state_dict())
    with torch.no_grad():
        with_pe = mv_model(x, rays)["heatmaps"]
        other_rays = mv_model(x, _rays(1, 2, 256))["heatmaps"]
        without = no_pe(x)["heatmaps"]
    assert not torch.allclose(with_pe, without)
    assert not torch.allclose(with_pe, other_rays)
    # Without 3D encodings the rays are not needed and not used.
    with torch.no_grad():
        assert torch.equal(no_pe(x, _rays(1, 2, 256))["heatmaps"], without)


def test_multiview_input_errors(mv_model):
    x = torch.randn(1, 2, 3, 128, 128)
    with pytest.raises(ValueError, match="rays"):
        mv_model(x)
    with pytest.raises(ValueError, match="rays"):
        mv_model(x, _rays(1, 2, 100))
    with pytest.raises(ValueError, match="no valid view"):
        mv_model(x, _rays(1, 2, 256), view_mask=torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="fusion"):
        build_model("mv_ppt_tiny", prune_layers=(3,))


def test_tiny_multiview_overfits_one_batch():
    model = build_model("mv_ppt_tiny", image_size=(64, 64), heatmap_size=(16, 16)).train()
    x, rays = torch.randn(1, 2, 3, 64, 64), _rays(1, 2, 64)
    target = torch.rand(1, 2, 17, 16, 16) ** 8
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = F.mse_loss(model(x, rays)["heatmaps"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_token_pixel_centers():
    centers = token_pixel_centers((256, 192), (16, 16))
    assert centers.shape == (256, 2)
    # Token (0, 0) covers pixels 0..11 horizontally and 0..15 vertically.
    torch.testing.assert_close(centers[0], torch.tensor([5.5, 7.5]))
    # Row-major: token 17 is row 1, column 1.
    torch.testing.assert_close(centers[17], torch.tensor([12 + 5.5, 16 + 7.5]))
    torch.testing.assert_close(centers[-1], torch.tensor([191 - 5.5, 255 - 7.5]))


# -------------------------------------------------------------------------- registry


def test_registry_lists_the_paper_configs():
    names = set(list_models())
    expected = {"tokenpose_s", "ppt_s", "ppt_b", "ppt_l", "mv_ppt_s", "mv_ppt_b", "ppt_tiny", "mv_ppt_tiny"}
    assert expected <= names
    with pytest.raises(ValueError, match="ppt_s"):
        build_model("no_such_model")


@pytest.mark.parametrize("name", ["ppt_tiny", "mv_ppt_tiny"])
def test_config_rebuilds_the_same_model(name):
    model = build_model(name, keep_ratio=0.6).eval()
    config = model.config
    assert config["name"] == name and config["keep_ratio"] == 0.6
    assert isinstance(config["image_size"], list)  # plain, serialisable values
    clone = build_model(**config).eval()
    clone.load_state_dict(model.state_dict())
    assert clone.config == config
    if name == "ppt_tiny":
        x = (torch.randn(1, 3, 128, 128),)
    else:
        x = (torch.randn(1, 2, 3, 128, 128), _rays(1, 2, 256))
    with torch.no_grad():
        assert torch.equal(clone(*x)["heatmaps"], model(*x)["heatmaps"])


def test_paper_config_hyper_parameters():
    with torch.device("meta"):  # structure only
        ppt_s = build_model("ppt_s")
        mv = build_model("mv_ppt_s")
    assert isinstance(ppt_s, PPT)
    assert ppt_s.token_grid == (16, 16) and len(ppt_s.layers) == 12
    assert ppt_s.prune_layers == (3, 6, 9) and ppt_s.keep_ratio == 0.7
    assert ppt_s.layers[0].attn.heads == 8 and ppt_s.layers[0].mlp.fc1.out_features == 576
    assert mv.token_grid == (16, 16) and mv.fusion_layers == 3


def test_zero_init_fusion_layer_starts_at_the_single_view_predictions():
    """A fusion layer the pretrained PPT lacks, zero-initialised, is the identity: with the
    single-view weights loaded, the multi-view model predicts what the single-view one does, view by
    view; without zero_init_fusion it does not."""
    torch.manual_seed(0)
    sv = build_model("ppt_tiny").eval()
    images = torch.randn(2, 4, 3, 128, 128)
    rays = torch.nn.functional.normalize(torch.randn(2, 4, 256, 3), dim=-1)
    with torch.no_grad():
        ref = torch.stack([sv(images[:, i])["heatmaps"] for i in range(4)], 1)
        for zero, same in ((True, True), (False, False)):
            mv = build_model("mv_ppt_tiny", depth=5, fusion_layers=1, zero_init_fusion=zero).eval()
            missing, _ = mv.load_state_dict({f"ppt.{k}": v for k, v in sv.state_dict().items()}, strict=False)
            assert any(k.startswith("ppt.layers.4.") for k in missing)  # the new fusion layer
            out = mv(images, rays=rays)["heatmaps"]
            assert torch.allclose(out, ref, atol=1e-6) is same
    assert mv.config.get("zero_init_fusion") is None  # recorded only when used
