"""Rendering a synthetic video: scene and motion -> frames ``(T, H, W, 3)`` uint8, vectorised
over time and pixels (anti-aliased shapes on a torus, textures, noise, blur)."""
from __future__ import annotations

import numpy as np

from vidlab.data.synthetic.config import CLASSES, DOMAINS, SyntheticConfig
from vidlab.data.synthetic.shapes import ACTOR_SHAPES, DISTRACTOR_SHAPES
from vidlab.data.synthetic.world import _actor_trajectory, _draw_scene


def _corners(coord: np.ndarray, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Periodic grid cells around ``coord`` ``(T, N)``: lower index, upper index, fraction (float32)."""
    lo = np.floor(coord)
    frac = (coord - lo).astype(np.float32)
    lo = lo.astype(np.int64) % g
    return lo, (lo + 1) % g, frac


def _periodic_texture(grid: np.ndarray, wx: np.ndarray, wy: np.ndarray, size: int) -> np.ndarray:
    """Bilinear sample of a periodic ``(g, g, 3)`` grid spanning the frame -> ``(T, H, W, 3)``.

    ``wx`` is ``(T, 1, W)`` and ``wy`` ``(T, H, 1)``. Written as gathers and elementwise
    products (first along y, then along x) rather than matrix products: BLAS picks its kernels
    by CPU and rounds differently on each, which would make the frames depend on the machine.
    """
    g = grid.shape[0]
    x0, x1, fx = _corners(wx[:, 0, :] * (g / size), g)  # (T, W)
    y0, y1, fy = _corners(wy[:, :, 0] * (g / size), g)  # (T, H)
    fy = fy[:, :, None, None]
    rows = grid[y0] * (1 - fy) + grid[y1] * fy  # (T, H, g, 3)
    fx = fx[:, None, :, None]
    left = np.take_along_axis(rows, x0[:, None, :, None], axis=2)  # (T, H, W, 3)
    right = np.take_along_axis(rows, x1[:, None, :, None], axis=2)
    return left * (1 - fx) + right * fx


def _render_background(bg: dict, wx: np.ndarray, wy: np.ndarray, size: int) -> np.ndarray:
    """Background colour at world coordinates ``wx`` ``(T, 1, W)``, ``wy`` ``(T, H, 1)`` -> ``(T, H, W, 3)``."""
    c1, c2 = bg["c1"], bg["c2"]
    ca, sa = np.float32(np.cos(bg["angle"])), np.float32(np.sin(bg["angle"]))
    shape = (wx.shape[0], wy.shape[1], wx.shape[2])
    if bg["kind"] == "gradient":
        proj = (((wx - size / 2) * (ca / size) + (wy - size / 2) * (sa / size)) + 0.5).clip(0, 1)[..., None]
        img = c1 + (c2 - c1) * proj
    elif bg["kind"] == "stripes":
        k = np.float32(2 * np.pi / bg["period"])
        phase_x, phase_y = wx * (ca * k), wy * (sa * k)  # sin(a + b) = sin a cos b + cos a sin b
        wave = np.sin(phase_x) * np.cos(phase_y) + np.cos(phase_x) * np.sin(phase_y)
        img = c1 + (c2 - c1) * (0.5 + 0.5 * wave)[..., None]
    else:  # solid, texture
        img = np.broadcast_to(c1, shape + (3,)).copy()
    if bg["kind"] in ("texture", "stripes"):
        img += _periodic_texture(bg["grid"], wx, wy, size)
    for blob in bg["blobs"]:  # static in the world: only touch its bounding box
        reach = blob["radius"] + float(np.abs(wx[:, 0, 0] - 0.5).max()) + 2
        (x0, y0), (x1, y1) = [np.clip(np.floor(blob["position"] + k * reach), 0, size).astype(int) for k in (-1, 1)]
        if x1 <= x0 or y1 <= y0:
            continue
        bx, by = wx[:, :, x0:x1], wy[:, y0:y1, :]
        sdf = np.sqrt((bx - np.float32(blob["position"][0])) ** 2 + (by - np.float32(blob["position"][1])) ** 2)
        _over(img[:, y0:y1, x0:x1], np.clip(np.float32(0.5 + blob["radius"]) - sdf, 0, 1), blob["colour"])
    return img.astype(np.float32, copy=False)


def _over(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Composite ``colour`` (``(3,)`` or ``(T, H, W, 3)``) over ``img`` ``(T, H, W, 3)`` in place.

    ``alpha`` is the coverage in [0, 1], broadcastable to ``(T, H, W)``.
    """
    diff = colour - img
    diff *= alpha[..., None]
    img += diff


def _object_coverage(shape_fn, wx, wy, cx, cy, angle, radius, size, *, wrap: bool):
    """Anti-aliased coverage ``(T, H, W)`` in [0, 1] of a shape, and its local x coordinate.

    ``wx`` is ``(T, 1, W)``, ``wy`` ``(T, H, 1)`` (world coordinates of the pixels);
    ``cx, cy, angle, radius`` are ``(T,)``. With ``wrap`` the world is a torus of side ``size``.
    """
    f32 = lambda a: np.asarray(a, dtype=np.float32)[:, None, None]  # noqa: E731
    dx = wx - f32(cx)
    dy = wy - f32(cy)
    if wrap:  # nearest periodic image of the object
        half = np.float32(size / 2)
        dx = (dx + half) % np.float32(size) - half
        dy = (dy + half) % np.float32(size) - half
    r = f32(radius)
    c = f32(np.cos(angle)) / r
    s = f32(np.sin(angle)) / r
    lx = c * dx + s * dy  # rotate by -angle into the object's frame, in radii
    ly = c * dy - s * dx
    sdf_pixels = shape_fn(lx, ly) * r
    return np.clip(0.5 - sdf_pixels, 0.0, 1.0), lx


def _blur(img: np.ndarray, passes: int) -> np.ndarray:
    """Binomial [1, 2, 1] / 4 blur over H and W, ``passes`` times; ``img`` is ``(T, H, W, 3)``."""
    for _ in range(passes):
        for axis in (1, 2):
            out = img * np.float32(0.5)
            lo = [slice(None)] * 4
            hi = [slice(None)] * 4
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            out[tuple(hi)] += np.float32(0.25) * img[tuple(lo)]  # neighbour before
            out[tuple(lo)] += np.float32(0.25) * img[tuple(hi)]  # neighbour after
            first = [slice(None)] * 4
            last = [slice(None)] * 4
            first[axis], last[axis] = slice(0, 1), slice(-1, None)
            out[tuple(first)] += np.float32(0.25) * img[tuple(first)]  # edges: repeat the border
            out[tuple(last)] += np.float32(0.25) * img[tuple(last)]
            img = out
    return img


def render_video(label: int, rng: np.random.Generator, cfg: SyntheticConfig, *, domain: str = "A") -> np.ndarray:
    """Render one video of class ``label`` -> frames ``(T, H, W, 3)`` uint8 RGB.

    ``T = cfg.num_frames``, ``H = W = cfg.size``. ``rng`` is consumed (three seeds are drawn
    from it). For the same ``rng`` state the first frame does not depend on ``label``.
    ``domain`` is ``"A"`` (train/val/test/unlabeled look) or ``"B"`` (the shifted look).
    """
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < len(CLASSES):
        raise ValueError(f"render_video: label must be an int in [0, {len(CLASSES) - 1}], got {label!r}")
    if domain not in DOMAINS:
        raise ValueError(f"render_video: domain must be one of {DOMAINS}, got {domain!r}")
    scene_seed, motion_seed, noise_seed = rng.integers(0, 2**63, size=3)
    scene = _draw_scene(np.random.default_rng(scene_seed), cfg, domain)
    ax, ay, aangle, aradius = _actor_trajectory(int(label), np.random.default_rng(motion_seed), scene, cfg)

    size, n = cfg.size, cfg.num_frames
    pix = np.arange(size, dtype=np.float32) + 0.5
    # World coordinates seen by each pixel, (T, 1, W) and (T, H, 1): the camera shakes by scene.jitter.
    wx = pix[None, None, :] + scene.jitter[:, 0, None, None]
    wy = pix[None, :, None] + scene.jitter[:, 1, None, None]

    img = _render_background(scene.background, wx, wy, size)
    u = np.linspace(0.0, 1.0, n)
    for d in scene.distractors:
        lo, hi = d["radius"], size - d["radius"]
        span = hi - lo
        pos = []
        for axis in range(2):  # constant velocity, elastic bounces off the frame walls
            q = np.mod(d["position"][axis] - lo + d["velocity"][axis] * u, 2 * span)
            pos.append(lo + np.where(q < span, q, 2 * span - q))
        alpha, _ = _object_coverage(DISTRACTOR_SHAPES[d["shape"]], wx, wy, pos[0], pos[1],
                                    np.full(n, d["angle"]), np.full(n, d["radius"]), size, wrap=False)
        _over(img, alpha, d["colour"])

    alpha, local_x = _object_coverage(ACTOR_SHAPES[scene.shape], wx, wy, ax, ay, aangle, aradius, size, wrap=True)
    if scene.stripe_colour is None:
        colour = scene.colour
    else:  # stripes fixed to the actor: they turn and scale with it
        stripes = 0.5 + 0.5 * np.tanh(4.0 * np.sin(local_x * (2 * np.pi / scene.stripe_period)))
        colour = scene.colour + (scene.stripe_colour - scene.colour) * stripes[..., None].astype(np.float32)
    _over(img, alpha, colour)

    if scene.bar is not None:
        coord = wx if scene.bar["vertical"] else wy
        alpha = np.clip(0.5 - (np.abs(coord - scene.bar["position"]) - scene.bar["width"] / 2), 0.0, 1.0)
        _over(img, alpha, scene.bar["colour"])

    if scene.blur_passes:
        img = _blur(img, scene.blur_passes)
    noise_rng = np.random.default_rng(noise_seed)
    if scene.noise_std > 0:
        img += noise_rng.standard_normal(img.shape, dtype=np.float32) * np.float32(scene.noise_std)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
