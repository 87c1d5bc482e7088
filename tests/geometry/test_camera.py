"""Cameras: projection against OpenCV, distortion round trips, rays, crops, batching, dtypes, names."""

import cv2
import numpy as np
import pytest
import torch

from mvpose.geometry.camera import Cameras, affine_crop_intrinsics

W, H = 1000, 800


def look_at(center: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """World-to-camera rotation of a camera at ``center`` looking at ``target`` with a random roll."""
    z = target - center
    z /= np.linalg.norm(z)
    x = np.cross(z, rng.normal(size=3))
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def random_rig(rng: np.random.Generator, views: int, strong: bool = False) -> dict[str, np.ndarray]:
    """Cameras 3-6 m away looking at the origin, with OpenCV lenses (mild or GoPro-like)."""
    C = rng.normal(size=(views, 3))
    C = C / np.linalg.norm(C, axis=1, keepdims=True) * rng.uniform(3000, 6000, size=(views, 1))
    R = np.stack([look_at(c, rng.normal(scale=100, size=3), rng) for c in C])
    t = -np.einsum("vij,vj->vi", R, C)
    f = rng.uniform(700, 1500, size=(views, 2))
    c = np.array([W / 2, H / 2]) + rng.normal(scale=20, size=(views, 2))
    K = np.zeros((views, 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, :2, 2], K[:, 2, 2] = f[:, 0], f[:, 1], c, 1.0
    k1 = rng.uniform(-0.35, -0.2, views) if strong else rng.uniform(-0.2, 0.1, views)
    k2 = rng.uniform(0.05, 0.15, views) if strong else rng.uniform(-0.1, 0.15, views)
    p = rng.normal(scale=1e-3, size=(views, 2))
    k3 = rng.uniform(-0.02, 0.02, views)
    dist = np.stack([k1, k2, p[:, 0], p[:, 1], k3], axis=1)
    return {"K": K, "R": R, "t": t, "dist": dist, "C": C}


def rig_cameras(p: dict, names=None, dtype=torch.float64) -> Cameras:
    return Cameras.from_params(p["K"], p["R"], p["t"], p["dist"], [W, H], names=names, dtype=dtype)


def points_near_origin(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(-700, 700, size=(n, 3))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_projection_matches_opencv_with_distortion(rng):
    p = random_rig(rng, 6)
    cams = rig_cameras(p)
    X = points_near_origin(rng, 50)
    ours = cams.project(torch.as_tensor(X).expand(6, 50, 3)).numpy()
    for v in range(6):
        rvec = cv2.Rodrigues(p["R"][v])[0]
        ref = cv2.projectPoints(X, rvec, p["t"][v], p["K"][v], p["dist"][v])[0][:, 0]
        assert np.all(np.abs(ref - [W / 2, H / 2]) < 2 * W), "points must stay in a sane range for this test"
        np.testing.assert_allclose(ours[v], ref, atol=1e-7)


def test_undistorted_projection_is_the_projection_matrix(rng):
    p = random_rig(rng, 4)
    cams = rig_cameras(p)
    X = torch.as_tensor(points_near_origin(rng, 30)).expand(4, 30, 3)
    homo = torch.cat([X, torch.ones_like(X[..., :1])], -1) @ cams.projection_matrices.transpose(-1, -2)
    expected = homo[..., :2] / homo[..., 2:]
    torch.testing.assert_close(cams.project(X, distort=False), expected, atol=1e-9, rtol=0)
    assert torch.all(cams.depth(X) > 0)


@pytest.mark.parametrize("strong", [False, True])
def test_undistort_inverts_distort(rng, strong):
    p = random_rig(rng, 5, strong=strong)
    cams = rig_cameras(p)
    xy = torch.as_tensor(rng.uniform(-0.45, 0.45, size=(5, 200, 2)))
    back = cams.undistort_normalized(cams.distort_normalized(xy))
    assert (back - xy).abs().max() < 1e-9
    # pixels: undistorting a distorted projection gives the ideal pinhole projection
    X = torch.as_tensor(points_near_origin(rng, 40)).expand(5, 40, 3)
    torch.testing.assert_close(cams.undistort_pixels(cams.project(X)), cams.project(X, distort=False), atol=1e-6, rtol=0)


def test_undistort_pixels_matches_opencv(rng):
    p = random_rig(rng, 3, strong=True)
    cams = rig_cameras(p)
    pix = rng.uniform([50, 50], [W - 50, H - 50], size=(3, 100, 2))
    ours = cams.undistort_pixels(torch.as_tensor(pix)).numpy()
    for v in range(3):
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)
        ref = cv2.undistortPoints(pix[v][:, None], p["K"][v], p["dist"][v], None, p["K"][v], criteria=crit)[:, 0]
        np.testing.assert_allclose(ours[v], ref, atol=1e-4)


def test_pixel_rays_point_at_the_point_from_the_centre(rng):
    p = random_rig(rng, 4)
    cams = rig_cameras(p)
    X = torch.as_tensor(points_near_origin(rng, 25)).expand(4, 25, 3)
    rays = cams.pixel_rays(cams.project(X))
    expected = X - cams.centers.unsqueeze(-2)
    expected = expected / expected.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(rays, expected, atol=1e-9, rtol=0)
    np.testing.assert_allclose(cams.centers.numpy(), p["C"], atol=1e-9)
    # and lifting with the true depth gives the point back
    torch.testing.assert_close(cams.unproject(cams.project(X), cams.depth(X)), X, atol=1e-6, rtol=0)


def random_affine(rng: np.random.Generator, flip: bool) -> np.ndarray:
    """Crop-like 2x3 map: rotation, scale, optional horizontal flip, translation."""
    theta = rng.uniform(-np.pi, np.pi)
    s = rng.uniform(0.3, 1.5)
    A = s * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    if flip:
        A = A @ np.diag([-1.0, 1.0])
    b = np.array([128.0, 128.0]) - A @ np.array([W / 2, H / 2]) + rng.normal(scale=10, size=2)
    return np.concatenate([A, b[:, None]], axis=1)


@pytest.mark.parametrize("flip", [False, True])
def test_crop_camera_equals_warped_projection(rng, flip):
    p = random_rig(rng, 3, strong=True)
    cams = rig_cameras(p)
    aff = np.stack([random_affine(rng, flip) for _ in range(3)])
    crop = cams.crop(torch.as_tensor(aff), (256, 256))
    X = torch.as_tensor(points_near_origin(rng, 30)).expand(3, 30, 3)
    u = cams.project(X).numpy()
    warped = np.einsum("vij,vnj->vni", aff[..., :2], u) + aff[:, None, :, 2]
    torch.testing.assert_close(crop.project(X), torch.as_tensor(warped), atol=1e-8, rtol=0)
    torch.testing.assert_close(crop.image_size, torch.tensor([[256.0, 256.0]] * 3, dtype=torch.float64))
    # rays through corresponding pixels agree: the crop changes pixels, not geometry
    torch.testing.assert_close(crop.pixel_rays(torch.as_tensor(warped)), cams.pixel_rays(torch.as_tensor(u)), atol=1e-9, rtol=0)
    torch.testing.assert_close(affine_crop_intrinsics(cams.K, torch.as_tensor(aff)), crop.K)


def test_crop_matches_cv2_warp_affine_of_an_image(rng):
    """Pixel-centre convention: a blob warped by cv2.warpAffine lands where the crop camera projects."""
    p = random_rig(rng, 1)
    cam = rig_cameras(p)[0]
    X = torch.tensor([[30.0, -40.0, 20.0]], dtype=torch.float64)
    u = cam.project(X)[0].numpy()
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.exp(-((xx - u[0]) ** 2 + (yy - u[1]) ** 2) / (2 * 3.0**2)).astype(np.float32)
    aff = random_affine(rng, flip=True)
    aff[:, 2] += 128.0 - (aff[:, :2] @ u + aff[:, 2])  # centre the blob in the crop
    warped = cv2.warpAffine(img, aff, (256, 256), flags=cv2.INTER_LINEAR)
    wy, wx = np.mgrid[0:256, 0:256]
    centroid = np.array([(warped * wx).sum(), (warped * wy).sum()]) / warped.sum()
    crop_px = cam.crop(torch.as_tensor(aff), (256, 256)).project(X)[0].numpy()
    assert np.abs(centroid - crop_px).max() < 0.05


def test_batch_shapes_and_broadcasting(rng):
    p = random_rig(rng, 4)
    rig = rig_cameras(p, names=list("abcd"))
    X = torch.as_tensor(points_near_origin(rng, 10))
    assert rig.batch_shape == (4,) and len(rig) == 4
    per_view = rig.project(X.expand(4, 10, 3))
    assert per_view.shape == (4, 10, 2)
    # extra leading dims (time) broadcast against the rig
    timed = rig.project(X.expand(7, 4, 10, 3))
    assert timed.shape == (7, 4, 10, 2)
    torch.testing.assert_close(timed[3], per_view)
    # (B, V): per-sample crops of the same rig
    aff = torch.as_tensor(np.stack([[random_affine(rng, flip=b == 1) for _ in range(4)] for b in range(2)]))
    crops = rig.crop(aff, (256, 192))
    assert crops.batch_shape == (2, 4) and crops.names == list("abcd")
    out = crops.project(X.expand(2, 4, 10, 3))
    assert out.shape == (2, 4, 10, 2)
    for b in range(2):
        for v in range(4):
            torch.testing.assert_close(out[b, v], rig[v].crop(aff[b, v], (256, 192)).project(X))
    # stacking rigs gives (B, V) too; a single camera has batch shape ()
    stacked = Cameras.stack([rig, rig, rig])
    assert stacked.batch_shape == (3, 4) and stacked.names == list("abcd")
    assert rig[2].batch_shape == () and rig[2].project(X).shape == (10, 2)
    assert Cameras.stack([rig[i] for i in range(4)]).names == list("abcd")


def test_float32_and_float64(rng):
    p = random_rig(rng, 3)
    cams64 = rig_cameras(p)
    cams32 = rig_cameras(p, dtype=torch.float32)
    assert cams32.dtype == torch.float32 and cams64.to(dtype=torch.float32).dtype == torch.float32
    X = torch.as_tensor(points_near_origin(rng, 20)).expand(3, 20, 3)
    u64 = cams64.project(X)
    u32 = cams32.project(X.float())
    assert u64.dtype == torch.float64 and u32.dtype == torch.float32
    assert (u32.double() - u64).abs().max() < 1e-2
    rays32 = cams32.pixel_rays(u32)
    assert rays32.dtype == torch.float32
    assert (rays32.double() - cams64.pixel_rays(u64)).abs().max() < 1e-5
    # float64 points on float32 cameras follow the cameras' dtype
    assert cams32.project(X).dtype == torch.float32


def test_names_indexing(rng):
    p = random_rig(rng, 3)
    rig = rig_cameras(p, names=["left", "mid", "right"])
    mid = rig["mid"]
    assert mid.batch_shape == () and mid.names == ["mid"]
    torch.testing.assert_close(mid.K, rig.K[1])
    sub = rig[["right", "left"]]
    assert sub.names == ["right", "left"]
    torch.testing.assert_close(sub.t, rig.t[[2, 0]])
    assert rig[1:].names == ["mid", "right"]
    assert rig[torch.tensor([True, False, True])].names == ["left", "right"]
    assert rig.index("right") == 2
    with pytest.raises(KeyError, match="left"):
        rig["nope"]
    # on (B, V) rigs a name selects on the rig dim, and indexing the batch dim keeps the names
    rigs = Cameras.stack([rig, rig.crop(torch.as_tensor(random_affine(rng, False)), (256, 256))])
    assert rigs["right"].batch_shape == (2,)
    torch.testing.assert_close(rigs["right"].t, rigs.t[:, 2])
    torch.testing.assert_close(rigs["right"].K[1], rigs.K[1, 2])
    assert rigs[1].names == ["left", "mid", "right"]
    assert rigs[:, ["mid"]].names == ["mid"]
    assert rigs[1, 0].names == ["left"]
    assert rigs[:, 0].names == []  # the rig dim is gone: names no longer describe the last dim
    # None and ... act on batch dims only, never on the matrix dims
    shared = rigs[:, None]
    assert shared.batch_shape == (2, 1, 3) and shared.K.shape == (2, 1, 3, 3, 3) and shared.names == rig.names
    torch.testing.assert_close(rigs[..., 1].R, rigs.R[:, 1])
    assert rigs[..., ["right", "left"]].names == ["right", "left"]
    assert rigs[None, "mid"].batch_shape == (1, 2) and rigs[1, "mid"].names == ["mid"]
    torch.testing.assert_close(rigs[None, "mid"].t[0], rigs.t[:, 1])
    with pytest.raises(IndexError, match="batch shape"):
        rig[0, 1]


def test_from_params_defaults_and_validation():
    K = np.array([[1000.0, 0, 480], [0, 1000, 270], [0, 0, 1]])
    cam = Cameras.from_params(K, np.eye(3), [0, 0, 0], dist=[0.1, 0.01, 0.0, 0.0])
    assert cam.dist.tolist() == [0.1, 0.01, 0.0, 0.0, 0.0]
    assert cam.image_size.tolist() == [960.0, 540.0]
    with pytest.raises(ValueError, match="dist"):
        Cameras(cam.K, cam.R, cam.t, torch.zeros(4, dtype=torch.float64), cam.image_size)
    with pytest.raises(ValueError, match="names"):
        Cameras.from_params(K[None].repeat(2, 0), np.eye(3)[None].repeat(2, 0), np.zeros((2, 3)), names=["a"])
