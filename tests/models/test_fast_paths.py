"""The speed-ups of the PPT models change no result: every optimised path against the plain one.

``_reference_*`` below are the implementations the optimised code replaced (mvpose before the
speed work): the backbone as plain convolution -> batch norm -> ReLU modules on the whole batch,
the 2D encoding added by slicing and concatenating, the fusion layers always given the padding
mask. They run on the same modules as the model, so the comparison holds for any weights.
"""

from __future__ import annotations

import platform

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mvpose.engine.runtime import keep_freed_memory
from mvpose.models import build_model
from mvpose.models.backbones import Bottleneck, ConvBN, StemNet
from mvpose.models.ppt import gather_tokens, select_human_tokens


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: with two, the batched and the image-by-image paths split their reductions
    differently across threads, and the float32 sums then differ in the last bits (1e-5 relative in a
    training step's loss); the comparison is of the two implementations, not of thread schedules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise_batch_norms(model: nn.Module) -> None:
    """Running statistics and affine parameters away from their init, so folding them matters."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _reference_backbone(backbone: StemNet, x: torch.Tensor) -> torch.Tensor:
    def convbn(block: ConvBN, y: torch.Tensor) -> torch.Tensor:
        return nn.Sequential.forward(block, y)  # conv, batch norm, ReLU as separate modules

    def sequence(seq: nn.Sequential, y: torch.Tensor) -> torch.Tensor:
        for block in seq:
            y = convbn(block, y) if isinstance(block, ConvBN) else bottleneck(block, y)
        return y

    def bottleneck(block: Bottleneck, y: torch.Tensor) -> torch.Tensor:
        short = y if isinstance(block.shortcut, nn.Identity) else convbn(block.shortcut, y)
        return F.relu(sequence(block.body, y) + short)

    return sequence(backbone.layer1, sequence(backbone.conv, x))


def _reference_embed(ppt, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    visual = ppt.patch_embed(_reference_backbone(ppt.backbone, images)).flatten(2).transpose(1, 2)
    b = visual.shape[0]
    pos = ppt.pos_2d.expand(b, -1, -1)
    return torch.cat([ppt.keypoint_tokens.expand(b, -1, -1), visual + pos], dim=1), pos


def _reference_encode(ppt, tokens, pos, kept, layers, r):
    j = ppt.num_joints
    for idx in layers:
        layer = ppt.layers[idx]
        if idx > 0 and ppt.pe_every_layer:
            tokens = torch.cat([tokens[:, :j], tokens[:, j:] + pos], dim=1)
        prune = idx in ppt.prune_layers and r < 1.0
        tokens, attn = layer.attend(tokens, attn_rows=slice(0, j) if prune else None)
        if prune:
            keep = select_human_tokens(attn[:, :, j:].sum(dim=1), r)
            tokens = torch.cat([tokens[:, :j], gather_tokens(tokens[:, j:], keep)], dim=1)
            pos = gather_tokens(pos, keep)
            kept = torch.gather(kept, 1, keep)
        tokens = layer.feed_forward(tokens)
    return tokens, pos, kept


def _reference_multiview(model, images, rays, view_mask=None):
    b, v = images.shape[:2]
    if view_mask is None:
        view_mask = torch.ones(b, v, dtype=torch.bool)
    images = torch.where(view_mask[:, :, None, None, None], images, 0.0)
    ppt, j = model.ppt, model.ppt.num_joints
    depth = len(ppt.layers)
    tokens, pos = _reference_embed(ppt, images.flatten(0, 1))
    kept = ppt.full_grid_indices(b * v, images.device)
    tokens, pos, kept = _reference_encode(ppt, tokens, pos, kept, range(depth - model.fusion_layers), ppt.keep_ratio)
    k, d = tokens.shape[1] - j, tokens.shape[2]
    directions = torch.where(view_mask[:, :, None, None], F.normalize(rays, dim=-1), 0.0)
    pos_3d = model.pos_3d(gather_tokens(directions.flatten(0, 1), kept)).reshape(b, v * k, d)
    missing = ~view_mask
    padding = torch.cat([missing.repeat_interleave(j, dim=1), missing.repeat_interleave(k, dim=1)], dim=1)
    pos_2d = pos.reshape(b, v * k, d)
    x = torch.cat([tokens[:, :j].reshape(b, v * j, d), tokens[:, j:].reshape(b, v * k, d)], dim=1)
    for idx in range(depth - model.fusion_layers, depth):
        x = torch.cat([x[:, : v * j], x[:, v * j :] + (pos_2d + pos_3d)], dim=1)
        x = ppt.layers[idx](x, key_padding_mask=padding)
    return ppt.heatmaps(x[:, : v * j].reshape(b, v, j, d)), kept.reshape(b, v, k)


def _inputs(model, b: int, v: int = 4):
    g = torch.Generator().manual_seed(2)
    h, w = model.ppt.image_size
    return torch.randn(b, v, 3, h, w, generator=g), F.normalize(torch.randn(b, v, model.ppt.num_tokens, 3, generator=g), dim=-1)


@pytest.mark.parametrize(
    "name, cfg, b",
    [("mv_ppt_tiny", {}, 3), ("mv_ppt_s", dict(fusion_layers=2, prune_layers=(3, 6, 9)), 1)],
)
def test_multiview_inference_equals_reference(name, cfg, b):
    torch.manual_seed(0)
    model = build_model(name, **cfg).eval()
    _randomise_batch_norms(model)
    images, rays = _inputs(model, b)
    mask = torch.ones(b, 4, dtype=torch.bool)
    mask[0, 1] = False
    with torch.no_grad():
        for view_mask in (None, mask):
            out = model(images, rays=rays, view_mask=view_mask)
            ref, kept = _reference_multiview(model, images, rays, view_mask)
            assert ref.abs().max() > 0.1  # heatmaps of a random model are not all ~0
            torch.testing.assert_close(out["heatmaps"], ref, rtol=0, atol=1e-5)
            # the same human tokens; near-ties may come out of topk in another order
            assert torch.equal(out["kept_indices"].sort(-1).values, kept.sort(-1).values)


def test_single_view_ppt_equals_reference():
    torch.manual_seed(0)
    model = build_model("ppt_tiny").eval()
    _randomise_batch_norms(model)
    x = torch.randn(5, 3, *model.image_size)
    with torch.no_grad():
        out = model(x)
        tokens, pos = _reference_embed(model, x)
        kept = model.full_grid_indices(5, x.device)
        tokens, _, kept = _reference_encode(model, tokens, pos, kept, range(len(model.layers)), model.keep_ratio)
        ref = model.heatmaps(tokens[:, : model.num_joints])
    torch.testing.assert_close(out["heatmaps"], ref, rtol=0, atol=1e-5)
    assert torch.equal(out["kept_indices"].sort(-1).values, kept.sort(-1).values)


def test_backbone_chunking_and_folding_match_the_batched_modules():
    torch.manual_seed(0)
    backbone = StemNet(width=16, blocks=2).eval()
    _randomise_batch_norms(backbone)
    x = torch.randn(3, 3, 32, 48)
    with torch.no_grad():
        ref = _reference_backbone(backbone, x)
        for images in (x, x.contiguous(memory_format=torch.channels_last)):
            torch.testing.assert_close(backbone(images), ref, rtol=0, atol=1e-5)
        # in training the batch statistics are used, exactly as by the plain modules
        backbone.train()
        torch.testing.assert_close(backbone(x), _reference_backbone(backbone, x), rtol=0, atol=1e-5)


def test_fused_onednn_path_follows_weight_changes():
    """The fused CPU inference path packs its folded weights once; a changed parameter or running
    statistic (an optimizer step, load_state_dict) must reach the next call."""
    torch.manual_seed(0)
    backbone = StemNet(width=16, blocks=2).eval()
    _randomise_batch_norms(backbone)
    x = torch.randn(2, 3, 32, 32)
    other = StemNet(width=16, blocks=2).eval()
    _randomise_batch_norms(other)
    with torch.no_grad():
        other.conv[0][0].weight.mul_(-2.0)
        first = backbone(x)
        torch.testing.assert_close(first, _reference_backbone(backbone, x), rtol=0, atol=1e-5)
        backbone.layer1[0].body[1][0].weight.mul_(1.5)  # in place, as an optimizer step
        backbone.layer1[1].body[2][1].running_var.add_(0.5)  # a running statistic
        changed = backbone(x)
        torch.testing.assert_close(changed, _reference_backbone(backbone, x), rtol=0, atol=1e-5)
        assert (changed - first).abs().max() > 1e-2
        backbone.load_state_dict(other.state_dict())
        torch.testing.assert_close(backbone(x), _reference_backbone(other, x), rtol=0, atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(backbone(x), _reference_backbone(other, x), rtol=0, atol=1e-5)


def test_hrnet_inference_equals_unfolded_modules():
    """HRNet's basic blocks end in the fused convolution + residual + ReLU in evaluation."""
    from mvpose.models.backbones import HRNet

    torch.manual_seed(0)
    net = HRNet(32).eval()
    _randomise_batch_norms(net)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fused = net(x)
        # The plain modules: training-mode blocks run convolution, batch norm, ReLU one by one;
        # the batch norms in evaluation use the same running statistics.
        net.train()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        plain = net(x)
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-4 * plain.abs().max().item())


def test_flop_count_sees_the_standard_operators():
    """count_macs runs under a dispatch mode, where the fused oneDNN calls (unknown to it) stay off:
    a 3x3 convolution of 8 -> 16 channels on a 10x10 map is 8 * 16 * 9 * 100 MACs."""
    from mvpose.models.backbones import conv_bn
    from mvpose.models.flops import count_macs

    block = conv_bn(8, 16).eval()
    assert count_macs(block, torch.zeros(1, 8, 10, 10))["dense"] == 8 * 16 * 9 * 100


def test_multiview_training_step_equals_reference():
    """Train mode (batch statistics, in-place residual sums): same loss and same gradients."""
    torch.manual_seed(0)
    model = build_model("mv_ppt_tiny").train()
    images, rays = _inputs(model, 2)
    target = torch.rand(2, 4, 17, *model.ppt.heatmap_size)
    grads = []
    for forward in (lambda: model(images, rays=rays)["heatmaps"], lambda: _reference_multiview(model, images, rays)[0]):
        model.zero_grad(set_to_none=True)
        loss = F.mse_loss(forward(), target)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss, g), (ref_loss, ref_g) = grads
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0)
    assert g.keys() == ref_g.keys() and len(g) > 50
    for n in g:
        torch.testing.assert_close(g[n], ref_g[n], rtol=1e-4, atol=1e-6, msg=n)


def test_keep_freed_memory(monkeypatch):
    import mvpose.engine.runtime as runtime

    monkeypatch.setattr(runtime, "_applied", False)
    monkeypatch.setenv("MVPOSE_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MVPOSE_KEEP_FREED_MEMORY")
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert keep_freed_memory() is True
        assert keep_freed_memory() is True  # applied once, then a no-op


def test_deterministic_algorithms_without_fill_changes_no_value():
    """Training's deterministic mode without the NaN fill of new tensors: the same loss and gradients,
    bit for bit, as with the fill (no kernel of a PPT training step reads memory it did not write)."""
    from mvpose.engine.runtime import deterministic_algorithms

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.utils.deterministic.fill_uninitialized_memory)
    torch.manual_seed(0)
    model = build_model("mv_ppt_tiny", keep_ratio=0.7).train()
    images, rays = torch.randn(2, 2, 3, 128, 128), F.normalize(torch.randn(2, 2, 256, 3), dim=-1)
    target = torch.rand(2, 2, 17, 32, 32)
    results = []
    try:
        for fill in (True, False):
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.utils.deterministic.fill_uninitialized_memory = True
            if not fill:
                deterministic_algorithms()
                assert torch.are_deterministic_algorithms_enabled()
                assert torch.utils.deterministic.fill_uninitialized_memory is False
            model.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(images, rays=rays)["heatmaps"], target)
            loss.backward()
            results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.utils.deterministic.fill_uninitialized_memory = before[2]
    (loss, grads), (loss2, grads2) = results
    assert torch.equal(loss, loss2) and len(grads) == len(grads2) > 50
    assert all(torch.equal(a, b) for a, b in zip(grads, grads2))
