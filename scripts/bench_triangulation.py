#!/usr/bin/env python
"""Benchmark the batched triangulation against a per-point numpy loop.

Measures, on CPU, joints per second for a rig of ``--views`` cameras around the origin:

* ``triangulate`` (batched, two-pass normalised DLT, reprojection errors included) on ``--joints`` joints
  laid out as ``(frames, V, 17, 2)``: zero distortion (no undistortion needed), the same with
  ``reweight=False`` (single pass), and a rig with lens distortion (``undistort=True``, Kornia fixed point);
* the robust modes on a tenth of the joints;
* the closed-form 3x3 solve against ``torch.linalg.eigh`` on the same 4x4 normal matrices (time and accuracy);
* a per-point loop with ``np.linalg.svd`` (the usual implementation), on ``--loop-points`` joints,
  extrapolated per point.

The last line reads ``points_per_s=<zero-distortion batched figure> ratio_vs_loop=<that / loop figure>``.

With ``--accuracy`` it also prints the accuracy study of docs/triangulation.md.

Usage: python scripts/bench_triangulation.py [--joints 1000000] [--views 4] [--threads 2] [--dtype float32]
       [--accuracy]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from mvpose.geometry.camera import Cameras, pixels_to_normalized
from mvpose.geometry.triangulation import refine_points, solve_symmetric3, triangulate, triangulate_robust

JOINTS_PER_POSE = 17


def ring_rig(views: int, distortion: bool, seed: int) -> Cameras:
    """Cameras on a ring 3.5-5 m from the origin, 1-2 m high, aimed at the origin (a mocap room)."""
    rng = np.random.default_rng(seed)
    K, R, t, dist = [], [], [], []
    for v in range(views):
        azimuth = 2 * math.pi * v / views + rng.uniform(-0.2, 0.2)
        radius = rng.uniform(3500, 5000)
        C = np.array([radius * math.cos(azimuth), radius * math.sin(azimuth), rng.uniform(1000, 2000)])
        z = -C / np.linalg.norm(C)
        x = np.cross(z, [0.0, 0.0, 1.0])
        x /= np.linalg.norm(x)
        Rv = np.stack([x, np.cross(z, x), z])
        f = rng.uniform(1000, 1200)
        K.append([[f, 0, 500], [0, f, 500], [0, 0, 1]])
        R.append(Rv)
        t.append(-Rv @ C)
        dist.append([-0.25, 0.08, 1e-3, -1e-3, 0.0] if distortion else [0.0] * 5)
    return Cameras.from_params(np.array(K), np.array(R), np.array(t), np.array(dist), image_size=[1000, 1000])


def random_rig(views: int, rng: np.random.Generator, distortion: bool = False) -> Cameras:
    """Cameras 2-6 m from the origin in random directions, focal 700-2000 px, aimed near the origin;
    with ``distortion``, k1 in [-0.3, 0.1], k2 in [-0.1, 0.1], small tangential terms."""
    K, R, t, dist = [], [], [], []
    for _ in range(views):
        direction = rng.normal(size=3)
        C = rng.uniform(2000, 6000) * direction / np.linalg.norm(direction)
        z = rng.uniform(-200, 200, size=3) - C
        z /= np.linalg.norm(z)
        x = np.cross(rng.normal(size=3), z)
        x /= np.linalg.norm(x)
        Rv = np.stack([x, np.cross(z, x), z])
        f = rng.uniform(700, 2000)
        K.append([[f, 0, 500], [0, f, 500], [0, 0, 1]])
        R.append(Rv)
        t.append(-Rv @ C)
        tangential = rng.uniform(-2e-3, 2e-3, size=2)
        dist.append([rng.uniform(-0.3, 0.1), rng.uniform(-0.1, 0.1), *tangential, 0.0] if distortion else [0.0] * 5)
    return Cameras.from_params(np.array(K), np.array(R), np.array(t), np.array(dist), image_size=[1000, 1000])


def max_error(pixels: torch.Tensor, cams: Cameras, X: torch.Tensor, **kwargs) -> float:
    """Largest 3D error (mm) of ``triangulate(pixels, cams, **kwargs)`` against the truth ``X``."""
    return float((triangulate(pixels, cams, **kwargs).points3d.double() - X).norm(dim=-1).max())


def accuracy_study(sigma: float, seed: int) -> None:
    """Print the accuracy figures of docs/triangulation.md (two-pass vs plain DLT vs ML; float32 baselines)."""
    rng = np.random.default_rng(seed)
    for distortion in (False, True):
        ratios: dict[str, list[float]] = {"plain DLT": [], "two-pass": []}
        for _ in range(40):
            V = int(rng.integers(2, 6))
            cams = random_rig(V, rng, distortion)
            X = torch.from_numpy(rng.uniform(-800, 800, size=(200, 3)))
            pixels = cams.project(X.unsqueeze(-3)) + sigma * torch.from_numpy(rng.normal(size=(V, 200, 2)))
            ml = refine_points(triangulate(pixels, cams, reweight=False).points3d, pixels, cams, iters=30)
            e_ml = (ml - X).norm(dim=-1).mean()
            for name, reweight in (("plain DLT", False), ("two-pass", True)):
                e = (triangulate(pixels, cams, reweight=reweight).points3d - X).norm(dim=-1).mean()
                ratios[name].append(float(e / e_ml))
        for name, r in ratios.items():
            print(f"40 random rigs (2-5 views, {'with' if distortion else 'no'} distortion, sigma={sigma} px): "
                  f"{name:9s} mean 3D error / ML error: mean {np.mean(r):.4f}, worst rig {np.max(r):.4f}")

    # float32 on two-camera rigs with a shrinking baseline, noiseless pixels rounded to float32: five random
    # first cameras (2-6 m from the points), the second one shifted along the first one's image x axis.
    rng = np.random.default_rng(seed + 1)
    X = torch.from_numpy(rng.uniform(-800, 800, size=(500, 3)))
    bases = [random_rig(1, rng) for _ in range(5)]
    print("baseline  float32 plain  float32 two-pass  float64 (max 3D error, 5 rigs x 500 points, mm)")
    for baseline in (10.0, 100.0, 1000.0):
        worst = np.zeros(3)
        for base in bases:
            C = base.centers[0] + baseline * base.R[0, 0]
            other = Cameras(base.K[0], base.R[0], -(base.R[0] @ C), base.dist[0], base.image_size[0])
            pair = Cameras.stack([base[0], other])
            pixels = pair.project(X.unsqueeze(-3)).float()
            plain, two_pass = max_error(pixels, pair, X, reweight=False), max_error(pixels, pair, X)
            worst = np.maximum(worst, [plain, two_pass, max_error(pixels.double(), pair, X)])
        print(f"{baseline:6.0f} mm  {worst[0]:13.4f}  {worst[1]:16.4f}  {worst[2]:8.4f}")


def observations(cams: Cameras, joints: int, sigma: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World points (frames, 17, 3) of a body-sized volume and their noisy pixels (frames, V, 17, 2)."""
    g = torch.Generator().manual_seed(seed)
    frames = max(joints // JOINTS_PER_POSE, 1)
    X = (torch.rand(frames, JOINTS_PER_POSE, 3, generator=g, dtype=torch.float64) - 0.5) * 1600
    pixels = cams.project(X.unsqueeze(-3))
    return X, pixels + sigma * torch.randn(pixels.shape, generator=g, dtype=torch.float64)


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, thread pool
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def loop_svd(P: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Reference: one DLT per point with ``np.linalg.svd``. P (V, 3, 4), pixels (V, N, 2) -> (N, 3)."""
    out = np.empty((pixels.shape[1], 3))
    for n in range(pixels.shape[1]):
        A = np.concatenate([pixels[:, n, :1] * P[:, 2] - P[:, 0], pixels[:, n, 1:] * P[:, 2] - P[:, 1]])
        h = np.linalg.svd(A)[2][-1]
        out[n] = h[:3] / h[3]
    return out


def normal_matrices(cams: Cameras, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(V, N, 2) undistorted pixels -> (N, 4, 4) normalised ``A^T A``, centre (3,), scale (for the solver test)."""
    centers = cams.centers
    c = centers.mean(dim=0)
    s = (centers - c).norm(dim=-1).mean()
    P = torch.cat([cams.R, (cams.R @ (c - centers).unsqueeze(-1)) / s], dim=-1)  # (V, 3, 4)
    h = torch.cat([pixels, torch.ones_like(pixels[..., :1])], dim=-1) @ torch.linalg.inv(cams.K).transpose(-1, -2)
    x, y = (h[..., 0] / h[..., 2]).unsqueeze(-1), (h[..., 1] / h[..., 2]).unsqueeze(-1)
    P = P.unsqueeze(1)  # (V, 1, 3, 4)
    rows = torch.stack([x * P[..., 2, :] - P[..., 0, :], y * P[..., 2, :] - P[..., 1, :]], dim=-2)  # (V, N, 2, 4)
    rows = rows.movedim(0, 1).flatten(1, 2)  # (N, 2V, 4)
    return rows.transpose(-1, -2) @ rows, c, s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--joints", type=int, default=1_000_000, help="joints for the batched figures")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--loop-points", type=int, default=20_000, help="joints for the per-point numpy loop")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs; the best is reported")
    ap.add_argument("--sigma", type=float, default=1.0, help="pixel noise for the accuracy figures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--accuracy", action="store_true", help="also run the accuracy study (about a minute)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.views} views, {args.dtype}")
    rows: list[tuple[str, int, float]] = []

    def run(name: str, n: int, fn) -> float:
        seconds = best_time(fn, args.repeats)
        rows.append((name, n, n / seconds))
        print(f"{name:48s} {n:>9d} joints {seconds * 1e3:9.1f} ms {n / seconds:14,.0f} joints/s", flush=True)
        return n / seconds

    # Batched triangulation, zero distortion (headline) and with distortion.
    cams = ring_rig(args.views, distortion=False, seed=args.seed)
    X, pixels = observations(cams, args.joints, args.sigma, args.seed)
    n = pixels.shape[0] * JOINTS_PER_POSE
    pix = pixels.to(dtype)
    cams_w = cams.to(dtype=dtype)
    batched = run("triangulate (no distortion)", n, lambda: triangulate(pix, cams_w))
    run("triangulate (no distortion, reweight=False)", n, lambda: triangulate(pix, cams_w, reweight=False))
    dcams = ring_rig(args.views, distortion=True, seed=args.seed)
    dX, dpixels = observations(dcams, args.joints, args.sigma, args.seed)
    dpix, dcams_w = dpixels.to(dtype), dcams.to(dtype=dtype)
    with_dist = run("triangulate (distortion, undistort=True)", n, lambda: triangulate(dpix, dcams_w))
    dnorm = pixels_to_normalized(dpix, dcams_w.K)  # undistortion works on normalised coordinates
    run("  Cameras.undistort_normalized alone, one call", n, lambda: dcams_w.undistort_normalized(dnorm))

    # Robust modes with one corrupted view per joint, on a tenth of the data.
    frames = max(pixels.shape[0] // 10, 1)
    bad = pix[:frames].clone()
    bad[:, 0] += 80.0
    m = frames * JOINTS_PER_POSE
    run("triangulate_robust drop_worst (1 outlier view)", m, lambda: triangulate_robust(bad, cams_w, threshold_px=10))
    run("triangulate_robust ransac (1 outlier view)", m,
        lambda: triangulate_robust(bad, cams_w, threshold_px=10, mode="ransac"))

    # Accuracy on the noisy data (float64 reference: the same call in float64).
    err = lambda P3: (P3.double() - X).norm(dim=-1)  # noqa: E731
    e_batched = err(triangulate(pix, cams_w).points3d)
    e_plain = err(triangulate(pix, cams_w, reweight=False).points3d)
    e_dist = (triangulate(dpix, dcams_w).points3d.double() - dX).norm(dim=-1)
    print(f"mean 3D error at sigma={args.sigma} px: two-pass {e_batched.mean():.3f} mm, "
          f"plain DLT {e_plain.mean():.3f} mm, "
          f"with distortion {e_dist.mean():.3f} mm")

    # Solver comparison on identical normal matrices: closed-form 3x3 vs eigh of 4x4 (no reweighting).
    k = min(n, 200_000)
    flat_pix = pixels.movedim(-3, 0).reshape(args.views, -1, 2)[:, :k]
    M, c, s = normal_matrices(cams, flat_pix)
    M = M.to(dtype)
    upper = torch.stack([M[..., 0, 0], M[..., 0, 1], M[..., 0, 2], M[..., 1, 1], M[..., 1, 2], M[..., 2, 2]])
    rhs = -M[..., :3, 3].movedim(-1, 0)

    def closed() -> torch.Tensor:
        return solve_symmetric3(upper, rhs).movedim(0, -1)

    def eigen() -> torch.Tensor:
        v = torch.linalg.eigh(M)[1][..., 0]
        return v[..., :3] / v[..., 3:]

    t_closed, t_eigh = best_time(closed, args.repeats), best_time(eigen, args.repeats)
    truth = X.reshape(-1, 3)[:k]
    e_closed = (c + s * closed().double() - truth).norm(dim=-1)
    e_eigh = (c + s * eigen().double() - truth).norm(dim=-1)
    gap = (s * (closed().double() - eigen().double())).norm(dim=-1)
    print(f"solver on {k} 4x4 systems ({args.dtype}): closed-form 3x3 {t_closed * 1e3:.1f} ms, "
          f"eigh {t_eigh * 1e3:.1f} ms "
          f"({t_eigh / t_closed:.0f}x); mean error closed {e_closed.mean():.3f} mm, eigh {e_eigh.mean():.3f} mm, "
          f"median gap {gap.median():.4f} mm")

    if args.accuracy:
        accuracy_study(args.sigma, args.seed)

    # Per-point loop with np.linalg.svd on the undistorted (zero-distortion) pixels.
    P = cams.projection_matrices.numpy()
    loop_pix = flat_pix[:, : args.loop_points].numpy()
    start = time.perf_counter()
    out = loop_svd(P, loop_pix)
    loop_s = (time.perf_counter() - start) / loop_pix.shape[1]
    loop_rate = 1.0 / loop_s
    loop_err = np.linalg.norm(out - truth[: loop_pix.shape[1]].numpy(), axis=-1).mean()
    print(f"{'per-point loop, np.linalg.svd':48s} {loop_pix.shape[1]:>9d} joints {loop_s * 1e6:9.2f} us/pt "
          f"{loop_rate:14,.0f} joints/s (mean error {loop_err:.3f} mm)")
    print(f"with undistortion: {with_dist:,.0f} joints/s ({with_dist / loop_rate:.1f}x the loop)")
    print(f"points_per_s={batched:.0f} ratio_vs_loop={batched / loop_rate:.1f}")


if __name__ == "__main__":
    main()
