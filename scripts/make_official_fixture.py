"""Build the equivalence fixture from the official PPT code (github HowieMa/PPT), or check full-size models.

The official code is imported from the path given with --official (a checkout of HowieMa/PPT with
``single-view-PPT/`` and ``multi-view-PPT/``); it is never copied into this repository. Its two missing
dependencies are shimmed in memory: ``timm.models.layers.weight_init.trunc_normal_`` (torch's
``trunc_normal_``) and ``einops`` (``pip install einops``, only needed to run this script).

Fixture mode (default) writes ``tests/fixtures/official_ppt/ppt_s_reduced.pt``: one reduced TokenPose-S
(official ``TokenPose_S_base`` with its stem narrowed to 16 channels and one bottleneck, D = 16, 12 layers,
8 heads, 64x48 input, 2x2 patches, 16x12 heatmaps, 17 joints) with random weights (stored in float16,
run in float32 after the same rounding), the multi-view ``TokenPose_S_base_multi`` with the same weights
plus its ``pos_3d_linear``, fixed inputs (4 images, rays, camera centres) and the official outputs:
heatmaps and the kept token indices (the top-k indices of every HTI step, composed into token-grid
indices) for TokenPose-S (r = 1) and PPT-S (r = 0.7) on 2 images and the multi-view model (r = 0.7,
fuse=True) on the 4 images as 4 views. ``tests/models/test_official_equivalence.py`` converts and compares.
Beside it, ``official_keys.json.gz`` lists the keys and shapes (no values) of the full-size official
models (PPT-S COCO / MPII, PPT-B, PPT-L/D6, multi-view PPT-S) for the recognition tests.

Full mode (--full) builds the official full-size models (TokenPose-S / PPT-S 256x192, PPT-B with
HRNet-W32, PPT-L/D6 with HRNet-W48, multi-view PPT-S 256x256 on 4 views) with random weights, converts
them with mvpose and prints the equivalence table of the README (nothing is written).

Usage:
    python scripts/make_official_fixture.py --official /path/to/PPT
    python scripts/make_official_fixture.py --official /path/to/PPT --full
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import sys
import types
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mvpose.engine.checkpoint import atomic_save  # noqa: E402

log = logging.getLogger("make_official_fixture")
FIXTURE = REPO / "tests" / "fixtures" / "official_ppt" / "ppt_s_reduced.pt"
REDUCED = dict(image_size=[64, 48], patch_size=[2, 2], num_keypoints=17, dim=16, depth=12, heads=8, mlp_dim=48,
               hidden_heatmap_dim=32, heatmap_dim=16 * 12, heatmap_size=[16, 12], channels=64,
               pos_embedding_type="sine-full", apply_init=True)
STEM_WIDTH, STEM_BLOCKS = 16, 1


def shim_timm() -> None:
    """``timm.models.layers.weight_init.trunc_normal_`` for the official imports."""
    names = ["timm", "timm.models", "timm.models.layers", "timm.models.layers.weight_init"]
    for name in names:
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["timm.models.layers.weight_init"].trunc_normal_ = nn.init.trunc_normal_


def import_file(path: Path, name: str) -> types.ModuleType:
    if not path.is_file():
        raise SystemExit(f"official file {path} not found: --official must be a HowieMa/PPT checkout")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def official_modules(root: Path) -> dict[str, types.ModuleType]:
    shim_timm()
    sv = root / "single-view-PPT" / "lib" / "models"
    return {
        "base": import_file(sv / "tokenpose_base.py", "official_tokenpose_base"),
        "hr": import_file(sv / "hr_base.py", "official_hr_base"),
        "mv": import_file(root / "multi-view-PPT" / "lib" / "models" / "multiview_ppt.py", "official_multiview_ppt"),
    }


class Wrap(nn.Module):
    """Gives the official key prefix: ``features.`` (TokenPose_S) or ``pre_feature.`` + ``transformer.``."""

    def __init__(self, **children: nn.Module) -> None:
        super().__init__()
        for k, v in children.items():
            self.add_module(k, v)


@contextlib.contextmanager
def record_topk():
    """Record the indices of every ``Tensor.topk`` call (the official HTI selections)."""
    calls: list[torch.Tensor] = []
    original = torch.Tensor.topk

    def topk(self, *args, **kwargs):
        res = original(self, *args, **kwargs)
        calls.append(res[1].detach().clone())
        return res

    torch.Tensor.topk = topk
    try:
        yield calls
    finally:
        torch.Tensor.topk = original


def compose(steps: list[torch.Tensor], batch: int, n: int) -> torch.Tensor:
    """Indices into the full token grid after successive top-k selections (B, K)."""
    kept = torch.arange(n).repeat(batch, 1)
    for idx in steps:
        kept = torch.gather(kept, 1, idx)
    return kept


def narrow_stem(model: nn.Module, bottleneck: type) -> None:
    """Replace the official 64-channel stem by a 16-channel one with one bottleneck (same code path)."""
    model.conv1 = nn.Conv2d(3, STEM_WIDTH, kernel_size=3, stride=2, padding=1, bias=False)
    model.bn1 = nn.BatchNorm2d(STEM_WIDTH, momentum=0.1)
    model.conv2 = nn.Conv2d(STEM_WIDTH, STEM_WIDTH, kernel_size=3, stride=2, padding=1, bias=False)
    model.bn2 = nn.BatchNorm2d(STEM_WIDTH, momentum=0.1)
    model.inplanes = STEM_WIDTH
    model.layer1 = model._make_layer(bottleneck, STEM_WIDTH, STEM_BLOCKS)


@torch.no_grad()
def randomize(model: nn.Module, generator: torch.Generator, half: bool) -> None:
    """Random weights with O(1) activations; BN statistics and norm affines too. ``half`` rounds to float16."""
    for name, p in model.named_parameters():
        if name.endswith("pos_embedding"):
            continue  # the fixed sine encoding
        if p.dim() >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=generator) / fan_in**0.5)
        elif name.endswith("weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=generator))
        else:
            p.copy_(0.2 * torch.randn(p.shape, generator=generator))
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(0.2 * torch.randn(b.shape, generator=generator))
        elif name.endswith("running_var"):
            b.copy_(0.5 + torch.rand(b.shape, generator=generator))
    for name, p in model.named_parameters():
        if "keypoint_token" in name:
            p.copy_(torch.randn(p.shape, generator=generator))
        if half and not name.endswith("pos_embedding"):
            p.copy_(p.half().float())
    if half:
        for b in model.buffers():
            if b.is_floating_point():
                b.copy_(b.half().float())


def to_storage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float tensors as float16 except the sine encoding (mvpose checks it to 1e-4)."""
    return {k: v.half() if v.is_floating_point() and not k.endswith("pos_embedding") else v.clone()
            for k, v in state.items()}


def make_rays(generator: torch.Generator, views: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera centres (V, 1, 1, 3) in mm and points on each token's ray (V, 1, N, 3) in front of them."""
    centers = 3000 * torch.randn(views, 1, 1, 3, generator=generator)
    directions = torch.randn(views, 1, n, 3, generator=generator)
    depth = 2000 + 3000 * torch.rand(views, 1, n, 1, generator=generator)
    return centers + depth * torch.nn.functional.normalize(directions, dim=-1), centers


@torch.no_grad()
def build_fixture(mods: dict[str, types.ModuleType], out: Path, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    single = mods["base"].TokenPose_S_base(**REDUCED)
    narrow_stem(single, mods["base"].Bottleneck)
    randomize(single, g, half=True)
    single = Wrap(features=single).eval()

    multi = mods["mv"].TokenPose_S_base_multi(**REDUCED)
    narrow_stem(multi, mods["mv"].Bottleneck)
    randomize(multi, g, half=True)
    multi.load_state_dict({**single.features.state_dict(), **{f"pos_3d_linear.{k}": v for k, v in
                                                              multi.pos_3d_linear.state_dict().items()}})
    multi = Wrap(features=multi).eval()

    h, w = REDUCED["image_size"]
    n = (h // (4 * REDUCED["patch_size"][0])) * (w // (4 * REDUCED["patch_size"][1]))
    images = torch.randn(4, 3, h, w, generator=g).half().float()
    rays, centers = make_rays(g, 4, n)
    outputs = {}
    for key, ratio in (("tokenpose_r1", 1.0), ("ppt_r07", 0.7)):
        with record_topk() as calls:
            heatmaps = single.features(images[:2], ratio=ratio)
        outputs[key] = {"heatmaps": heatmaps, "kept": compose(calls, 2, n), "ratio": ratio, "hti_steps": len(calls)}
    with record_topk() as calls:
        views = multi.features([img[None] for img in images], ratio=0.7, rays=list(rays), centers=list(centers),
                               fuse=True)
    steps = len(calls) // 4
    outputs["multiview_r07"] = {
        "heatmaps": torch.stack([v[0] for v in views]),  # (V, J, Hh, Wh)
        "kept": torch.cat([compose(calls[i * steps:(i + 1) * steps], 1, n) for i in range(4)]),  # (V, K)
        "ratio": 0.7, "hti_steps": steps,
    }
    fixture = {
        "official_state_dict": to_storage(single.state_dict()),
        "pos_3d_linear": to_storage({k: v for k, v in multi.state_dict().items() if "pos_3d_linear" in k}),
        "images": images.half(),
        "rays": rays[:, 0].float(),  # (V, N, 3) points on the token rays, mm
        "centers": centers[:, 0, 0].float(),  # (V, 3) camera centres, mm
        "outputs": outputs,
        "official_config": {k: v for k, v in REDUCED.items()} | {"stem_width": STEM_WIDTH, "stem_blocks": STEM_BLOCKS,
                                                                  "seed": seed},
    }
    atomic_save(fixture, out)
    log.info("wrote %s (%.0f kB)", out, out.stat().st_size / 1024)


# --------------------------------------------------------------------------------------- full size
HRNET_EXTRA = lambda c: {  # noqa: E731  (official experiments/coco/ppt/ppt_b / ppt_L_D6 yaml, EXTRA)
    "PRETRAINED_LAYERS": ["*"], "FINAL_CONV_KERNEL": 1,
    "STAGE2": {"NUM_MODULES": 1, "NUM_BRANCHES": 2, "BLOCK": "BASIC", "NUM_BLOCKS": [4, 4],
               "NUM_CHANNELS": [c, 2 * c], "FUSE_METHOD": "SUM"},
    "STAGE3": {"NUM_MODULES": 4, "NUM_BRANCHES": 3, "BLOCK": "BASIC", "NUM_BLOCKS": [4, 4, 4],
               "NUM_CHANNELS": [c, 2 * c, 4 * c], "FUSE_METHOD": "SUM"},
}


def full_models(mods):
    """(label, official model, input shape (H, W), ratio, multiview) at the official configurations."""
    coco = dict(num_keypoints=17, dim=192, heads=8, mlp_dim=576, pos_embedding_type="sine-full", apply_init=True,
                hidden_heatmap_dim=384, heatmap_dim=64 * 48, heatmap_size=[64, 48])
    s = lambda: Wrap(features=mods["base"].TokenPose_S_base(image_size=[256, 192], patch_size=[4, 3], channels=256,  # noqa: E731
                                                             depth=12, **coco))

    def hrnet(width, depth):
        return Wrap(pre_feature=mods["hr"].HRNET_base({"MODEL": {"EXTRA": HRNET_EXTRA(width)}}),
                    transformer=mods["base"].TokenPose_TB_base(feature_size=[64, 48], patch_size=[4, 3],
                                                               channels=width, depth=depth, **coco))

    mv = dict(coco, hidden_heatmap_dim=512, heatmap_dim=64 * 64, heatmap_size=[64, 64])
    yield "TokenPose-S", s(), (256, 192), 1.0, False
    yield "PPT-S", s(), (256, 192), 0.7, False
    yield "PPT-B (HRNet-W32)", hrnet(32, 12), (256, 192), 0.7, False
    yield "PPT-L/D6 (HRNet-W48)", hrnet(48, 6), (256, 192), 0.7, False
    yield ("Multi-view PPT-S, 4 views", Wrap(features=mods["mv"].TokenPose_S_base_multi(
        image_size=[256, 256], patch_size=[4, 4], channels=256, depth=12, **mv)), (256, 256), 0.7, True)


@torch.no_grad()
def run_full(mods, seed: int) -> None:
    from mvpose.models import build_model
    from mvpose.models.convert import convert_state_dict

    print("| model | input | max abs diff of heatmaps | kept tokens equal |")
    print("|---|---|---|---|")
    for label, official, (h, w), ratio, multiview in full_models(mods):
        g = torch.Generator().manual_seed(seed)
        randomize(official, g, half=False)
        official.eval()
        state = official.state_dict()
        mv_state, cfg, _ = convert_state_dict(state, f"{label}.pth", keep_ratio=ratio)
        ours = build_model(**cfg).eval()
        ours.load_state_dict(mv_state)
        views = 4 if multiview else 1
        images = torch.randn(views, 3, h, w, generator=g)
        n = ours.token_grid[0] * ours.token_grid[1]
        with record_topk() as calls:
            if multiview:
                rays, centers = make_rays(g, 4, n)
                ref = torch.stack([v[0] for v in official.features([i[None] for i in images], ratio=ratio,
                                                                    rays=list(rays), centers=list(centers), fuse=True)])
            elif hasattr(official, "pre_feature"):  # TokenPose_B.forward
                ref = official.transformer(official.pre_feature(images), ratio=ratio)
            else:  # TokenPose_S.forward
                ref = official.features(images, ratio=ratio)
        if multiview:
            steps = len(calls) // 4
            ref_kept = torch.cat([compose(calls[i * steps:(i + 1) * steps], 1, n) for i in range(4)])
            out = ours(images[None], rays=(rays - centers)[:, 0][None])
            got, kept = out["heatmaps"][0], out["kept_indices"][0]
        else:
            ref_kept = compose(calls, views, n)
            out = ours(images)
            got, kept = out["heatmaps"], out["kept_indices"]
        diff = (got - ref).abs().max().item()
        print(f"| {label} | {h}x{w} | {diff:.1e} | {bool(torch.equal(kept, ref_kept))} |")


def write_manifest(mods, out: Path) -> None:
    """Keys and shapes of the official full-size state dicts (no values), for the recognition tests."""
    import gzip
    import json

    coco = dict(num_keypoints=17, dim=192, heads=8, mlp_dim=576, pos_embedding_type="sine-full",
                hidden_heatmap_dim=384, heatmap_dim=64 * 48, heatmap_size=[64, 48])
    mpii = dict(coco, num_keypoints=16, hidden_heatmap_dim=512, heatmap_dim=64 * 64, heatmap_size=[64, 64])
    models = {"ppt_s_mpii_256x256": Wrap(features=mods["base"].TokenPose_S_base(
        image_size=[256, 256], patch_size=[4, 4], channels=256, depth=12, **mpii))}
    for label, official, *_ in full_models(mods):
        key = {"TokenPose-S": None, "PPT-S": "ppt_s_coco_256x192", "PPT-B (HRNet-W32)": "ppt_b_coco_256x192",
               "PPT-L/D6 (HRNet-W48)": "ppt_l_d6_coco_256x192"}.get(label, "multiview_ppt_s_h36m_256x256")
        if key:
            models[key] = official
    manifest = {name: [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in m.state_dict().items()]
                for name, m in models.items()}
    with gzip.open(out, "wt") as fh:
        json.dump(manifest, fh)
    log.info("wrote %s (%.0f kB)", out, out.stat().st_size / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, type=Path, help="checkout of github.com/HowieMa/PPT")
    parser.add_argument("--out", type=Path, default=FIXTURE, help=f"fixture file (default {FIXTURE.relative_to(REPO)})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="check the full-size models instead (prints a table)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    mods = official_modules(args.official)
    if args.full:
        run_full(mods, args.seed)
    else:
        build_fixture(mods, args.out, args.seed)
        write_manifest(mods, args.out.with_name("official_keys.json.gz"))


if __name__ == "__main__":
    main()
