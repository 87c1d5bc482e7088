"""Tests of the monocular baselines: patch selection, ViTransPose, Lite-HRNet, SHaRPose, PVT v2,
HRPVT and SimCC."""

from __future__ import annotations

import math
from collections import deque

import pytest
import torch
from torch import nn

from mvpose.data.targets import heatmap_targets, simcc_targets
from mvpose.models import build_model
from mvpose.models.flops import PAPER_FIGURES, count_macs, count_params
from mvpose.models.lite_hrnet import heatmap_argmax
from mvpose.models.patch_selection import (
    BFS_NEIGHBOR_ORDER,
    bresenham_patch_mask,
    distance_to_keypoints,
    neighbor_patch_mask,
    select_patches,
    selected_token_index,
)
from mvpose.models.pvt import PVTv2, SRAttention
from mvpose.models.sharpose import fine_patch_indices
from mvpose.models.simcc import decode_simcc, simcc_loss
from mvpose.skeletons import get_skeleton

IMG = (128, 96)  # tiny models' input (H, W); 16-pixel patches -> an 8 x 6 grid


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    # Tiny ops on 2 shared cores run far faster on one thread than with two competing ones.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def cells(mask_row: torch.Tensor, w: int) -> set[tuple[int, int]]:
    """Row-major bool mask (N,) -> set of (x, y) patch coordinates."""
    return {(int(i) % w, int(i) // w) for i in mask_row.nonzero()[:, 0]}


def patches(*points: tuple[int, int]) -> torch.Tensor:
    """(1, J, 2) long patch coordinates."""
    return torch.tensor([points], dtype=torch.long)


# ----------------------------------------------------------------------------- patch selection


def test_bfs_neighbors_hand_cases():
    grid = (5, 5)
    # Interior, n = 4: the 4-neighbourhood.
    assert cells(neighbor_patch_mask(patches((2, 2)), grid, 4)[0], 5) == {(2, 2), (2, 1), (2, 3), (1, 2), (3, 2)}
    # n = 2 stops inside the first ring: up then down.
    assert cells(neighbor_patch_mask(patches((2, 2)), grid, 2)[0], 5) == {(2, 2), (2, 1), (2, 3)}
    # n = 0: the keypoint's patch only.
    assert cells(neighbor_patch_mask(patches((2, 2)), grid, 0)[0], 5) == {(2, 2)}
    # Corner: only down and right exist at distance 1; then (0,2) and (1,1) in BFS order.
    assert cells(neighbor_patch_mask(patches((0, 0)), grid, 4)[0], 5) == {(0, 0), (0, 1), (1, 0), (0, 2), (1, 1)}
    # Two keypoints: the union.
    assert cells(neighbor_patch_mask(patches((0, 0), (4, 4)), grid, 1)[0], 5) == {(0, 0), (0, 1), (4, 4), (4, 3)}


def _queue_bfs(src: tuple[int, int], n: int, grid: tuple[int, int]) -> set[tuple[int, int]]:
    """Reference: a plain queue BFS on the bounded grid, first n visited neighbours."""
    h, w = grid
    seen, order, queue = {src}, [src], deque([src])
    while queue and len(order) < n + 1:
        x, y = queue.popleft()
        for dx, dy in BFS_NEIGHBOR_ORDER:
            nxt = (x + dx, y + dy)
            if 0 <= nxt[0] < w and 0 <= nxt[1] < h and nxt not in seen:
                seen.add(nxt)
                order.append(nxt)
                queue.append(nxt)
    return set(order[: n + 1])


def test_bfs_neighbors_match_a_queue_bfs_on_bounded_grids():
    g = torch.Generator().manual_seed(1)
    for _ in range(40):
        h, w = (int(v) for v in torch.randint(1, 9, (2,), generator=g))
        n = int(torch.randint(0, 12, (1,), generator=g))
        pts = torch.stack((torch.randint(0, w, (3,), generator=g), torch.randint(0, h, (3,), generator=g)), -1)
        expected = set().union(*(_queue_bfs((int(x), int(y)), n, (h, w)) for x, y in pts))
        assert cells(neighbor_patch_mask(pts[None], (h, w), n)[0], w) == expected, (h, w, n, pts)


@pytest.mark.parametrize(
    "start, end, expected",
    [
        ((0, 0), (3, 1), {(0, 0), (1, 0), (2, 1), (3, 1)}),
        ((0, 0), (1, 3), {(0, 0), (0, 1), (1, 2), (1, 3)}),
        ((3, 0), (0, 2), {(3, 0), (2, 1), (1, 1), (0, 2)}),
        ((0, 0), (2, 1), {(0, 0), (1, 0), (2, 1)}),  # tie at x = 1: stays on the start side
        ((2, 1), (0, 0), {(2, 1), (1, 1), (0, 0)}),  # ... so the reverse line differs there
        ((0, 2), (3, 2), {(0, 2), (1, 2), (2, 2), (3, 2)}),
        ((1, 3), (1, 0), {(1, 3), (1, 2), (1, 1), (1, 0)}),
        ((2, 2), (2, 2), {(2, 2)}),
        ((0, 0), (3, 3), {(0, 0), (1, 1), (2, 2), (3, 3)}),
    ],
)
def test_bresenham_hand_cases(start, end, expected):
    mask = bresenham_patch_mask(patches(start, end), [(0, 1)], (4, 4))
    assert cells(mask[0], 4) == expected


def _textbook_bresenham(x0: int, y0: int, x1: int, y1: int) -> set[tuple[int, int]]:
    """Reference: integer Bresenham with the error term, stepping the minor axis when D > 0."""
    dx, dy = abs(x1 - x0), abs(y1 - y0)
    sx, sy = (1 if x1 >= x0 else -1), (1 if y1 >= y0 else -1)
    major, minor = (dx, dy) if dx >= dy else (dy, dx)
    d, m, out = 2 * minor - major, 0, set()
    for i in range(major + 1):
        out.add((x0 + sx * i, y0 + sy * m) if dx >= dy else (x0 + sx * m, y0 + sy * i))
        if d > 0:
            m += 1
            d -= 2 * major
        d += 2 * minor
    return out


def test_bresenham_matches_the_textbook_algorithm():
    g = torch.Generator().manual_seed(2)
    pts = torch.randint(0, 9, (60, 2, 2), generator=g)
    masks = bresenham_patch_mask(pts.reshape(1, -1, 2), [(2 * i, 2 * i + 1) for i in range(60)], (9, 9))
    expected = set().union(*(_textbook_bresenham(*map(int, p[0]), *map(int, p[1])) for p in pts))
    assert cells(masks[0], 9) == expected
    for p in pts[:10]:  # one line at a time as well
        one = bresenham_patch_mask(p[None], [(0, 1)], (9, 9))
        assert cells(one[0], 9) == _textbook_bresenham(*map(int, p[0]), *map(int, p[1]))


def test_select_patches_from_pixels():
    # 64 x 64 image, 16-pixel patches: a 4 x 4 grid.
    kp = torch.tensor([[[5.0, 5.0], [60.0, 20.0], [-10.0, 100.0]]])  # patches (0,0), (3,1), clamped (0,3)
    skel = select_patches(kp, (64, 64), (16, 16), "skeleton", 0, [(0, 1)])
    assert cells(skel[0], 4) == {(0, 0), (1, 0), (2, 1), (3, 1), (0, 3)}
    near = select_patches(kp, (64, 64), (16, 16), "neighbors", 1)
    assert cells(near[0], 4) == {(0, 0), (0, 1), (3, 1), (3, 0), (0, 3), (0, 2)}
    with pytest.raises(ValueError, match="limbs"):
        bresenham_patch_mask(patches((0, 0)), [(0, 3)], (4, 4))
    d = distance_to_keypoints(kp[:, :1], (64, 64), (16, 16))
    assert d[0, 0] == 0 and d[0, 5] == 2 and d[0, 15] == 18


def test_selected_token_index_pads_and_budgets():
    mask = torch.tensor([[True, False, True, True, False], [False, False, False, True, False]])
    index, padding = selected_token_index(mask)
    assert index.shape == (2, 3)
    assert set(index[0].tolist()) == {0, 2, 3} and not padding[0].any()
    assert index[1, 0] == 3 and padding[1].tolist() == [False, True, True]
    # A budget of 2 keeps the two selected tokens of highest priority.
    priority = torch.tensor([[0.0, 9.0, 5.0, 1.0, 9.0], [0.0] * 5])
    index, padding = selected_token_index(mask, priority, 2)
    assert index[0].tolist() == [2, 3] and not padding[0].any()


# ----------------------------------------------------------------------------- ViTransPose


def test_vitranspose_registry_and_shapes():
    for name in ("vitranspose_s", "vitranspose_b", "vitranspose_b_bfs", "vitranspose_b_bone", "vitranspose_b_jointtok"):
        with torch.device("meta"):
            model = build_model(name)
        assert model.config["name"] == name and model.multiview is False
    x = torch.randn(2, 3, *IMG)
    kp = torch.rand(2, 17, 2) * torch.tensor([95.0, 127.0])
    for selection in ("none", "neighbors", "skeleton", "joint_tokens"):
        model = build_model("vitranspose_tiny", selection=selection).eval()
        out = model(x, guide_keypoints=kp) if selection in ("neighbors", "skeleton") else model(x)
        assert out["heatmaps"].shape == (2, 17, 32, 24)
        assert out["selected"].shape == (2, 48) and out["token_grid"] == (8, 6)
    # Joint tokens keep ceil(0.5 * 48) patches after layer 0.
    out = build_model("vitranspose_tiny", selection="joint_tokens", keep_ratio=0.5).eval()(x)
    assert out["selected"].sum(1).tolist() == [24, 24]
    # The skeleton variant selects exactly what select_patches gives for the guide keypoints.
    model = build_model("vitranspose_tiny", selection="skeleton", num_neighbors=1).eval()
    out = model(x, guide_keypoints=kp)
    limbs = get_skeleton("coco").limbs
    assert torch.equal(out["selected"], select_patches(kp, IMG, (16, 16), "skeleton", 1, limbs))
    with pytest.raises(ValueError, match="guide_keypoints"):
        model(x)


def test_unselected_patches_are_dropped_and_zeroed():
    model = build_model("vitranspose_tiny", selection="neighbors", num_neighbors=1).eval()
    kp = torch.tensor([[[8.0, 8.0], [40.0, 72.0]], [[88.0, 120.0], [88.0, 120.0]]])
    kp = torch.cat([kp, kp[:, :1].expand(-1, 15, -1)], dim=1)  # 17 joints, 2 distinct per image
    captured = []
    model.decoder.register_forward_pre_hook(lambda mod, args: captured.append(args[0].detach().clone()))
    x = torch.randn(2, 3, *IMG)
    out = model(x, guide_keypoints=kp)
    sel = out["selected"]
    # n = 1 adds the first in-grid BFS neighbour: (0,0)->(0,1), (2,4)->(2,3), corner (5,7)->(5,6).
    assert [cells(s, 6) for s in sel] == [{(0, 0), (0, 1), (2, 4), (2, 3)}, {(5, 7), (5, 6)}]
    fmap = captured[0].flatten(2).transpose(1, 2)  # (B, N, D)
    assert fmap[~sel].abs().max() == 0 and (fmap[sel].abs().sum(-1) > 0).all()

    # Same as encoding the selected tokens alone (no padding, no other patch in attention).
    tokens = model.embed(x)
    for b in range(2):
        t = tokens[b : b + 1, sel[b]]
        for block in model.blocks:
            t = block(t)
        torch.testing.assert_close(fmap[b, sel[b]], model.norm(t)[0], atol=1e-5, rtol=1e-5)

    # Changing unselected image content changes nothing; changing a selected patch does.
    y = x.clone()
    unsel = (~sel[0]).nonzero()[0, 0]
    r, c = int(unsel) // 6, int(unsel) % 6
    y[0, :, 16 * r : 16 * r + 16, 16 * c : 16 * c + 16] += 5.0
    torch.testing.assert_close(model(y, guide_keypoints=kp)["heatmaps"], out["heatmaps"])
    y[0, :, :16, :16] += 5.0  # patch (0, 0) is selected in image 0
    assert not torch.allclose(model(y, guide_keypoints=kp)["heatmaps"][0], out["heatmaps"][0])


def test_vitranspose_runs_its_attached_guide_frozen():
    model = build_model("vitranspose_tiny", selection="skeleton", guide="lite_hrnet_tiny")
    model.train()
    assert not model.guide.training and not any(p.requires_grad for p in model.guide.parameters())
    x = torch.randn(2, 3, *IMG)
    out = model(x)
    expected = heatmap_argmax(model.guide(x)["heatmaps"], IMG)
    torch.testing.assert_close(out["guide_keypoints"], expected)
    assert torch.equal(out["selected"], model.select(expected))
    # A fixed budget gives static shapes and selects at most that many patches.
    budget = build_model("vitranspose_tiny", selection="skeleton", guide="lite_hrnet_tiny", num_selected=5)
    assert (budget(x)["selected"].sum(1) <= 5).all()


# ----------------------------------------------------------------------------- SHaRPose


def test_fine_patch_indices_hand_case():
    # Coarse 2 x 3 grid, fine 4 x 6: coarse patch (row 1, col 1) covers fine rows 2-3, cols 2-3.
    idx = fine_patch_indices(torch.tensor([[4, 0], [5, 2]]), (2, 3), (4, 6))
    assert [sorted(idx[0, :4].tolist()), sorted(idx[0, 4:].tolist())] == [[14, 15, 20, 21], [0, 1, 6, 7]]
    assert [sorted(idx[1, :4].tolist()), sorted(idx[1, 4:].tolist())] == [[16, 17, 22, 23], [4, 5, 10, 11]]


class _FixedQuality(nn.Module):
    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = torch.tensor(values)

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        return self.values


def _record_block0_inputs(model) -> list[torch.Tensor]:
    calls: list[torch.Tensor] = []
    model.blocks[0].register_forward_pre_hook(lambda mod, args: calls.append(args[0].detach().clone()))
    return calls


def test_sharpose_refines_only_when_the_quality_predictor_says_so():
    model = build_model("sharpose_tiny", quality_threshold=0.9).eval()
    x = torch.randn(2, 3, *IMG)
    nc, k, j = 12, model.num_split, 17  # 4 x 3 coarse grid, alpha 0.5 -> 6 split patches
    calls = _record_block0_inputs(model)
    # The fine stage runs through block.forward; the coarse stage calls attend() instead.
    model.quality_predictor = _FixedQuality([0.2, 0.95])
    out = model(x)
    assert out["refined"].tolist() == [True, False]
    assert len(calls) == 1 and calls[0].shape == (1, j + 4 * k + (nc - k), 64)
    torch.testing.assert_close(out["heatmaps"][1], out["coarse_heatmaps"][1])
    full = model(x, refine=True)
    torch.testing.assert_close(out["heatmaps"][0], full["heatmaps"][0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out["heatmaps"][0], out["coarse_heatmaps"][0])
    # Every quality high enough: no fine stage at all.
    calls.clear()
    model.quality_predictor = _FixedQuality([0.95, 0.99])
    out = model(x)
    assert not out["refined"].any() and not calls
    torch.testing.assert_close(out["heatmaps"], out["coarse_heatmaps"])
    # Training refines everything, and refine=False refines nothing.
    assert model.train()(x)["refined"].all() and not model.eval()(x, refine=False)["refined"].any()


def _explicit_keypoint_attention(attn, x: torch.Tensor, rows: slice) -> torch.Tensor:
    """Head-averaged softmax attention of the query rows over all tokens: (B, R, N)."""
    b, n, d = x.shape
    q, k, _ = attn.qkv(x).split(d, dim=-1)
    q = q.view(b, n, attn.heads, -1).transpose(1, 2)
    k = k.view(b, n, attn.heads, -1).transpose(1, 2)
    return ((q @ k.transpose(-1, -2)) * attn.scale).softmax(-1).mean(1)[:, rows]


def test_sharpose_splits_exactly_the_top_alpha_patches():
    model = build_model("sharpose_tiny", depth=3, attention_start=1, alpha=0.34).eval()
    j, nc = 17, 12
    attn_inputs: list[torch.Tensor] = []
    for block in model.blocks:
        block.attn.register_forward_pre_hook(lambda mod, args: attn_inputs.append(args[0].detach().clone()))
    fine_inputs = _record_block0_inputs(model)
    x = torch.randn(2, 3, *IMG)
    out = model(x, refine=True)
    # Scores: EMA (momentum 0.99) over layers 1 and 2 of the keypoint rows' attention, summed.
    scores = torch.zeros(2, nc)
    for layer in (1, 2):
        a = _explicit_keypoint_attention(model.blocks[layer].attn, attn_inputs[layer], slice(1, 1 + j))
        scores = 0.99 * scores + 0.01 * a[:, :, 1 + j :].sum(1)
    torch.testing.assert_close(out["patch_scores"], scores, atol=1e-6, rtol=1e-4)
    k = math.ceil(0.34 * nc)
    assert out["split"].shape == (2, k)
    for b in range(2):
        assert set(out["split"][b].tolist()) == set(scores[b].topk(k).indices.tolist())
    # Fine sequence: J keypoint tokens, 4 fine tokens per split patch, the other coarse tokens
    # as they entered the coarse stage.
    seq = fine_inputs[0]
    assert seq.shape[1] == j + 4 * k + (nc - k)
    raw_coarse = model.coarse_stage(x)["inputs"]
    for b in range(2):
        rest = torch.sort(out["patch_scores"][b], descending=True, stable=True).indices[k:]
        assert not set(rest.tolist()) & set(out["split"][b].tolist())
        torch.testing.assert_close(seq[b, j + 4 * k :], raw_coarse[b, rest])


def test_sharpose_loss_terms():
    model = build_model("sharpose_tiny")
    x = torch.randn(2, 3, *IMG)
    joints = torch.rand(2, 17, 2) * torch.tensor([95.0, 127.0])
    target, w = heatmap_targets(joints, torch.ones(2, 17), IMG, (32, 24), 1.5)
    out = model(x)
    terms = model.loss_terms(out, target, w)
    assert set(terms) == {"coarse", "quality"} and all(v.ndim == 0 and v >= 0 for v in terms.values())
    (terms["coarse"] + terms["quality"]).backward()
    assert model.quality_predictor.mlp[0].weight.grad is not None


# ----------------------------------------------------------------------------- PVT v2, HRPVT, SimCC


def test_pvt_v2_stage_shapes_and_b2_size():
    model = PVTv2("b0")
    outs = model(torch.randn(1, 3, *IMG))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 32, 24), (1, 64, 16, 12), (1, 160, 8, 6), (1, 256, 4, 3)]
    with torch.device("meta"):
        b2 = PVTv2("b2")
        macs = count_macs(b2, torch.empty(1, 3, 224, 224))
    # PVT v2 paper: 25.4 M parameters with the 1000-class head (512 * 1000 + 1000), 4.0 GFLOPs.
    assert count_params(b2) + 513_000 == pytest.approx(25.4e6, rel=0.01)
    assert macs["total"] == pytest.approx(4.0e9, rel=0.03)


def test_sr_attention_uses_reduced_keys():
    attn = SRAttention(16, heads=2, sr_ratio=2)
    x = torch.randn(1, 8 * 6, 16)
    out = attn(x, (8, 6))
    # Explicit: keys/values from the 2x2-strided map (4 x 3 = 12 tokens).
    reduced = attn.norm(attn.sr(x.transpose(1, 2).reshape(1, 16, 8, 6)).flatten(2).transpose(1, 2))
    assert reduced.shape == (1, 12, 16)
    q = attn.q(x).view(1, 48, 2, 8).transpose(1, 2)
    k, v = attn.kv(reduced).view(1, 12, 2, 2, 8).permute(2, 0, 3, 1, 4)
    ref = ((q @ k.transpose(-1, -2)) / math.sqrt(8)).softmax(-1) @ v
    torch.testing.assert_close(out, attn.proj(ref.transpose(1, 2).reshape(1, 48, 16)), atol=1e-5, rtol=1e-5)


def test_simcc_round_trip_and_loss():
    k, sigma = 2.0, 2.0
    joints = torch.tensor([[[0.0, 0.0], [10.25, 33.0], [47.5, 100.75], [95.0, 127.0], [60.3, 5.6]]])
    tx, ty, w = simcc_targets(joints, torch.ones(1, 5), IMG, k, sigma)
    assert tx.shape == (1, 5, 192) and ty.shape == (1, 5, 256)
    logits_x, logits_y = torch.log(tx + 1e-12), torch.log(ty + 1e-12)
    kp, conf = decode_simcc(logits_x, logits_y, k)
    assert (kp - joints).abs().max() <= 0.5 / k + 1e-6  # nearest bin
    assert ((conf > 0) & (conf <= 1)).all()
    # Labels as logits: KL is zero; shifted logits cost more; unweighted joints cost nothing.
    assert simcc_loss(logits_x, logits_y, tx, ty, w) == pytest.approx(0.0, abs=1e-5)
    shifted = simcc_loss(logits_x.roll(6, -1), logits_y, tx, ty, w)
    assert shifted > 0.1
    w0 = w.clone()
    w0[0, 1:] = 0
    assert simcc_loss(logits_x.roll(6, -1), logits_y, tx, ty, w0) == pytest.approx(
        simcc_loss(logits_x[:, :1].roll(6, -1), logits_y[:, :1], tx[:, :1], ty[:, :1], w[:, :1]).item(), rel=1e-5
    )
    ce = simcc_loss(logits_x, logits_y, tx, ty, w, kind="ce")
    assert ce > 0  # the label entropy


def test_hrpvt_outputs_and_insertions():
    x = torch.randn(2, 3, *IMG)
    for stem in ("hrpm", "patch"):
        for insertion in ("none", "vanilla", "layer", "stage"):
            model = build_model("hrpvt_tiny", stem=stem, insertion=insertion).eval()
            out = model(x)
            assert out["simcc_x"].shape == (2, 17, 192) and out["simcc_y"].shape == (2, 17, 256)
            kp, conf = decode_simcc(out["simcc_x"], out["simcc_y"], 2.0)
            torch.testing.assert_close(out["keypoints"], kp)
            torch.testing.assert_close(out["confidence"], conf)
            assert "heatmaps" not in out and model.output_kind == "simcc"
    v1 = build_model("hrpvt_tiny", stem="hrpm", insertion="none")
    assert isinstance(v1.backbone.patch_embeds[0], nn.Identity)  # replaced by the HRPM v1 stem


# ----------------------------------------------------------------------------- training, flops


@pytest.mark.parametrize(
    "name, overrides, guided",
    [
        ("vitranspose_tiny", {}, False),
        ("vitranspose_tiny", {"selection": "skeleton", "num_neighbors": 1}, True),
        ("lite_hrnet_tiny", {}, False),
        ("sharpose_tiny", {}, False),
        ("hrpvt_tiny", {}, False),
    ],
)
def test_tiny_models_overfit_one_batch(name, overrides, guided):
    x = torch.randn(2, 3, *IMG)
    joints = torch.rand(2, 17, 2) * torch.tensor([95.0, 127.0])
    w = torch.ones(2, 17)
    target, _ = heatmap_targets(joints, w, IMG, (32, 24), 1.5)
    tx, ty, _ = simcc_targets(joints, w, IMG, 2.0, 2.0)
    model = build_model(name, **overrides).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(60):
        out = model(x, guide_keypoints=joints) if guided else model(x)
        # The engine's (B, V) layout, V = 1: the model's own training loss (mvpose.models.base).
        per_view = {k: v[:, None] for k, v in out.items() if isinstance(v, torch.Tensor) and v.dim() > 0}
        loss = model.loss(per_view, {"target": target[:, None], "target_x": tx[:, None], "target_y": ty[:, None],
                                     "target_weight": w[:, None]})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.2 * losses[0], (losses[0], losses[-5:])


def test_flops_rows_of_the_baselines():
    labels = {row[0]: row for row in PAPER_FIGURES}
    for label in ("ViTPose-B", "ViTransPose-B", "ViTransPose-B skeleton (136 patches)", "Lite-HRNet-18",
                  "SHaRPose-B (all refined)", "HRPVT-v1", "HRPVT-v2"):
        assert label in labels
    # Skipping refinement is what makes SHaRPose cheaper than ViTPose-B on average.
    with torch.device("meta"):
        vit = build_model("vitranspose_b").eval()
        sharp = build_model("sharpose_b").eval()
        x = torch.empty(1, 3, 256, 192)
        full = count_macs(vit, x)["dense"]
        refined = count_macs(sharp, x, refine=True)["dense"]
        coarse = count_macs(sharp, x, refine=False)["dense"]
    assert coarse < 0.4 * full < refined < full


def test_configs_rebuild_the_same_architecture():
    for name in ("lite_hrnet_tiny", "vitranspose_tiny", "sharpose_tiny", "hrpvt_tiny"):
        model = build_model(name)
        again = build_model(**model.config)
        assert again.config == model.config
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert shapes == {k: tuple(v.shape) for k, v in again.state_dict().items()}


def test_crop_prior_ignores_the_image_and_learns_the_most_frequent_position():
    from mvpose.engine.decode import decode_heatmaps

    torch.manual_seed(0)
    model = build_model("crop_prior", num_joints=2, image_size=(64, 64), heatmap_size=(16, 16))
    a = model(torch.randn(3, 3, 64, 64))["heatmaps"]
    b = model(torch.zeros(3, 3, 64, 64))["heatmaps"]
    assert a.shape == (3, 2, 16, 16) and torch.equal(a, b)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 64, 64\)"):
        model(torch.zeros(1, 3, 32, 64))
    # Joint 0 is at A in three crops of four and at B in the fourth; joint 1 the other way round.
    A, B = torch.tensor([20.0, 12.0]), torch.tensor([44.0, 50.0])
    joints = torch.stack([torch.stack([A, B]), torch.stack([A, B]), torch.stack([A, B]), torch.stack([B, A])])
    target, _ = heatmap_targets(joints, torch.ones(4, 2), (64, 64), (16, 16), sigma=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        loss = (model(torch.zeros(4, 3, 64, 64))["heatmaps"] - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    xy, _ = decode_heatmaps(model(torch.zeros(1, 3, 64, 64))["heatmaps"], (64, 64), method="argmax")
    torch.testing.assert_close(xy[0, 0], A, atol=2.2, rtol=0)
    torch.testing.assert_close(xy[0, 1], B, atol=2.2, rtol=0)
