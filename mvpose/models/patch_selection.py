"""Patch selection of ViTransPose (paper 000, section 3.1), vectorised over batch and joints.

Guiding keypoints (from a lightweight pose estimator, or given) select which ``ph x pw`` patches
of the ``h x w`` patch grid the ViT encoder processes:

- ``neighbors`` (3.1.1): each keypoint's own patch plus its first ``n`` neighbours in
  breadth-first order on the 4-connected patch grid;
- ``skeleton`` (3.1.2): the patches crossed by each bone of the skeleton, rasterised on the
  patch grid with Bresenham's line algorithm (plus the ``n`` BFS neighbours of each joint).

Patch coordinates are ``(x, y) = (column, row)`` like the keypoints; the row-major index of a
patch is ``y * w + x``. Everything here is tensor arithmetic with fixed shapes (no per-sample
Python loops), so it also runs on the ``meta`` device used to count MACs.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Sequence

import torch

__all__ = [
    "BFS_NEIGHBOR_ORDER",
    "keypoints_to_patches",
    "bfs_offsets",
    "neighbor_patch_mask",
    "bresenham_points",
    "bresenham_patch_mask",
    "select_patches",
    "distance_to_keypoints",
    "selected_token_index",
]

# Order in which BFS visits the 4 neighbours of a patch, as (dx, dy): up, down, left, right.
# The paper does not give one; it only matters for which patches of a ring are taken when
# ``n`` stops inside the ring.
BFS_NEIGHBOR_ORDER: tuple[tuple[int, int], ...] = ((0, -1), (0, 1), (-1, 0), (1, 0))


def keypoints_to_patches(
    keypoints: torch.Tensor, patch_size: Sequence[int], grid: Sequence[int]
) -> torch.Tensor:
    """The patch holding each keypoint.

    Args:
        keypoints: (..., J, 2) ``(x, y)`` in input pixels.
        patch_size: ``(ph, pw)`` patch height and width in pixels.
        grid: ``(h, w)`` patch grid.

    Returns:
        (..., J, 2) long ``(column, row)``; keypoints outside the image are clamped to the
        border patch (the estimator's guess still says which side the joint is on).
    """
    ph, pw = patch_size
    h, w = grid
    col = torch.floor(keypoints[..., 0] / pw).clamp(0, w - 1)
    row = torch.floor(keypoints[..., 1] / ph).clamp(0, h - 1)
    return torch.stack((col, row), dim=-1).long()


@lru_cache(maxsize=32)
def _bfs_offset_list(num_neighbors: int) -> tuple[tuple[int, int], ...]:
    """Offsets within Manhattan distance ``num_neighbors`` of the origin in BFS visiting order."""
    order = [(0, 0)]
    seen = {(0, 0)}
    queue = deque([(0, 0)])
    while queue:
        x, y = queue.popleft()
        if abs(x) + abs(y) >= num_neighbors:
            continue
        for dx, dy in BFS_NEIGHBOR_ORDER:
            nxt = (x + dx, y + dy)
            if nxt not in seen:
                seen.add(nxt)
                order.append(nxt)
                queue.append(nxt)
    return tuple(order)


def bfs_offsets(num_neighbors: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Offsets ``(dx, dy)`` from a source patch in breadth-first order on the unbounded grid.

    BFS on a rectangular 4-connected grid visits the in-grid patches in exactly this order
    restricted to the grid: every patch's closer neighbours lie between it and the source,
    hence inside the rectangle, so clipping the grid removes patches but never reorders
    them. Distance ``n`` suffices: ``n`` neighbours are always found within it (a 1-wide
    grid is the worst case).

    Args:
        num_neighbors: n >= 0.

    Returns:
        (M, 2) long, source ``(0, 0)`` first, ``M = 2 n^2 + 2 n + 1``.
    """
    if num_neighbors < 0:
        raise ValueError(f"bfs_offsets: num_neighbors must be >= 0, found {num_neighbors}")
    return torch.tensor(_bfs_offset_list(int(num_neighbors)), dtype=torch.long, device=device)


def _flat_mask(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Mark patches ``(x, y)`` (B, ...) where ``valid`` in a (B, h*w) bool mask."""
    h, w = grid
    b = x.shape[0]
    # Invalid points go to a spare column that is dropped, so no write clobbers another.
    flat = torch.where(valid, y * w + x, torch.full_like(x, h * w)).reshape(b, -1)
    mask = torch.zeros(b, h * w + 1, dtype=torch.bool, device=x.device)
    return mask.scatter_(1, flat, True)[:, : h * w]


def neighbor_patch_mask(patches: torch.Tensor, grid: Sequence[int], num_neighbors: int) -> torch.Tensor:
    """Each keypoint patch and its first ``n`` in-grid BFS neighbours (paper 000, 3.1.1).

    Args:
        patches: (B, J, 2) long ``(column, row)``.
        grid: ``(h, w)``.
        num_neighbors: n >= 0 neighbours per keypoint (0: the keypoint patch only).

    Returns:
        (B, h*w) bool, row-major.
    """
    h, w = grid
    offsets = bfs_offsets(num_neighbors, patches.device)  # (M, 2)
    cand = patches[:, :, None, :] + offsets  # (B, J, M, 2)
    x, y = cand[..., 0], cand[..., 1]
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    # Rank among the in-grid candidates in BFS order; the source has rank 1.
    rank = inside.long().cumsum(dim=-1)
    keep = inside & (rank <= num_neighbors + 1)
    return _flat_mask(x, y, keep, grid)


def bresenham_points(start: torch.Tensor, end: torch.Tensor, max_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer points of Bresenham's line from ``start`` to ``end`` (both included).

    The line takes one point per step along its major axis; at step ``i`` of ``L`` the minor
    coordinate moves by ``ceil(i * |d_minor| / L - 1/2)``: the nearest integer, ties going to
    the start side. This is the textbook integer algorithm (error term, step when ``D > 0``)
    in closed form, so all lines are drawn at once.

    Args:
        start, end: (..., 2) long ``(x, y)``.
        max_steps: an upper bound on ``max(|dx|, |dy|)`` of every line.

    Returns:
        points (..., max_steps + 1, 2) long and valid (..., max_steps + 1) bool (the first
        ``max(|dx|, |dy|) + 1`` points of each line are valid).
    """
    d = end - start
    ad = d.abs()
    sign = torch.sign(d)
    length = ad.max(dim=-1).values  # (...,)
    minor = ad.min(dim=-1).values
    x_major = ad[..., 0] >= ad[..., 1]
    i = torch.arange(max_steps + 1, device=start.device)  # (S,)
    L = length.clamp_min(1)[..., None]
    step_minor = torch.div(2 * i * minor[..., None] + L - 1, 2 * L, rounding_mode="floor")  # (..., S)
    step_x = torch.where(x_major[..., None], i, step_minor)
    step_y = torch.where(x_major[..., None], step_minor, i)
    points = start[..., None, :] + torch.stack((step_x, step_y), dim=-1) * sign[..., None, :]
    valid = i <= length[..., None]
    return points, valid


def bresenham_patch_mask(
    patches: torch.Tensor, limbs: torch.Tensor | Sequence[Sequence[int]], grid: Sequence[int]
) -> torch.Tensor:
    """Patches crossed by the bones (paper 000, 3.1.2).

    Args:
        patches: (B, J, 2) long ``(column, row)`` of the joints.
        limbs: (L, 2) joint index pairs ``(a, b)``; each bone is drawn from ``a`` to ``b``.
        grid: ``(h, w)``.

    Returns:
        (B, h*w) bool, row-major.
    """
    h, w = grid
    if not isinstance(limbs, torch.Tensor):
        pairs = [(int(a), int(b)) for a, b in limbs]
        bad = [p for p in pairs if not (0 <= p[0] < patches.shape[1] and 0 <= p[1] < patches.shape[1])]
        if bad:
            raise ValueError(f"bresenham_patch_mask: limbs {bad} index joints outside the {patches.shape[1]} given")
        limbs = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    limbs = limbs.to(device=patches.device, dtype=torch.long)
    start, end = patches[:, limbs[:, 0]], patches[:, limbs[:, 1]]  # (B, L, 2)
    points, valid = bresenham_points(start, end, max(h, w) - 1)
    return _flat_mask(points[..., 0], points[..., 1], valid, grid)


def select_patches(
    keypoints: torch.Tensor,
    image_size: Sequence[int],
    patch_size: Sequence[int],
    method: str,
    num_neighbors: int = 0,
    limbs: torch.Tensor | Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """Patches selected by the guiding keypoints.

    Args:
        keypoints: (B, J, 2) ``(x, y)`` in input pixels.
        image_size: ``(H, W)``; patch_size: ``(ph, pw)`` dividing it.
        method: ``neighbors`` or ``skeleton`` (the skeleton's bones plus the joints' BFS
            neighbourhoods).
        num_neighbors: BFS neighbours per keypoint.
        limbs: (L, 2) bones, required by ``skeleton``.

    Returns:
        (B, h*w) bool, row-major over the patch grid.
    """
    grid = (image_size[0] // patch_size[0], image_size[1] // patch_size[1])
    patches = keypoints_to_patches(keypoints, patch_size, grid)
    mask = neighbor_patch_mask(patches, grid, num_neighbors)
    if method == "neighbors":
        return mask
    if method == "skeleton":
        if limbs is None:
            raise ValueError("select_patches: method 'skeleton' needs limbs")
        return mask | bresenham_patch_mask(patches, limbs, grid)
    raise ValueError(f"select_patches: method must be 'neighbors' or 'skeleton', found {method!r}")


def distance_to_keypoints(keypoints: torch.Tensor, image_size: Sequence[int], patch_size: Sequence[int]) -> torch.Tensor:
    """Squared distance (in patches) from every patch to the nearest keypoint patch.

    Args:
        keypoints: (B, J, 2) ``(x, y)`` input pixels.

    Returns:
        (B, h*w) float, row-major.
    """
    h, w = image_size[0] // patch_size[0], image_size[1] // patch_size[1]
    patches = keypoints_to_patches(keypoints, patch_size, (h, w)).to(keypoints.dtype)  # (B, J, 2)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=keypoints.device), torch.arange(w, device=keypoints.device), indexing="ij"
    )
    cells = torch.stack((xs, ys), dim=-1).reshape(1, h * w, 1, 2).to(keypoints.dtype)
    return ((cells - patches[:, None]) ** 2).sum(-1).min(dim=-1).values


def selected_token_index(
    mask: torch.Tensor, priority: torch.Tensor | None = None, num_tokens: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather plan for a variable number of selected tokens per image.

    Selected tokens come first, ordered by descending ``priority`` (ties: grid order); the
    rest of the K slots are padding to be hidden with a key padding mask.

    Args:
        mask: (B, N) bool, selected tokens.
        priority: (B, N) float, higher first (default: grid order).
        num_tokens: K, a fixed token budget (selected tokens beyond it, lowest priority
            first, are dropped); default: the largest selected count in the batch.

    Returns:
        index (B, K) long into the N tokens, padding (B, K) bool (True: not selected).
    """
    b, n = mask.shape
    if num_tokens is None:
        num_tokens = max(1, int(mask.sum(dim=1).max()))
    if not 1 <= num_tokens <= n:
        raise ValueError(f"selected_token_index: num_tokens must be in 1..{n}, found {num_tokens}")
    key = torch.zeros(b, n, device=mask.device) if priority is None else priority.float()
    # Selected tokens always sort before unselected ones, whatever their priority.
    key = torch.where(mask, key - key.min() + 1.0, torch.zeros_like(key) - 1.0)
    order = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :num_tokens]
    return order, ~torch.gather(mask, 1, order)
