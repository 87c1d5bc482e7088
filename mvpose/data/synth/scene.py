"""Static scenery: a textured capture room, occluding objects, chairs, and a ski slope.

Backgrounds are geometric, not pasted 2D pictures: every pixel's viewing ray is intersected with
the floor, walls or slope, so all views of a sequence see the same room and the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mvpose.data.synth.body import Box, Capsule, Ellipsoid
from mvpose.data.synth.cameras import View
from mvpose.data.synth.render import Frame

__all__ = [
    "Room",
    "sample_room",
    "room_background",
    "chair_primitives",
    "sample_occluders",
    "occluder_between",
    "Slope",
    "sample_slope",
    "slope_background",
    "slope_objects",
    "OBJECT_ID",
    "CHAIR_ID",
]

CHAIR_ID = 100
OBJECT_ID = 101
OCCLUDER_ID = 110  # + view index: the objects of the occlusion setting (``occluder_between``)


def noise_texture(rng: np.random.Generator, height: int, width: int, scales=(4, 16, 64), weights=(0.5, 0.3, 0.2)) -> np.ndarray:
    """Smooth random texture (H, W) float32 in about [0, 1]: octaves of upsampled noise."""
    out = np.zeros((height, width), np.float32)
    for s, w in zip(scales, weights):
        small = rng.random((max(height // s, 2), max(width // s, 2))).astype(np.float32)
        out += w * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(out, 0.0, 1.0)


def muted_colour(rng: np.random.Generator, lo: float = 0.15, hi: float = 0.85, saturation: float = 0.35) -> np.ndarray:
    """A BGR colour near grey: a random grey level tinted by up to ``saturation``."""
    grey = rng.uniform(lo, hi)
    return np.clip(grey * (1.0 + saturation * rng.uniform(-1.0, 1.0, 3)), 0.0, 1.0)


def _tinted(tex: np.ndarray, base: np.ndarray, contrast: float) -> np.ndarray:
    """(H, W) texture -> (H, W, 3) float32 BGR colours around ``base``."""
    return np.clip(base[None, None, :] * (1.0 + contrast * (tex[..., None] - 0.5) * 2.0), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Capture room.


@dataclass
class Room:
    """Box-shaped room centred on the capture area; floor at z = 0."""

    center: np.ndarray
    half: tuple[float, float]  # half extents along x and y (mm)
    height: float
    floor: np.ndarray  # (Hf, Wf, 3) float32 BGR tile
    floor_mm: float  # millimetres per floor texel
    walls: np.ndarray  # (Hw, Ww, 3) float32 panorama around the perimeter
    wall_mm: float
    ceiling: np.ndarray  # (3,)


def _wall_panorama(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    base = muted_colour(rng, 0.3, 0.85, 0.25)
    pano = _tinted(noise_texture(rng, height, width, (8, 32, 128)), base, rng.uniform(0.1, 0.4))
    # Clutter: cabinets, doors, posters, shelves, cables.
    for _ in range(int(rng.integers(25, 60))):
        w, h = int(rng.integers(10, 160)), int(rng.integers(10, height * 3 // 4))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(height // 5, height - 5))
        sat = 0.9 if rng.random() < 0.3 else 0.3
        col = tuple(float(c) for c in muted_colour(rng, 0.05, 0.95, sat))
        kind = rng.integers(4)
        if kind == 0:
            cv2.rectangle(pano, (x, y - h), (x + w, y), col, -1)
        elif kind == 1:
            cv2.rectangle(pano, (x, y - h), (x + w, y), col, int(rng.integers(1, 4)))
        elif kind == 2:
            cv2.circle(pano, (x, y - h // 2), int(rng.integers(4, 30)), col, -1)
        else:
            cv2.line(pano, (x, y), (x + int(rng.integers(-80, 80)), y - h), col, int(rng.integers(1, 5)))
    # A darker skirting strip at the floor.
    pano[-max(height // 40, 2):] *= 0.6
    return pano


def _floor_tile(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    base = muted_colour(rng, 0.15, 0.7, 0.25)
    tex = _tinted(noise_texture(rng, size, size, (2, 8, 32)), base, rng.uniform(0.1, 0.35))
    kind = rng.integers(3)
    if kind == 1:  # tiles
        step = int(rng.choice([32, 64, 128]))
        col = tuple(float(c) for c in base * 0.6)
        for k in range(0, size, step):
            cv2.line(tex, (k, 0), (k, size), col, 1)
            cv2.line(tex, (0, k), (size, k), col, 1)
    elif kind == 2:  # planks
        step = int(rng.choice([16, 32]))
        for k in range(0, size, step):
            tex[k : k + step] *= rng.uniform(0.85, 1.15)
    return np.clip(tex, 0, 1)


def sample_room(rng: np.random.Generator, center: np.ndarray) -> Room:
    """A random room around ``center`` enclosing the Human3.6M cameras (|x| < 2.3 m, |y| < 5.3 m)."""
    half = (float(rng.uniform(3200, 4200)), float(rng.uniform(6200, 7200)))
    height = float(rng.uniform(3000, 4000))
    wall_mm = 30.0
    perimeter = 4 * (half[0] + half[1])
    walls = _wall_panorama(rng, int(perimeter / wall_mm), int(height / wall_mm))
    return Room(
        center=np.asarray(center, float),
        half=half,
        height=height,
        floor=_floor_tile(rng),
        floor_mm=float(rng.uniform(4.0, 10.0)),
        walls=walls,
        wall_mm=wall_mm,
        ceiling=muted_colour(rng, 0.5, 0.9, 0.1),
    )


def room_background(room: Room, view: View, gains: np.ndarray) -> Frame:
    """Floor, walls and ceiling seen by ``view`` (depth inf: the room never hides anything)."""
    d = view.world_rays()
    dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
    C = view.center.astype(np.float32)
    X, Y = room.half
    cx, cy = float(room.center[0]), float(room.center[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = np.where(dx > 0, np.float32(cx + X - C[0]), np.float32(cx - X - C[0])) / dx
        ty = np.where(dy > 0, np.float32(cy + Y - C[1]), np.float32(cy - Y - C[1])) / dy
        tf = np.where(dz < 0, -C[2] / dz, np.float32(np.inf))
    on_x = tx < ty
    tw = np.where(on_x, tx, ty)
    lx = C[0] - cx + tw * dx
    ly = C[1] - cy + tw * dy
    # Perimeter coordinate: walls y = -Y, x = +X, y = +Y, x = -X in turn.
    u = np.where(
        on_x,
        np.where(lx > 0, 2 * X + (ly + Y), 4 * X + 2 * Y + (Y - ly)),
        np.where(ly < 0, lx + X, 2 * X + 2 * Y + (X - lx)),
    )
    v = room.height - (C[2] + tw * dz)
    inv = np.float32(1.0 / room.wall_mm)
    wall = cv2.remap(room.walls, u * inv, v * inv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    floor_hit = tf < tw
    tf = np.where(floor_hit, tf, 0.0)
    fs = room.floor.shape[0]
    finv = np.float32(1.0 / room.floor_mm)
    floor = cv2.remap(
        room.floor, np.mod((C[0] + tf * dx) * finv, fs), np.mod((C[1] + tf * dy) * finv, fs),
        cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP,
    )
    img = np.where(floor_hit[..., None], floor, wall)
    img[~floor_hit & (v < 0)] = room.ceiling
    img *= (gains * 255.0).astype(np.float32)
    frame = Frame.empty(view.width, view.height)
    np.clip(img + 0.5, 0, 255, out=img)
    frame.color[:] = img.astype(np.uint8)
    return frame


# ---------------------------------------------------------------------------------------------
# Objects.


def _frame_z(heading: float) -> np.ndarray:
    c, s = np.cos(heading), np.sin(heading)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def chair_primitives(x: float, y: float, heading: float, seat_top: float, rng: np.random.Generator) -> list:
    """A chair facing ``heading`` whose seat top is at ``seat_top``: seat, backrest and four legs."""
    A = _frame_z(heading)
    col = rng.uniform(0.1, 0.7, 3)
    w, dpt, th = rng.uniform(420, 500), rng.uniform(400, 460), 40.0
    c = np.array([x, y, seat_top - th / 2])
    prims = [Box(c, A, np.array([dpt / 2, w / 2, th / 2]), col, CHAIR_ID)]
    back_h = rng.uniform(350, 500)
    prims.append(
        Box(c + A @ np.array([-dpt / 2 - 15, 0.0, th / 2 + back_h / 2]), A, np.array([15.0, w / 2, back_h / 2]), col * 0.9, CHAIR_ID)
    )
    leg_h = seat_top - th
    for sx in (-1, 1):
        for sy in (-1, 1):
            p = c + A @ np.array([sx * (dpt / 2 - 25), sy * (w / 2 - 25), 0.0])
            prims.append(Box(np.array([p[0], p[1], leg_h / 2]), A, np.array([18.0, 18.0, leg_h / 2]), col * 0.7, CHAIR_ID))
    return prims


def _random_object(rng: np.random.Generator, p: np.ndarray, pid: int) -> tuple[list, float]:
    """A random object standing on the floor at ``p``; returns primitives and a footprint radius."""
    col = muted_colour(rng, 0.05, 0.95, 0.8)
    kind = rng.integers(4)
    if kind == 0:  # box, cabinet or table
        half = np.array([rng.uniform(150, 500), rng.uniform(150, 500), rng.uniform(200, 600)])
        A = _frame_z(rng.uniform(0, np.pi))
        return [Box(np.array([p[0], p[1], half[2]]), A, half, col, pid)], float(np.hypot(half[0], half[1]))
    if kind == 1:  # pillar or stand
        r, h = rng.uniform(50, 160), rng.uniform(900, 2300)
        return [Capsule(np.array([p[0], p[1], r]), np.array([p[0], p[1], h - r]), r, col, pid)], r
    if kind == 2:  # ball
        r = rng.uniform(150, 350)
        return [Ellipsoid(np.array([p[0], p[1], r]), np.eye(3), np.full(3, r), col, pid)], r
    # screen on a stand: thin panel on a pole
    h, w = rng.uniform(1100, 1800), rng.uniform(400, 900)
    A = _frame_z(rng.uniform(0, np.pi))
    panel = Box(np.array([p[0], p[1], h]), A, np.array([20.0, w / 2, rng.uniform(200, 400)]), col, pid)
    pole = Capsule(np.array([p[0], p[1], 30.0]), np.array([p[0], p[1], h]), 25.0, col * 0.6, pid)
    return [panel, pole], w / 2


def sample_occluders(
    rng: np.random.Generator, center: np.ndarray, keep_out: np.ndarray, keep_out_radius: float, cameras: list[np.ndarray]
) -> list:
    """0-3 objects on the floor, never within ``keep_out_radius`` of the body path ``keep_out (N, 3)``.

    Half the time one object is put between a random camera and the person, so that it occludes.
    """
    prims: list = []
    count = int(rng.integers(0, 4))
    for k in range(count):
        for _ in range(30):
            if k == 0 and rng.random() < 0.5:
                person = keep_out[rng.integers(len(keep_out))]
                cam = cameras[rng.integers(len(cameras))]
                p = person + rng.uniform(0.25, 0.55) * (cam - person)
                p = p + rng.normal(0, 300, 3)
            else:
                p = center + np.array([rng.uniform(-2500, 2500), rng.uniform(-3500, 3500), 0.0])
            p[2] = 0.0
            obj, radius = _random_object(rng, p, OBJECT_ID + k)
            dist = np.min(np.linalg.norm(keep_out[:, :2] - p[:2], axis=-1))
            cam_dist = min(np.linalg.norm(c[:2] - p[:2]) for c in cameras)
            if dist > keep_out_radius + radius and cam_dist > radius + 600:
                prims += obj
                break
    return prims


OCCLUDER_KINDS = ("wall", "pillar", "screen")


def occluder_between(rng: np.random.Generator, joints: np.ndarray, camera: np.ndarray, pid: int) -> tuple[list, str]:
    """An object standing between ``camera`` and the person, sized to hide limbs in that camera's view.

    Placed on the floor (z = 0) on the horizontal line from the pelvis to the camera, 0.7-1.5 m in
    front of the person (never within 0.25 m of a joint, so it does not cut the body) and shifted
    sideways by up to 0.3 m. One of :data:`OCCLUDER_KINDS`: a low wall (0.8-1.2 m tall: legs and
    hips), a pillar beside the line (one side's arm and leg) or a screen on a pole at chest height
    (arms and torso). About 1 m in front of a person watched from 4-5 m, it hides a limb in this
    view and stands beside the person, not in front, for cameras at other angles.

    Args:
        rng: the generator (the occlusion setting has its own, so the scene without it is unchanged).
        joints: (17, 3) world joints of the frame, mm, skeleton "h36m" (pelvis first).
        camera: (3,) the camera centre, world mm.
        pid: part id of the object (never a body part's id).

    Returns:
        (primitives, kind).
    """
    root = joints[0]
    d = np.asarray(camera, dtype=np.float64)[:2] - root[:2]
    d = d / max(float(np.linalg.norm(d)), 1e-9)
    side = np.array([-d[1], d[0]])
    heading = float(np.arctan2(d[1], d[0]))
    A = _frame_z(heading)  # x axis towards the camera
    col = muted_colour(rng, 0.05, 0.95, 0.8)
    kind = OCCLUDER_KINDS[int(rng.integers(len(OCCLUDER_KINDS)))]
    if kind == "wall":
        half = np.array([rng.uniform(30, 80), rng.uniform(300, 550), rng.uniform(400, 600)])
        offset, radius = rng.uniform(-150, 150), float(np.hypot(half[0], half[1]))
    elif kind == "pillar":
        r = rng.uniform(120, 200)
        offset, radius = rng.choice([-1.0, 1.0]) * rng.uniform(100, 300), r
    else:
        half = np.array([20.0, rng.uniform(250, 450), rng.uniform(250, 400)])
        offset, radius = rng.uniform(-300, 300), float(half[1])
    dist = rng.uniform(700, 1100)
    for _ in range(8):  # step away from the person until no joint is within 0.25 m of the object
        q = root[:2] + dist * d + offset * side
        if np.min(np.linalg.norm(joints[:, :2] - q, axis=-1)) > radius + 250.0 or dist > 1500:
            break
        dist += 150.0
    if kind == "wall":
        return [Box(np.array([q[0], q[1], half[2]]), A, half, col, pid)], kind
    if kind == "pillar":
        return [Capsule(np.array([q[0], q[1], 0.0]), np.array([q[0], q[1], rng.uniform(1900, 2400)]), r, col, pid)], kind
    h = rng.uniform(1000, 1450)
    panel = Box(np.array([q[0], q[1], h]), A, half, col, pid)
    pole = Capsule(np.array([q[0], q[1], 0.0]), np.array([q[0], q[1], h]), 25.0, col * 0.6, pid)
    return [panel, pole], kind


# ---------------------------------------------------------------------------------------------
# Ski slope: the plane z = -tan(angle) x (downhill towards +x), millimetres.


@dataclass
class Slope:
    angle: float
    snow: np.ndarray  # (S, S, 3) float32 tile
    snow_mm: float
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    objects: list  # static primitives (gates, nets, trees)

    @property
    def normal(self) -> np.ndarray:
        return np.array([np.sin(self.angle), 0.0, np.cos(self.angle)])

    def height(self, x: np.ndarray) -> np.ndarray:
        return -np.tan(self.angle) * x


def sample_slope(rng: np.random.Generator, angle: float, course_y, x_range: tuple[float, float]) -> Slope:
    """A snowy slope of ``angle`` with slalom gates along ``course_y(x)`` (mm), nets and trees beside it."""
    tex = noise_texture(rng, 256, 256, (2, 8, 32), (0.3, 0.4, 0.3))
    snow = _tinted(tex, np.array([0.95, 0.93, 0.9]) * rng.uniform(0.85, 1.0), 0.06)
    # Blue guide lines painted across the course.
    for _ in range(int(rng.integers(0, 4))):
        y = int(rng.integers(0, 256))
        cv2.line(snow, (0, y), (255, y + int(rng.integers(-20, 20))), (0.75, 0.5, 0.3), 1)
    slope = Slope(
        angle=angle,
        snow=snow,
        snow_mm=float(rng.uniform(20, 60)),
        sky_top=np.array([0.8, 0.5, 0.25]) * rng.uniform(0.8, 1.1),
        sky_horizon=np.array([0.95, 0.9, 0.85]) * rng.uniform(0.85, 1.0),
        objects=[],
    )
    objs: list = []
    x0, x1 = x_range
    pid = OBJECT_ID
    gate_col = [np.array([0.1, 0.1, 0.85]), np.array([0.8, 0.3, 0.1])]
    spacing = rng.uniform(12000, 16000)
    for k, gx in enumerate(np.arange(x0 - 20000, x1 + 20000, spacing)):
        gy = float(course_y(np.array([gx]))[0]) + rng.uniform(-1500, 1500) + (3000 if k % 2 else -3000)
        col = gate_col[k % 2]
        for dy in (-400.0, 400.0):
            base = np.array([gx, gy + dy, slope.height(gx)])
            objs.append(Capsule(base, base + np.array([0, 0, 1800.0]), 16.0, col, pid))
        top = np.array([gx, gy, slope.height(gx) + 1500.0])
        objs.append(Box(top, np.eye(3), np.array([10.0, 380.0, 300.0]), col, pid))
    # Safety nets along both sides and trees further out.
    net_col = np.array([0.1, 0.45, 0.95]) * rng.uniform(0.7, 1.0)
    for sgn in (-1.0, 1.0):
        yn = sgn * rng.uniform(42000, 50000)
        for nx in np.arange(x0 - 40000, x1 + 40000, 10000.0):
            c = np.array([nx, yn, slope.height(nx) + 800])
            A = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
            objs.append(Box(c, A, np.array([5000.0, 30.0, 800.0]), net_col, pid + 1))
        for _ in range(int(rng.integers(8, 20))):
            tx = rng.uniform(x0 - 60000, x1 + 60000)
            ty = sgn * rng.uniform(55000, 90000)
            h = rng.uniform(4000, 12000)
            base = np.array([tx, ty, slope.height(tx)])
            objs.append(Capsule(base, base + np.array([0, 0, 0.4 * h]), 0.03 * h, np.array([0.1, 0.2, 0.3]), pid + 2))
            crown = Ellipsoid(base + np.array([0, 0, 0.65 * h]), np.eye(3), np.array([0.18, 0.18, 0.4]) * h, np.array([0.2, 0.35, 0.1]) * rng.uniform(0.6, 1.2), pid + 2)
            objs.append(crown)
    slope.objects = objs
    return slope


def slope_background(slope: Slope, view: View, gains: np.ndarray) -> Frame:
    """Snow and sky seen by ``view``; snow fades into haze with distance."""
    d = view.world_rays()
    C = view.center
    n = slope.normal
    denom = d @ n.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.float32(-(C @ n)) / denom
    hit = (t > 0) & np.isfinite(t)
    t = np.where(hit, t, np.float32(0.0))
    fs = slope.snow.shape[0]
    inv = np.float32(1.0 / slope.snow_mm)
    snow = cv2.remap(
        slope.snow,
        np.mod((np.float32(C[0]) + t * d[..., 0]) * inv, fs),
        np.mod((np.float32(C[1]) + t * d[..., 1]) * inv, fs),
        cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP,
    )
    norm = np.sqrt(np.einsum("...i,...i->...", d, d))
    sky_w = np.clip(d[..., 2] / norm * 4.0, 0.0, 1.0)[..., None]
    horizon, top = slope.sky_horizon.astype(np.float32), slope.sky_top.astype(np.float32)
    sky = horizon + (top - horizon) * sky_w
    haze = np.clip(t * norm * np.float32(1.0 / 400000.0), 0.0, 1.0)[..., None]
    img = np.where(hit[..., None], snow + (horizon - snow) * haze, sky)
    img *= (gains * 255.0).astype(np.float32)
    np.clip(img + 0.5, 0, 255, out=img)
    frame = Frame.empty(view.width, view.height)
    frame.color[:] = img.astype(np.uint8)
    return frame


def _bounding_sphere(prim) -> tuple[np.ndarray, float]:
    if isinstance(prim, Capsule):
        return 0.5 * (prim.a + prim.b), 0.5 * float(np.linalg.norm(prim.b - prim.a)) + prim.radius
    if isinstance(prim, Ellipsoid):
        return prim.center, float(np.max(prim.radii))
    return prim.center, float(np.linalg.norm(prim.half))


def slope_objects(slope: Slope, view: View) -> list:
    """Static slope objects whose bounding sphere may be seen by ``view`` (cheap frustum culling)."""
    out = []
    for prim in slope.objects:
        c, r = _bounding_sphere(prim)
        cam = view.to_camera(c)
        if cam[2] < -r:
            continue
        if cam[2] <= r:  # around the camera plane: let the renderer decide
            out.append(prim)
            continue
        uv = view.project_camera(cam)
        pad = r * view.K[0, 0] / (cam[2] - r) if cam[2] > r else np.inf
        if -pad < uv[0] < view.width + pad and -pad < uv[1] < view.height + pad:
            out.append(prim)
    return out
