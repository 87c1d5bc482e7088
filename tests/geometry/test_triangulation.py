"""Triangulation: exactness, weights and missing views, robustness, refinement, batching, float32."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mvpose.geometry.camera import Cameras
from mvpose.geometry.triangulation import (
    Triangulation,
    refine_points,
    reprojection_error,
    solve_symmetric3,
    triangulate,
    triangulate_robust,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def look_at(center: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """World-to-camera rotation of a camera at ``center`` whose optical axis points at ``target``."""
    z = target - center
    z = z / np.linalg.norm(z)
    up = rng.normal(size=3)  # random roll
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def make_rig(
    rng: np.random.Generator, V: int, distortion: bool = True, dtype: torch.dtype = torch.float64
) -> Cameras:
    """Cameras 2-6 m from the origin at random positions, each aimed near the origin, general K."""
    K, R, t, dist = [], [], [], []
    for _ in range(V):
        direction = rng.normal(size=3)
        C = rng.uniform(2000, 6000) * direction / np.linalg.norm(direction)
        Rv = look_at(C, rng.uniform(-200, 200, size=3), rng)
        f = rng.uniform(700, 2000)
        cx, cy, skew = rng.uniform(450, 550), rng.uniform(450, 550), rng.uniform(-3, 3)
        K.append([[f, skew, cx], [0, f * rng.uniform(0.95, 1.05), cy], [0, 0, 1]])
        R.append(Rv)
        t.append(-Rv @ C)
        k1, k2, k3 = rng.uniform(-0.3, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(-0.05, 0.05)
        d = [k1, k2, rng.uniform(-2e-3, 2e-3), rng.uniform(-2e-3, 2e-3), k3]
        dist.append(d if distortion else [0.0] * 5)
    arrays = (np.array(a) for a in (K, R, t, dist))
    return Cameras.from_params(*arrays, image_size=[1000, 1000], dtype=dtype)


def scene_scale(cams: Cameras) -> float:
    return float(cams.centers.norm(dim=-1).mean())


def make_points(rng: np.random.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """World points of a body-sized volume around the origin, (*shape, 3) float64."""
    return torch.from_numpy(rng.uniform(-800, 800, size=(*shape, 3)))


def observe(cams: Cameras, X: torch.Tensor) -> torch.Tensor:
    """(..., J, 3) world points -> (..., V, J, 2) distorted pixels."""
    return cams.project(X.unsqueeze(-3))


# --------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("V", [2, 3, 4, 8])
def test_noiseless_round_trip_with_distortion(V: int, device: str) -> None:
    rng = np.random.default_rng(V)
    cams = make_rig(rng, V).to(device=device)
    X = make_points(rng, (50,)).to(device)
    result = triangulate(observe(cams, X), cams)
    assert isinstance(result, Triangulation)
    assert result.points3d.shape == (50, 3) and result.points3d.device.type == device
    assert (result.points3d - X).norm(dim=-1).max() <= 1e-6 * scene_scale(cams)
    assert result.reprojection_error.shape == (V, 50)
    assert result.reprojection_error.max() < 1e-6
    assert result.used.all()


def test_undistortion_matters() -> None:
    """The same pixels solved as if undistorted give a wrong point: undistort=True does real work."""
    rng = np.random.default_rng(5)
    cams = make_rig(rng, 4)
    X = make_points(rng, (30,))
    pixels = observe(cams, X)
    good = triangulate(pixels, cams).points3d
    naive = triangulate(pixels, cams, undistort=False).points3d
    assert (good - X).norm(dim=-1).max() < 1e-6
    assert (naive - X).norm(dim=-1).max() > 1.0


def test_undistort_false_takes_ideal_pixels() -> None:
    rng = np.random.default_rng(6)
    cams = make_rig(rng, 3)
    X = make_points(rng, (20,))
    ideal = cams.project(X.unsqueeze(-3), distort=False)
    result = triangulate(ideal, cams, undistort=False)
    assert (result.points3d - X).norm(dim=-1).max() < 1e-6
    assert result.reprojection_error.max() < 1e-6  # measured without distortion, consistently


def test_agrees_with_opencv_two_views() -> None:
    rng = np.random.default_rng(7)
    cams = make_rig(rng, 2, distortion=False)
    X = make_points(rng, (400,))
    pixels = observe(cams, X)
    P = cams.projection_matrices.numpy()

    def opencv(pix: torch.Tensor) -> torch.Tensor:
        h = cv2.triangulatePoints(P[0], P[1], pix[0].numpy().T.copy(), pix[1].numpy().T.copy())
        return torch.from_numpy((h[:3] / h[3]).T)

    ours = triangulate(pixels, cams).points3d
    assert (ours - opencv(pixels)).norm(dim=-1).max() <= 1e-6 * scene_scale(cams)

    # With noise the plain linear methods weigh the algebraic error a little differently (OpenCV works in raw
    # pixels, we normalise), so they agree to a small fraction of the noise-induced error. The default second
    # pass in pixel units is closer to the truth than both.
    noisy = pixels + 0.5 * torch.from_numpy(rng.normal(size=pixels.shape))
    plain, theirs = triangulate(noisy, cams, reweight=False).points3d, opencv(noisy)
    err_theirs = (theirs - X).norm(dim=-1)
    assert ((plain - theirs).norm(dim=-1) / err_theirs).median() < 0.1
    err_plain = (plain - X).norm(dim=-1)
    assert err_plain.median() <= 1.05 * err_theirs.median()
    err_reweighted = (triangulate(noisy, cams).points3d - X).norm(dim=-1)
    assert err_reweighted.mean() < min(err_plain.mean(), err_theirs.mean())


def test_reprojection_error_matches_public_function() -> None:
    rng = np.random.default_rng(8)
    cams = make_rig(rng, 4)
    X = make_points(rng, (3, 17))
    noisy = observe(cams, X) + torch.from_numpy(rng.normal(size=(3, 4, 17, 2)))
    noisy[1, 2, 5] = math.nan
    result = triangulate(noisy, cams)
    expected = reprojection_error(result.points3d, noisy, cams)
    torch.testing.assert_close(result.reprojection_error, expected, equal_nan=True)
    assert result.reprojection_error[1, 2, 5].isnan()
    assert result.reprojection_error.isfinite().sum() == 3 * 4 * 17 - 1
    assert result.reprojection_error.nanmean() > 0.3  # the noise shows


def test_solve_symmetric3_matches_linalg() -> None:
    g = torch.Generator().manual_seed(0)
    B = torch.randn(100, 3, 3, generator=g, dtype=torch.float64)
    A = B @ B.transpose(-1, -2) + 0.1 * torch.eye(3, dtype=torch.float64)
    b = torch.randn(100, 3, generator=g, dtype=torch.float64)
    upper = torch.stack([A[:, 0, 0], A[:, 0, 1], A[:, 0, 2], A[:, 1, 1], A[:, 1, 2], A[:, 2, 2]])
    ours = solve_symmetric3(upper, b.T).T
    torch.testing.assert_close(ours, torch.linalg.solve(A, b))


# --------------------------------------------------------------------------------------------- weights, missing views
def noisy_problem(seed: int, V: int = 4, J: int = 40, sigma: float = 2.0):
    rng = np.random.default_rng(seed)
    cams = make_rig(rng, V)
    X = make_points(rng, (J,))
    pixels = observe(cams, X) + sigma * torch.from_numpy(rng.normal(size=(V, J, 2)))
    weights = torch.from_numpy(rng.uniform(0.2, 1.0, size=(V, J)))
    return cams, X, pixels, weights


def test_weights_scale_invariant_and_used() -> None:
    cams, _, pixels, weights = noisy_problem(10)
    base = triangulate(pixels, cams, weights).points3d
    torch.testing.assert_close(triangulate(pixels, cams, 37.5 * weights).points3d, base)
    per_joint = weights * torch.linspace(0.1, 10, weights.shape[-1], dtype=weights.dtype)
    torch.testing.assert_close(triangulate(pixels, cams, per_joint).points3d, base)
    unweighted = triangulate(pixels, cams).points3d
    assert (unweighted - base).norm(dim=-1).min() > 1e-3  # the weights change the answer


@pytest.mark.parametrize("how", ["zero_weight", "nan_weight", "nan_point", "negative_weight"])
def test_ignored_view(how: str) -> None:
    cams, _, pixels, weights = noisy_problem(11)
    pixels, weights = pixels.clone(), weights.clone()
    pixels[2] += 300.0  # garbage in view 2: it must not leak into the result
    if how == "zero_weight":
        weights[2] = 0
    elif how == "nan_weight":
        weights[2] = math.nan
    elif how == "negative_weight":
        weights[2] = -1
    else:
        pixels[2] = math.nan
    keep = [0, 1, 3]
    expected = triangulate(pixels[keep], cams[keep], weights[keep])
    result = triangulate(pixels, cams, weights)
    torch.testing.assert_close(result.points3d, expected.points3d)
    assert not result.used[2].any() and result.used[keep].all()
    if how == "nan_point":
        assert result.reprojection_error[2].isnan().all()
    else:  # diagnostics of an ignored view are still measured
        assert (result.reprojection_error[2] > 50).all()


def test_too_few_views_gives_nan() -> None:
    cams, _, pixels, _ = noisy_problem(12, V=3, J=5)
    pixels = pixels.clone()
    pixels[1:, 0] = math.nan  # joint 0: one view
    pixels[:, 1] = math.nan  # joint 1: no view
    pixels[2, 2] = math.nan  # joint 2: two views
    result = triangulate(pixels, cams)
    assert result.points3d[:2].isnan().all()
    assert not result.used[:, :2].any()
    assert result.points3d[2:].isfinite().all()
    assert result.used[:, 2].tolist() == [True, True, False]
    strict = triangulate(pixels, cams, min_views=3)
    assert strict.points3d[:3].isnan().all() and strict.points3d[3:].isfinite().all()
    assert not strict.used[:, :3].any()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reweight", [False, True])
def test_parallel_rays_give_nan_not_garbage(dtype: torch.dtype, reweight: bool) -> None:
    """Two cameras at the same place see one ray: the system is singular, the joint must be NaN."""
    rng = np.random.default_rng(13)
    cams = make_rig(rng, 2, distortion=False)
    twin = Cameras.stack([cams[0], cams[0]])
    X = make_points(rng, (50,))
    result = triangulate(observe(twin, X).to(dtype), twin, reweight=reweight)
    assert result.points3d.isnan().all() and not result.used.any()
    assert result.reprojection_error.isnan().all()


def test_bad_inputs_are_named() -> None:
    cams, _, pixels, weights = noisy_problem(14)
    with pytest.raises(ValueError, match="cameras batch shape"):
        triangulate(pixels[:3], cams)
    with pytest.raises(ValueError, match=r"points2d must be a tensor \(\.\.\., V, J, 2\)"):
        triangulate(pixels[..., :1], cams)
    with pytest.raises(ValueError, match="weights must broadcast"):
        triangulate(pixels, cams, weights[:, :3])
    with pytest.raises(ValueError, match="min_views"):
        triangulate(pixels, cams, min_views=1)
    with pytest.raises(ValueError, match="mode"):
        triangulate_robust(pixels, cams, mode="best")


def test_differentiable() -> None:
    """Gradients flow to the pixels and the weights (e.g. for a 3D loss through triangulation)."""
    cams, _, pixels, weights = noisy_problem(15, V=3, J=2)
    pixels = pixels.clone().requires_grad_(True)
    weights = weights.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, w: triangulate(p, cams, w).points3d, (pixels, weights))


# --------------------------------------------------------------------------------------------- robust modes, refinement
@pytest.mark.parametrize("mode", ["drop_worst", "ransac"])
@pytest.mark.parametrize("refine", [False, True])
def test_robust_rejects_corrupted_view(mode: str, refine: bool) -> None:
    cams, X, pixels, weights = noisy_problem(20, V=5, J=60, sigma=1.0)
    corrupted = pixels.clone()
    bad_view = torch.arange(60) % 5  # a different corrupted view per joint
    corrupted[bad_view, torch.arange(60)] += torch.tensor([120.0, -90.0], dtype=pixels.dtype)
    plain = triangulate(corrupted, cams, weights)
    robust = triangulate_robust(corrupted, cams, weights, threshold_px=10.0, mode=mode, refine=refine)
    clean = triangulate(pixels, cams, weights)

    assert (plain.points3d - X).norm(dim=-1).median() > 30  # the outlier really hurts the plain solve
    assert not robust.used[bad_view, torch.arange(60)].any()
    assert robust.used.sum(dim=0).eq(4).all()  # only the outlier went
    err = (robust.points3d - X).norm(dim=-1)
    assert err.max() < 20 and err.median() < 1.5 * (clean.points3d - X).norm(dim=-1).median()
    assert robust.reprojection_error[robust.used].max() < 10


def test_ransac_random_subsets_for_large_rigs() -> None:
    cams, X, pixels, _ = noisy_problem(21, V=12, J=30, sigma=0.5)
    corrupted = pixels.clone()
    corrupted[[0, 5, 9]] += 150.0  # three bad views for every joint
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    first = triangulate_robust(corrupted, cams, mode="ransac", max_hypotheses=10, threshold_px=5.0, generator=gen())
    again = triangulate_robust(corrupted, cams, mode="ransac", max_hypotheses=10, threshold_px=5.0, generator=gen())
    torch.testing.assert_close(first.points3d, again.points3d)
    assert not first.used[[0, 5, 9]].any() and first.used.sum(dim=0).eq(9).all()
    assert (first.points3d - X).norm(dim=-1).max() < 10


def test_robust_keeps_clean_joints_and_missing_joints() -> None:
    cams, X, pixels, _ = noisy_problem(22, V=4, J=10, sigma=0.5)
    pixels = pixels.clone()
    pixels[1:, 0] = math.nan
    for mode in ("drop_worst", "ransac"):
        result = triangulate_robust(pixels, cams, threshold_px=10.0, mode=mode)
        assert result.points3d[0].isnan().all() and not result.used[:, 0].any()
        torch.testing.assert_close(result.points3d[1:], triangulate(pixels, cams).points3d[1:])
        assert result.used[:, 1:].all()


def weighted_cost(X: torch.Tensor, pixels: torch.Tensor, cams: Cameras, weights: torch.Tensor) -> torch.Tensor:
    return (weights * reprojection_error(X, pixels, cams).square()).sum(dim=-2)


def test_refinement_lowers_reprojection_error() -> None:
    cams, X, pixels, weights = noisy_problem(30, V=4, J=200, sigma=3.0)
    for reweight in (False, True):  # from plain DLT, and from the (already close) two-pass solve
        linear = triangulate(pixels, cams, weights, reweight=reweight)
        refined = refine_points(linear.points3d, pixels, cams, weights, linear.used, iters=10)
        before = weighted_cost(linear.points3d, pixels, cams, weights)
        after = weighted_cost(refined, pixels, cams, weights)
        assert (after <= before * (1 + 1e-9)).all()
        assert (after < before).float().mean() > 0.9
    plain = weighted_cost(triangulate(pixels, cams, weights, reweight=False).points3d, pixels, cams, weights)
    assert after.sum() < 0.97 * plain.sum()
    # At the optimum the gradient of the cost vanishes: a small step anywhere cannot lower it.
    for axis in range(3):
        for sign in (-1.0, 1.0):
            step = torch.zeros(3, dtype=refined.dtype)
            step[axis] = sign * 0.01
            assert (weighted_cost(refined + step, pixels, cams, weights) >= after - 1e-6).all()


def test_refinement_keeps_nan_joints() -> None:
    cams, X, pixels, _ = noisy_problem(31, V=3, J=4)
    start = X.clone()
    start[1] = math.nan
    refined = refine_points(start, pixels, cams, iters=3)
    assert refined[1].isnan().all() and refined[[0, 2, 3]].isfinite().all()


# --------------------------------------------------------------------------------------------- batching, dtype, device
def test_leading_batch_shapes() -> None:
    rng = np.random.default_rng(40)
    cams = make_rig(rng, 4)
    X = make_points(rng, (2, 3, 17))
    pixels = observe(cams, X) + 0.5 * torch.from_numpy(rng.normal(size=(2, 3, 4, 17, 2)))
    full = triangulate(pixels, cams)
    assert full.points3d.shape == (2, 3, 17, 3)
    assert full.reprojection_error.shape == full.used.shape == (2, 3, 4, 17)
    single = triangulate(pixels[1, 2], cams)  # batch shape ()
    torch.testing.assert_close(full.points3d[1, 2], single.points3d)
    flat = triangulate(pixels.reshape(6, 4, 17, 2), cams)  # batch shape (B,)
    torch.testing.assert_close(full.points3d.reshape(6, 17, 3), flat.points3d)
    robust = triangulate_robust(pixels, cams, mode="ransac")
    assert robust.points3d.shape == (2, 3, 17, 3)


def test_per_sample_rigs() -> None:
    rng = np.random.default_rng(41)
    rigs = [make_rig(rng, 3) for _ in range(4)]
    cams = Cameras.stack(rigs)  # (B, V)
    X = make_points(rng, (4, 5, 17))  # (B, T, J)
    pixels = torch.stack([observe(rig, X[b]) for b, rig in enumerate(rigs)])  # (B, T, V, J, 2)
    pixels = pixels + 0.5 * torch.from_numpy(rng.normal(size=pixels.shape))
    per_sample = cams[:, None]  # (B, 1, V): one rig per sample, shared over T
    result = triangulate(pixels, per_sample)
    for b, rig in enumerate(rigs):
        torch.testing.assert_close(result.points3d[b], triangulate(pixels[b], rig).points3d)
    flat = triangulate(pixels[:, 0], cams)  # (B, V) rigs with (B, V, J, 2) points
    torch.testing.assert_close(flat.points3d, result.points3d[:, 0])
    robust = triangulate_robust(pixels, per_sample, mode="drop_worst", refine=True)
    assert robust.points3d.shape == (4, 5, 17, 3)
    assert ((robust.points3d - X).norm(dim=-1) < 30).all()


def test_broadcast_points_weights_and_rigs() -> None:
    """Points shared by per-sample rigs, and weights without the batch dims, broadcast like tensors."""
    rng = np.random.default_rng(44)
    rigs = [make_rig(rng, 3) for _ in range(2)]
    cams = Cameras.stack(rigs)  # (2, V)
    X = make_points(rng, (6,))
    ideal = torch.stack([rig.project(X.unsqueeze(-3), distort=False) for rig in rigs])  # (2, V, J, 2)
    # The same pixels seen through two different rigs give two different points.
    shared = ideal[0]  # (V, J, 2), broadcast over the rig batch
    result = triangulate(shared, cams, undistort=False)
    assert result.points3d.shape == (2, 6, 3)
    torch.testing.assert_close(result.points3d[0], X)
    torch.testing.assert_close(result.points3d[1], triangulate(shared, rigs[1], undistort=False).points3d)
    # Weights (V, J) for points (T, V, J, 2).
    pixels = observe(rigs[0], make_points(rng, (4, 6))) + 0.5 * torch.from_numpy(rng.normal(size=(4, 3, 6, 2)))
    weights = torch.from_numpy(rng.uniform(0.2, 1.0, size=(3, 6)))
    torch.testing.assert_close(
        triangulate(pixels, rigs[0], weights).points3d, triangulate(pixels, rigs[0], weights.expand(4, 3, 6)).points3d
    )


@pytest.mark.parametrize("per_sample", [False, True])
def test_blocks_give_the_same_result(per_sample: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large CPU batches are solved in blocks; tiny blocks must give exactly what one call gives."""
    import mvpose.geometry.triangulation as module

    rng = np.random.default_rng(46)
    rigs = [make_rig(rng, 4) for _ in range(3)]
    cams = Cameras.stack(rigs)[:, None] if per_sample else rigs[0]  # (3, 1, V) or (V,)
    X = make_points(rng, (3, 5, 7))
    pixels = torch.stack([observe(cams[b, 0] if per_sample else cams, X[b]) for b in range(3)])
    pixels = pixels + 0.5 * torch.from_numpy(rng.normal(size=pixels.shape))
    pixels[0, 1, 2, 3] += 100.0  # an outlier for the robust modes
    pixels[1, 2, 0, 4] = math.nan
    weights = torch.from_numpy(rng.uniform(0.2, 1.0, size=(4, 7)))  # broadcast over (3, 5)
    calls = {
        "plain": lambda: triangulate(pixels, cams, weights),
        "drop_worst": lambda: triangulate_robust(pixels, cams, weights, threshold_px=10.0),
        "ransac": lambda: triangulate_robust(pixels, cams, weights, threshold_px=10.0, mode="ransac"),
    }
    whole = {name: call() for name, call in calls.items()}
    monkeypatch.setattr(module, "_BLOCK_BYTES", 1000)  # a few frames per block
    for name, call in calls.items():
        blocked = call()
        for got, expected in zip(blocked, whole[name]):
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_accuracy(device: str) -> None:
    rng = np.random.default_rng(42)
    cams = make_rig(rng, 4)
    X = make_points(rng, (500,))
    pixels = observe(cams, X)
    result = triangulate(pixels.float().to(device), cams.to(dtype=torch.float32))
    assert result.points3d.dtype == torch.float32 and result.points3d.device.type == device
    err = (result.points3d.double().cpu() - X).norm(dim=-1)
    # float32 pixels near 1000 carry ~6e-5 px of rounding: a few microns at these distances.
    assert err.max() < 1e-5 * scene_scale(cams)
    assert result.reprojection_error.max() < 0.01


def test_float32_narrow_baseline() -> None:
    """Forming A^T A squares the conditioning; the second pass (a correction from explicit residuals)
    brings float32 back near what float64 gets from the same float32 pixels."""
    rng = np.random.default_rng(45)
    base = make_rig(rng, 1, distortion=False)
    C = base.centers[0] + torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64)  # 10 cm baseline
    other = Cameras(base.K[0], base.R[0], -(base.R[0] @ C), base.dist[0], base.image_size[0])
    pair = Cameras.stack([base[0], other])
    X = make_points(rng, (300,))
    pixels = observe(pair, X).float()
    err = lambda result: (result.points3d.double() - X).norm(dim=-1).max()  # noqa: E731
    reference = err(triangulate(pixels.double(), pair))  # float64 from the float32-rounded pixels
    plain, two_pass = err(triangulate(pixels, pair, reweight=False)), err(triangulate(pixels, pair))
    assert two_pass < 5 * reference + 1e-3
    assert plain > 5 * two_pass  # the plain float32 solve really is worse here


def test_cameras_follow_points_dtype() -> None:
    rng = np.random.default_rng(43)
    cams = make_rig(rng, 3)  # float64 cameras
    X = make_points(rng, (10,))
    result = triangulate(observe(cams, X).float(), cams)
    assert result.points3d.dtype == result.reprojection_error.dtype == torch.float32


# --------------------------------------------------------------------------------------------- properties
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    V=st.integers(2, 7),
    distortion=st.booleans(),
)
def test_property_random_rigs(seed: int, V: int, distortion: bool) -> None:
    rng = np.random.default_rng(seed)
    cams = make_rig(rng, V, distortion)
    X = make_points(rng, (12,))
    pixels = observe(cams, X)
    visible = torch.from_numpy(rng.uniform(size=(V, 12)) < 0.7)
    pixels = torch.where(visible.unsqueeze(-1), pixels, math.nan)
    result = triangulate(pixels, cams)

    enough = visible.sum(dim=0) >= 2
    assert torch.equal(result.used, visible & enough)
    assert result.points3d[~enough].isnan().all()
    assert ((result.points3d[enough] - X[enough]).norm(dim=-1) <= 1e-6 * scene_scale(cams)).all()

    # Relabelling the cameras relabels nothing else.
    perm = torch.from_numpy(rng.permutation(V))
    permuted = triangulate(pixels[perm], cams[perm.tolist()])
    torch.testing.assert_close(permuted.points3d, result.points3d, equal_nan=True)

    # A rigid motion with a change of units moves the solution the same way (normalisation is consistent).
    angle = rng.uniform(0, 2 * math.pi)
    Q = torch.tensor(
        [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]], dtype=torch.float64
    )
    shift, k = torch.from_numpy(rng.uniform(-5000, 5000, size=3)), rng.uniform(0.5, 3.0)
    # X' = k Q X + shift; camera R' = R Q^T, t' = k t - R' shift keeps every pixel.
    R2 = cams.R @ Q.T
    t2 = k * cams.t - (R2 @ shift)
    moved = Cameras(cams.K, R2, t2, cams.dist, cams.image_size)
    expected = k * X @ Q.T + shift
    result2 = triangulate(pixels, moved)
    err = (result2.points3d[enough] - expected[enough]).norm(dim=-1)
    assert (err <= 1e-6 * k * scene_scale(cams)).all()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), V=st.integers(4, 7), mode=st.sampled_from(["drop_worst", "ransac"]))
def test_property_single_outlier_rejected(seed: int, V: int, mode: str) -> None:
    # From 4 views on, the clean views outvote the outlier. With 3, an outlier that happens to move along an
    # epipolar line leaves two self-consistent pairs and the data cannot tell which one is right.
    rng = np.random.default_rng(seed)
    cams = make_rig(rng, V)
    X = make_points(rng, (8,))
    pixels = observe(cams, X) + 0.3 * torch.from_numpy(rng.normal(size=(V, 8, 2)))
    bad = int(rng.integers(V))
    pixels[bad] += torch.from_numpy(rng.choice([-1, 1], size=2) * rng.uniform(80, 200, size=2))
    result = triangulate_robust(pixels, cams, threshold_px=8.0, mode=mode)
    assert not result.used[bad].any()
    assert (result.points3d - X).norm(dim=-1).max() < 0.02 * scene_scale(cams)
