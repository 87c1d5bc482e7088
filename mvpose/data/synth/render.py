"""Ray-cast rendering of capsules, ellipsoids and boxes with a z-buffer, in numpy.

Each primitive is intersected analytically with the viewing rays of the pixels inside its
projected bounding box (rays come from :meth:`View.rays`, so lens distortion is exact), depths
are compared against the buffer, and the nearest surfaces are shaded (Lambert key light, a fill
light from the camera that darkens silhouettes, ambient). A part-id buffer records which
primitive is seen at every pixel; :func:`joint_visibility` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvpose.data.synth.body import Box, Capsule, Ellipsoid
from mvpose.data.synth.cameras import View

__all__ = ["Frame", "Lighting", "draw", "joint_visibility", "NEAR"]

NEAR = 50.0  # mm; geometry closer to the camera than this is not drawn
BACKGROUND_ID = 0


@dataclass
class Frame:
    """Render buffers: ``color (H, W, 3) uint8`` BGR, ``depth (H, W) float32`` camera z, ``ids (H, W) uint8``."""

    color: np.ndarray
    depth: np.ndarray
    ids: np.ndarray

    @classmethod
    def empty(cls, width: int, height: int) -> "Frame":
        return cls(
            np.zeros((height, width, 3), np.uint8),
            np.full((height, width), np.inf, np.float32),
            np.zeros((height, width), np.uint8),
        )

    def copy(self) -> "Frame":
        return Frame(self.color.copy(), self.depth.copy(), self.ids.copy())


@dataclass(frozen=True)
class Lighting:
    """Key light direction (world, towards the light), ambient/diffuse/fill strengths, BGR tint."""

    direction: np.ndarray
    ambient: float
    diffuse: float
    fill: float
    tint: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, tint: float = 0.15) -> "Lighting":
        """Random key light 30-75 degrees above the horizon; BGR tint within ``1 +- tint``."""
        az, el = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.3)
        d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        return cls(d, rng.uniform(0.3, 0.5), rng.uniform(0.45, 0.75), rng.uniform(0.1, 0.3), rng.uniform(1 - tint, 1 + tint, 3))


# ---------------------------------------------------------------------------------------------
# Ray-primitive intersections in the camera frame, batched over primitives of one kind. Rays are
# ``(N, 3)`` with z = 1 and origin 0; each function returns ``t (N, P)``, the camera depth of the
# nearest front hit of every primitive (inf on a miss), and a function giving unit normals at hit
# points ``p (M, 3)`` of primitives ``k (M,)``.


def _capsules_hit(rays: np.ndarray, a: np.ndarray, b: np.ndarray, r: np.ndarray):
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    ba = b32 - a32
    baba = np.einsum("pi,pi->p", ba, ba)
    bard = rays @ ba.T
    dd = np.einsum("ni,ni->n", rays, rays)[:, None]
    rdoa = -(rays @ a32.T)
    rdob = -(rays @ b32.T)
    baoa = -np.einsum("pi,pi->p", ba, a32)
    oaoa = np.einsum("pi,pi->p", a32, a32)
    obob = np.einsum("pi,pi->p", b32, b32)
    r2 = (r * r).astype(np.float32)
    qa = baba * dd - bard * bard
    qb = baba * rdoa - baoa * bard
    qc = baba * oaoa - baoa * baoa - r2 * baba
    disc = qb * qb - qa * qc
    with np.errstate(invalid="ignore", divide="ignore"):
        t_body = (-qb - np.sqrt(disc)) / qa
        y = baoa + t_body * bard
        t = np.where((disc >= 0) & (y > 0) & (y < baba), t_body, np.inf)
        for sb, sc in ((rdoa, oaoa - r2), (rdob, obob - r2)):
            sd = sb * sb - dd * sc
            ts = (-sb - np.sqrt(sd)) / dd
            t = np.where((sd >= 0) & (ts < t), ts, t)
    t = np.where(t > NEAR, t, np.inf)

    def normals(p: np.ndarray, k: np.ndarray) -> np.ndarray:
        s = np.clip(np.einsum("mi,mi->m", p - a[k], b[k] - a[k]) / baba[k], 0.0, 1.0)
        n = p - (a[k] + s[:, None] * (b[k] - a[k]))
        return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)

    return t, normals


def _ellipsoids_hit(rays: np.ndarray, c: np.ndarray, axes: np.ndarray, radii: np.ndarray):
    M = axes.transpose(0, 2, 1) / radii[:, :, None]  # camera -> unit-sphere coordinates, (P, 3, 3)
    o = -np.einsum("pij,pj->pi", M, c)
    # |o + t M d|^2 = 1 with d the ray: quadratic coefficients as matrix products (BLAS).
    Q = np.einsum("pji,pjk->pik", M, M)  # M^T M, symmetric
    coef = np.stack([Q[:, 0, 0], Q[:, 1, 1], Q[:, 2, 2], 2 * Q[:, 0, 1], 2 * Q[:, 0, 2], 2 * Q[:, 1, 2]]).astype(np.float32)
    x, y, z = rays[:, 0], rays[:, 1], rays[:, 2]
    qa = np.stack([x * x, y * y, z * z, x * y, x * z, y * z], axis=1) @ coef
    qb = rays @ np.einsum("pjk,pj->pk", M, o).T.astype(np.float32)
    qc = (np.einsum("pj,pj->p", o, o) - 1.0).astype(np.float32)
    disc = qb * qb - qa * qc
    with np.errstate(invalid="ignore"):
        t = (-qb - np.sqrt(disc)) / qa
    t = np.where((disc >= 0) & (t > NEAR), t, np.inf)

    def normals(p: np.ndarray, k: np.ndarray) -> np.ndarray:
        q = np.einsum("mij,mj->mi", M[k], p - c[k])
        n = np.einsum("mij,mj->mi", axes[k], q / radii[k])
        return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)

    return t, normals


def _boxes_hit(rays: np.ndarray, c: np.ndarray, axes: np.ndarray, half: np.ndarray):
    P = len(c)
    o = -np.einsum("pji,pj->pi", axes, c).astype(np.float32)  # box-frame camera centre
    d = (rays @ axes.transpose(0, 2, 1).reshape(P * 3, 3).T.astype(np.float32)).reshape(-1, P, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d  # +-inf on axis-parallel rays: the slab test below still holds
        h = half.astype(np.float32)
        t1 = (-h - o) * inv
        t2 = (h - o) * inv
    lo = np.fmin(t1, t2)
    tmin = lo.max(axis=-1)
    tmax = np.fmax(t1, t2).min(axis=-1)
    t = np.where((tmax >= tmin) & (tmin > NEAR), tmin, np.inf)

    def normals(p: np.ndarray, k: np.ndarray, sel: tuple) -> np.ndarray:
        f = lo[sel].argmax(axis=-1)
        sign = -np.sign(d[sel + (f,)])
        return axes[k, :, f] * sign[:, None]

    return t, normals


def _to_camera(prim, view: View):
    R, t = view.R, view.t
    if isinstance(prim, Capsule):
        return ("capsule", R @ prim.a + t, R @ prim.b + t, prim.radius)
    if isinstance(prim, Ellipsoid):
        return ("ellipsoid", R @ prim.center + t, R @ prim.axes, np.asarray(prim.radii, float))
    if isinstance(prim, Box):
        return ("box", R @ prim.center + t, R @ prim.axes, np.asarray(prim.half, float))
    raise TypeError(f"cannot render {type(prim).__name__}")


_CORNERS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)


def _bboxes(geos: list, view: View) -> list[tuple[int, int, int, int] | None]:
    """Pixel bounding boxes ``(x0, x1, y0, y1)`` (exclusive ends) of camera-frame primitives.

    All key points (capsule ends, box corners) are projected in one call;
    each box is padded by the projected radius (+20 %, + 2 px, + 3 % under lens distortion).
    """
    pts, pads, counts = [], [], []
    for kind, *geo in geos:
        if kind == "capsule":
            pts.append(np.stack([geo[0], geo[1]]))
            pads.append(geo[2])
        else:  # ellipsoids and boxes: the corners of their oriented bounding box
            c, A, half = geo
            pts.append(c + (_CORNERS * half) @ A.T)
            pads.append(0.0)
        counts.append(len(pts[-1]))
    if not pts:
        return []
    P = np.concatenate(pts)
    pad = np.asarray(pads)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    z = P[:, 2]
    zmin = np.minimum.reduceat(z, starts)
    zmax = np.maximum.reduceat(z, starts)
    uv = view.project_camera(np.where((z > NEAR)[:, None], P, np.array([0.0, 0.0, 1.0])))
    lo = np.stack([np.minimum.reduceat(uv[:, k], starts) for k in (0, 1)], axis=-1)
    hi = np.stack([np.maximum.reduceat(uv[:, k], starts) for k in (0, 1)], axis=-1)
    r = pad * max(view.K[0, 0], view.K[1, 1]) / np.maximum(zmin - pad, 1e-6) * 1.2 + 2.0
    lo -= r[:, None]
    hi += r[:, None]
    if view.distorted:
        ext = (hi - lo) * 0.03
        lo, hi = lo - ext, hi + ext
    W, H = view.width, view.height
    out: list = []
    for i in range(len(geos)):
        if zmax[i] + pad[i] < NEAR:
            out.append(None)
        elif zmin[i] - pad[i] < NEAR:
            out.append((0, W, 0, H))
        else:
            x0, y0 = max(int(np.floor(lo[i, 0])), 0), max(int(np.floor(lo[i, 1])), 0)
            x1, y1 = min(int(np.ceil(hi[i, 0])) + 1, W), min(int(np.ceil(hi[i, 1])) + 1, H)
            out.append((x0, x1, y0, y1) if x0 < x1 and y0 < y1 else None)
    return out


_HIT = {"capsule": _capsules_hit, "ellipsoid": _ellipsoids_hit, "box": _boxes_hit}
MAX_BATCH = 4_000_000  # rays x primitives evaluated at once


def _stack_geo(kind: str, geos: list) -> tuple:
    if kind == "capsule":
        return np.stack([g[0] for g in geos]), np.stack([g[1] for g in geos]), np.array([g[2] for g in geos])
    return tuple(np.stack([g[i] for g in geos]) for i in range(3))


def _area(b: tuple[int, int, int, int]) -> int:
    return (b[1] - b[0]) * (b[3] - b[2])


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def _groups(geos: list, boxes: list) -> list[tuple[str, list[int], tuple[int, int, int, int]]]:
    """Group visible primitives of one kind whose boxes overlap enough to be tested together.

    A primitive joins a group when the union box stays small (at most 1.5 x the summed areas, the
    primitive's own box at least 1/8 of it, rays x primitives below MAX_BATCH), so a limb joins
    its body but neither a far-away object nor one that fills the image. Boxes
    only bound where to look: intersections are exact, so testing a primitive on pixels outside
    its own box just finds no hit there.
    """
    out = []
    for kind in ("capsule", "ellipsoid", "box"):
        groups: list[list] = []  # [indices, union box, summed area]
        for i, (g, b) in enumerate(zip(geos, boxes)):
            if g[0] != kind or b is None:
                continue
            for grp in groups:
                u = _union(grp[1], b)
                small = _area(u) <= 1.5 * (grp[2] + _area(b)) + 400 and 8 * _area(b) >= _area(u)
                if small and _area(u) * (len(grp[0]) + 1) <= MAX_BATCH:
                    grp[0].append(i)
                    grp[1] = u
                    grp[2] += _area(b)
                    break
            else:
                groups.append([[i], b, _area(b)])
        out += [(kind, idx, box) for idx, box, _ in groups]
    return out


def draw(frame: Frame, view: View, prims: list, light: Lighting) -> None:
    """Render ``prims`` into ``frame`` (in place) through ``view`` with z-buffering and shading."""
    if not prims:
        return
    rays_all = view.rays()
    L = (view.R @ light.direction).astype(np.float32)
    geos = [_to_camera(p, view) for p in prims]
    boxes = _bboxes(geos, view)
    colors = np.array([p.color for p in prims], dtype=np.float32) * light.tint.astype(np.float32) * 255.0
    pids = np.array([p.pid for p in prims], dtype=np.uint8)
    for kind, idx, (x0, x1, y0, y1) in _groups(geos, boxes):
        rays = rays_all[y0:y1, x0:x1]
        flat = rays.reshape(-1, 3)
        t, normals = _HIT[kind](flat, *_stack_geo(kind, [geos[i][1:] for i in idx]))
        k = np.argmin(t, axis=1)
        tk = t[np.arange(len(k)), k].reshape(y1 - y0, x1 - x0)
        depth = frame.depth[y0:y1, x0:x1]
        m = tk < depth
        if not m.any():
            continue
        km = k.reshape(m.shape)[m]
        tm = tk[m]
        d = rays[m]
        p = d * tm[:, None]
        n = normals(p, km, (np.flatnonzero(m.reshape(-1)), km)) if kind == "box" else normals(p, km)
        n = n.astype(np.float32)
        view_dir = d / np.linalg.norm(d, axis=-1, keepdims=True)
        key = np.maximum(n @ L, 0.0)
        fill = np.maximum(-(n * view_dir).sum(-1), 0.0)
        shade = light.ambient + light.diffuse * key + light.fill * fill
        gi = np.asarray(idx)[km]
        rgb = np.minimum(shade[:, None] * colors[gi], 255.0)
        depth[m] = tm
        frame.ids[y0:y1, x0:x1][m] = pids[gi]
        frame.color[y0:y1, x0:x1][m] = (rgb + 0.5).astype(np.uint8)


def joint_visibility(frame: Frame, uv: np.ndarray, depth: np.ndarray, owners: tuple[frozenset[int], ...]) -> np.ndarray:
    """Which joints a view sees.

    A joint is hidden when it projects outside the image, lies behind the camera, or when the
    surface seen at its pixel is nearer than the joint and belongs neither to a body part that
    contains the joint (``owners``) nor to the background.

    Args:
        frame: rendered buffers.
        uv: (J, 2) joint pixels.
        depth: (J,) joint camera depths.
        owners: per joint, the part ids that contain it.

    Returns:
        (J,) bool, True where visible.
    """
    H, W = frame.ids.shape
    px = np.floor(uv + 0.5).astype(int)
    inside = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H) & (depth > NEAR)
    vis = np.zeros(len(uv), dtype=bool)
    for j in np.flatnonzero(inside):
        x, y = px[j]
        pid = int(frame.ids[y, x])
        vis[j] = pid == BACKGROUND_ID or pid in owners[j] or frame.depth[y, x] >= depth[j]
    return vis
