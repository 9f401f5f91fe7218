"""An embedded synthetic action dataset: real H.264 ``.mp4`` files plus a manifest.

The world
---------
Each video shows one *actor* (the largest object) doing one of the motions in
:data:`CLASSES`. A single frame says nothing about the class: every class draws the scene
(actor shape, size, colour, start position and angle, background, distractors, occluder,
camera shake, sensor noise) from the same distribution, in the same order, from its own
random stream, and only then the motion. So for a given random state, the first frame is
identical whatever the label (``tests/test_synthetic.py`` checks this).

* The world wraps around like a torus (an actor leaving one edge re-enters at the opposite
  one), and start positions and angles are uniform. So, for the direction pairs
  (left/right, up/down, clockwise/counter-clockwise), the set of frames of a video has the
  same distribution for both directions: a per-frame model averaged over time cannot tell
  them apart, only the order of the frames can. (Grow/shrink differ in their size
  distribution over a clip; their start sizes are the same.)
* Motions are given as a fraction of the clip, so the ``smoke`` preset (16 frames) shows the
  same motions as ``cpu`` (32 frames), sampled more coarsely.
* Nuisances: 6 actor shapes (all without rotational symmetry, so rotation is visible),
  colour, size, start position and angle, background (solid, gradient, smooth texture),
  sensor noise, camera shake (a smooth sub-pixel walk of the whole scene), 0-2 smaller
  distractors that move at constant velocity and bounce off the frame walls, and
  sometimes a static bar in front of everything (occlusion).
* Learnable structure for self-supervision: objects persist, speeds are constant within a
  clip, gravity accelerates the falling actor, which bounces and loses energy (restitution
  below 1, so time has an arrow), distractors bounce elastically off walls, the occluder
  hides objects that re-appear on the other side.
* Domain ``"B"`` (the ``shift_*`` splits) has the same motions with a different look: dark,
  cluttered backgrounds (stripes, fine texture, static blobs), bright striped actors (the
  stripes turn with the actor), a neon palette, and blur.

Layout written by :func:`generate`::

    out_dir/videos/<split>/<class_name>/<split>_<index:05d>.mp4   (labelled splits)
    out_dir/videos/unlabeled/unlabeled_<index:05d>.mp4            (label hidden: -1)
    out_dir/manifest.csv                                           (vidlab.data.manifest)
    out_dir/dataset.json                                           (preset, seed, config, classes)

Splits: ``train``/``val``/``test`` and ``unlabeled`` in domain A, ``shift_train``/
``shift_val``/``shift_test`` in domain B. Labelled splits are class balanced
(``label = index % num_classes``). Every video's random stream comes from
``SeedSequence(seed, spawn_key=(split_code, index))``, so generation is reproducible and
independent of the order in which the worker processes finish.
"""
from __future__ import annotations

import colorsys
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from vidlab.data.encode import encode_video
from vidlab.data.manifest import MANIFEST_NAME, ManifestRow, read_manifest, write_manifest
from vidlab.data.workers import process_pool

CLASSES: list[str] = [
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_clockwise",
    "rotate_counterclockwise",
    "grow",
    "shrink",
    "oscillate_horizontal",
    "oscillate_vertical",
    "fall_and_bounce",
    "orbit",
]
GENERATOR_VERSION = 2  # 2: x264 cpu-independent (same bytes on every CPU)
DATASET_JSON = "dataset.json"
DOMAINS = ("A", "B")
# split -> (domain, stable code used in each video's seed)
SPLITS: dict[str, tuple[str, int]] = {
    "train": ("A", 0),
    "val": ("A", 1),
    "test": ("A", 2),
    "unlabeled": ("A", 3),
    "shift_train": ("B", 4),
    "shift_val": ("B", 5),
    "shift_test": ("B", 6),
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and look of a synthetic dataset. Counts are per class except ``unlabeled`` (total).

    Frames are ``size x size`` RGB; a video has ``num_frames`` frames at ``fps``.
    """

    name: str = "cpu"
    size: int = 64
    num_frames: int = 32
    fps: float = 16.0
    train_per_class: int = 100
    val_per_class: int = 20
    test_per_class: int = 40
    unlabeled: int = 3000
    shift_train_per_class: int = 20
    shift_val_per_class: int = 10
    shift_test_per_class: int = 40
    crf: int = 20
    encoder_preset: str = "veryfast"
    max_distractors: int = 2
    occlusion_prob: float = 0.2
    max_noise_std: float = 5.0
    jitter_px: float = 1.0

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 2:
            raise ValueError(f"SyntheticConfig.size must be an even number >= 16 (H.264 4:2:0), got {self.size}")
        if self.num_frames < 4:
            raise ValueError(f"SyntheticConfig.num_frames must be >= 4, got {self.num_frames}")
        if not self.fps > 0:
            raise ValueError(f"SyntheticConfig.fps must be > 0, got {self.fps}")
        for f in fields(self):
            if f.name.endswith("_per_class") or f.name in ("unlabeled", "max_distractors"):
                if getattr(self, f.name) < 0:
                    raise ValueError(f"SyntheticConfig.{f.name} must be >= 0, got {getattr(self, f.name)}")
        if not 0.0 <= self.occlusion_prob <= 1.0:
            raise ValueError(f"SyntheticConfig.occlusion_prob must be in [0, 1], got {self.occlusion_prob}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"SyntheticConfig.crf must be in [0, 51], got {self.crf}")

    def split_sizes(self) -> dict[str, int]:
        """Number of videos in each split."""
        n = len(CLASSES)
        return {
            "train": self.train_per_class * n,
            "val": self.val_per_class * n,
            "test": self.test_per_class * n,
            "unlabeled": self.unlabeled,
            "shift_train": self.shift_train_per_class * n,
            "shift_val": self.shift_val_per_class * n,
            "shift_test": self.shift_test_per_class * n,
        }

    @property
    def duration(self) -> float:
        """Seconds per video."""
        return self.num_frames / self.fps


PRESETS: dict[str, SyntheticConfig] = {
    # CI: 192 videos of 2 s (16 frames at 8 fps, 64x64): ~4 CPU-seconds (2 s on 2 cores).
    "smoke": SyntheticConfig(
        name="smoke", size=64, num_frames=16, fps=8.0,
        train_per_class=3, val_per_class=2, test_per_class=2, unlabeled=48,
        shift_train_per_class=2, shift_val_per_class=1, shift_test_per_class=2,
    ),
    # Laptop default: 5,760 videos of 2 s (32 frames at 16 fps, 64x64), 51 MB: ~230 CPU-seconds
    # (about 2 minutes with 2 workers on 2 free cores; ~25 ms rendering + ~14 ms encoding a video).
    "cpu": SyntheticConfig(name="cpu"),
    # GPU recipes: 112x112, 4x the labelled data and 20,000 unlabelled videos (~30,000 videos;
    # use many workers).
    "full": SyntheticConfig(
        name="full", size=112, num_frames=32, fps=16.0,
        train_per_class=400, val_per_class=50, test_per_class=100, unlabeled=20000,
        shift_train_per_class=50, shift_val_per_class=25, shift_test_per_class=100,
        crf=18,
    ),
}


def resolve_config(preset: str | SyntheticConfig) -> SyntheticConfig:
    """A preset name (``smoke``/``cpu``/``full``) or a config -> the config."""
    if isinstance(preset, SyntheticConfig):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; known: {', '.join(PRESETS)}")
    return PRESETS[preset]


# ---------------------------------------------------------------------------------------
# Shapes: signed distance functions in the object's own frame (units of its radius,
# negative inside). Coordinates are arrays of any shape; y points down as in images.


def _sdf_box(x: np.ndarray, y: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return np.maximum(np.abs(x - cx) - hx, np.abs(y - cy) - hy)


def _sdf_convex(x: np.ndarray, y: np.ndarray, vertices: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Convex polygon (vertices in either order): max of the signed distances to its edge lines."""
    v = np.asarray(vertices, dtype=np.float64)
    centre = v.mean(axis=0)
    out = None
    for a, b in zip(v, np.roll(v, -1, axis=0)):
        normal = np.array([b[1] - a[1], a[0] - b[0]])
        normal /= np.linalg.norm(normal)
        if normal @ (centre - a) > 0:  # make it point outwards
            normal = -normal
        d = (x - float(a[0])) * float(normal[0]) + (y - float(a[1])) * float(normal[1])
        out = d if out is None else np.maximum(out, d)
    return out


def _sdf_disk(x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r


def _shape_triangle(x, y):
    return _sdf_convex(x, y, ((1.0, 0.0), (-0.6, 0.75), (-0.6, -0.75)))


def _shape_l(x, y):
    return np.minimum(_sdf_box(x, y, -0.53, -0.03, -1.0, 0.65), _sdf_box(x, y, -0.53, 0.95, 0.15, 0.65))


def _shape_t(x, y):
    return np.minimum(_sdf_box(x, y, -0.85, 0.85, -0.6, -0.15), _sdf_box(x, y, -0.22, 0.22, -0.15, 1.0))


def _shape_pacman(x, y):
    half_angle = 0.6
    s, c = math.sin(half_angle), math.cos(half_angle)
    wedge = np.maximum(-s * x + c * y, -s * x - c * y)
    return np.maximum(_sdf_disk(x, y, 0.0, 0.0, 0.9), -wedge)


def _shape_half_disk(x, y):
    return np.maximum(_sdf_disk(x, y, -0.3, 0.0, 0.95), -0.55 - x)


def _shape_arrow(x, y):
    return np.minimum(_sdf_box(x, y, -0.95, 0.1, -0.2, 0.2), _sdf_convex(x, y, ((0.95, 0.0), (0.05, 0.6), (0.05, -0.6))))


def _shape_circle(x, y):
    return np.sqrt(x * x + y * y) - 1.0


def _shape_square(x, y):
    return np.maximum(np.abs(x), np.abs(y)) - 0.8


ACTOR_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "triangle": _shape_triangle,
    "L": _shape_l,
    "T": _shape_t,
    "pacman": _shape_pacman,
    "half_disk": _shape_half_disk,
    "arrow": _shape_arrow,
}
DISTRACTOR_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": _shape_circle,
    "square": _shape_square,
}

# Actor size: radius (half extent) log-uniform in this range, as a fraction of the frame.
# A trade-off, measured at the cpu preset (32x32 crops): at this size a small 3D CNN on the two
# rotation classes alone tells the turning sense apart at 0.65 test, with 0.16-0.25 at 0.89; but
# bigger actors make the few-label task easy (10 labels per class from scratch: 0.51 instead of
# 0.23) and notebook 02's pretraining gain falls from +29 to +7.5 points. At this size notebook
# 02's 8x8-px x 2-frame tubelets stay near chance on rotation; 4x4-px tokens spanning all 8
# frames with a max-pooling head learn it (benchmarks/finetune_geometry.py; notebook 03, section 6).
_ACTOR_RADIUS = (0.1, 0.17)
_GROW_FACTOR = (1.5, 1.8)
_ROTATION_TURNS = (0.75, 1.25)  # full turns per clip
_OSCILLATION_AMPLITUDE = (0.12, 0.2)  # fraction of the frame
_ORBIT_RADIUS = (0.12, 0.2)  # fraction of the frame
_DISTRACTOR_RADIUS = (0.03, 0.05)  # always smaller than the smallest actor (0.1 / 1.8)


# ---------------------------------------------------------------------------------------
# Scene and motion sampling


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


@dataclass
class _Scene:
    """Everything but the actor's motion (drawn from the scene stream)."""

    shape: str
    radius: float          # pixels at t = 0
    angle: float           # radians at t = 0
    position: np.ndarray   # (2,) x, y pixels at t = 0
    colour: np.ndarray     # (3,) float in [0, 1]
    stripe_colour: np.ndarray | None
    stripe_period: float   # in radii (domain B)
    background: dict
    distractors: list[dict]
    bar: dict | None
    jitter: np.ndarray     # (T, 2) camera offset in pixels
    noise_std: float       # in [0, 1] units
    blur_passes: int


def _draw_background(rng: np.random.Generator, size: int, domain: str) -> dict:
    if domain == "A":
        kind = ["solid", "gradient", "texture"][rng.integers(3)]
        light = lambda: _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.7, 0.97))  # noqa: E731
        bg = {"kind": kind, "c1": light(), "c2": light(), "angle": rng.uniform(0, 2 * np.pi)}
        bg["grid"] = rng.uniform(-0.12, 0.12, size=(int(rng.integers(3, 7)),) * 2 + (3,)).astype(np.float32)
        bg["blobs"] = []
        return bg
    kind = ["stripes", "texture"][rng.integers(2)]
    dark = lambda: _hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.04, 0.3))  # noqa: E731
    bg = {"kind": kind, "c1": dark(), "c2": dark(), "angle": rng.uniform(0, 2 * np.pi),
          "period": rng.uniform(0.12, 0.3) * size}
    bg["grid"] = rng.uniform(-0.15, 0.15, size=(int(rng.integers(8, 13)),) * 2 + (3,)).astype(np.float32)
    blobs = []
    for _ in range(int(rng.integers(2, 6))):  # static clutter
        blobs.append({"position": rng.uniform(0, size, size=2), "radius": rng.uniform(0.02, 0.05) * size,
                      "colour": _hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.5))})
    bg["blobs"] = blobs
    return bg


def _draw_scene(rng: np.random.Generator, cfg: SyntheticConfig, domain: str) -> _Scene:
    size, t = cfg.size, cfg.num_frames
    shape = list(ACTOR_SHAPES)[rng.integers(len(ACTOR_SHAPES))]
    radius = float(np.exp(rng.uniform(np.log(_ACTOR_RADIUS[0]), np.log(_ACTOR_RADIUS[1])))) * size
    angle = rng.uniform(0, 2 * np.pi)
    position = rng.uniform(0, size, size=2)
    if domain == "A":
        colour = _hsv(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.12, 0.5))
        stripe_colour, stripe_period = None, 1.0
    else:
        hue = rng.random()
        colour = _hsv(hue, rng.uniform(0.7, 1.0), rng.uniform(0.85, 1.0))
        stripe_colour = _hsv(hue + rng.uniform(0.35, 0.65), rng.uniform(0.5, 1.0), rng.uniform(0.55, 0.9))
        stripe_period = rng.uniform(0.45, 0.8)
    background = _draw_background(rng, size, domain)
    distractors = []
    for _ in range(int(rng.integers(0, cfg.max_distractors + 1))):
        r = rng.uniform(*_DISTRACTOR_RADIUS) * size
        speed = rng.uniform(0.2, 0.7) * size  # pixels per clip
        heading = rng.uniform(0, 2 * np.pi)
        distractors.append({
            "shape": list(DISTRACTOR_SHAPES)[rng.integers(len(DISTRACTOR_SHAPES))],
            "radius": r,
            "angle": rng.uniform(0, np.pi / 2),
            "position": rng.uniform(r, size - r, size=2),
            "velocity": speed * np.array([np.cos(heading), np.sin(heading)]),
            "colour": _hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.85)),
        })
    bar = None
    if rng.random() < cfg.occlusion_prob:
        bar = {"vertical": bool(rng.integers(2)), "position": float(rng.uniform(0.15, 0.85)) * size,
               "width": float(rng.uniform(0.07, 0.12)) * size, "colour": np.full(3, rng.uniform(0.3, 0.7), np.float32)}
    walk = np.cumsum(rng.standard_normal((t, 2)), axis=0)
    walk -= walk.mean(axis=0)
    walk *= cfg.jitter_px * rng.uniform(0.3, 1.0) / max(float(np.abs(walk).max()), 1e-6)
    noise_std = rng.uniform(0.0, cfg.max_noise_std) / 255.0
    blur_passes = int(rng.integers(1, 3)) if domain == "B" else 0
    return _Scene(shape, radius, angle, position, colour, stripe_colour, stripe_period, background,
                  distractors, bar, walk.astype(np.float32), noise_std, blur_passes)


def _bounce_times(y0: float, floor: float, gravity: float, restitution: float) -> tuple[list, list, list]:
    """Piecewise ballistic segments of a ball dropped from rest at ``y0`` onto ``floor``.

    Returns segment start times, start heights and start velocities (time in clips).
    """
    starts, heights, velocities = [0.0], [y0], [0.0]
    t = math.sqrt(2 * (floor - y0) / gravity)  # first impact
    v = gravity * t                             # speed at impact
    while t < 1.0 and v > 1e-3:
        v = restitution * v
        starts.append(t)
        heights.append(floor)
        velocities.append(-v)
        t += 2 * v / gravity
    return starts, heights, velocities


def _actor_trajectory(label: int, rng: np.random.Generator, scene: _Scene, cfg: SyntheticConfig):
    """Actor centre x, y, angle and radius over time: four ``(T,)`` float arrays."""
    size, n = cfg.size, cfg.num_frames
    u = np.linspace(0.0, 1.0, n)
    x = np.full(n, scene.position[0])
    y = np.full(n, scene.position[1])
    angle = np.full(n, scene.angle)
    radius = np.full(n, scene.radius)
    name = CLASSES[label]
    if name.startswith("move_"):
        distance = rng.uniform(0.4, 0.7) * size
        dx, dy = {"move_left": (-1, 0), "move_right": (1, 0), "move_up": (0, -1), "move_down": (0, 1)}[name]
        x = x + dx * distance * u
        y = y + dy * distance * u
    elif name.startswith("rotate_"):
        turns = rng.uniform(*_ROTATION_TURNS)
        sign = 1.0 if name == "rotate_clockwise" else -1.0  # y points down: +angle is clockwise on screen
        angle = angle + sign * 2 * np.pi * turns * u
    elif name in ("grow", "shrink"):
        factor = rng.uniform(*_GROW_FACTOR)
        radius = radius * factor ** (u if name == "grow" else -u)
    elif name.startswith("oscillate_"):
        amplitude = rng.uniform(*_OSCILLATION_AMPLITUDE) * size
        cycles = rng.uniform(1.5, 2.5)
        phase = rng.uniform(0, 2 * np.pi)
        offset = amplitude * (np.sin(2 * np.pi * cycles * u + phase) - np.sin(phase))
        if name == "oscillate_horizontal":
            x = x + offset
        else:
            y = y + offset
    elif name == "fall_and_bounce":
        drop = rng.uniform(0.3, 0.5) * size            # invisible floor this far below the start
        first_impact = rng.uniform(0.3, 0.5)           # fraction of the clip
        gravity = 2 * drop / first_impact**2           # pixels / clip^2
        restitution = rng.uniform(0.65, 0.85)
        starts, heights, velocities = _bounce_times(y[0], y[0] + drop, gravity, restitution)
        segment = np.searchsorted(np.asarray(starts), u, side="right") - 1
        dt = u - np.asarray(starts)[segment]
        y = np.asarray(heights)[segment] + np.asarray(velocities)[segment] * dt + 0.5 * gravity * dt**2
    elif name == "orbit":
        orbit_radius = rng.uniform(*_ORBIT_RADIUS) * size
        turns = rng.uniform(0.8, 1.2) * (1 if rng.random() < 0.5 else -1)
        phase = rng.uniform(0, 2 * np.pi)
        x = x + orbit_radius * (np.cos(phase + 2 * np.pi * turns * u) - np.cos(phase))
        y = y + orbit_radius * (np.sin(phase + 2 * np.pi * turns * u) - np.sin(phase))
    else:  # pragma: no cover - CLASSES and this function are kept in sync by the tests
        raise ValueError(f"no motion defined for class {name!r}")
    return x, y, angle, radius


# ---------------------------------------------------------------------------------------
# Rendering (vectorised over time and pixels)


def _interp_matrix(coord: np.ndarray, g: int) -> np.ndarray:
    """Linear-interpolation weights ``(T, N, g)`` of periodic grid coordinates ``coord`` ``(T, N)``."""
    lo = np.floor(coord)
    frac = (coord - lo).astype(np.float32)
    lo = lo.astype(np.int64) % g
    weights = np.zeros(coord.shape + (g,), dtype=np.float32)
    np.put_along_axis(weights, lo[..., None], (1 - frac)[..., None], axis=-1)
    np.put_along_axis(weights, ((lo + 1) % g)[..., None], frac[..., None], axis=-1)  # g >= 2
    return weights


def _periodic_texture(grid: np.ndarray, wx: np.ndarray, wy: np.ndarray, size: int) -> np.ndarray:
    """Bilinear sample of a periodic ``(g, g, 3)`` grid spanning the frame -> ``(T, H, W, 3)``.

    ``wx`` is ``(T, 1, W)`` and ``wy`` ``(T, H, 1)``: bilinear interpolation is separable, so
    it is two small matrix products per frame.
    """
    g = grid.shape[0]
    weights_x = _interp_matrix(wx[:, 0, :] * (g / size), g)  # (T, W, g)
    weights_y = _interp_matrix(wy[:, :, 0] * (g / size), g)  # (T, H, g)
    return np.einsum("thj,jic,twi->thwc", weights_y, grid, weights_x, optimize=True)


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


# ---------------------------------------------------------------------------------------
# Dataset generation


@dataclass(frozen=True)
class _Job:
    split: str
    index: int


def video_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of video ``index`` of ``split`` (independent of generation order)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(SPLITS[split][1], int(index))))


def video_label(split: str, index: int, rng: np.random.Generator) -> int:
    """True class of a video: balanced (``index % num_classes``) or, for ``unlabeled``, drawn from ``rng``."""
    hidden = int(rng.integers(len(CLASSES)))  # drawn for every split so the streams line up
    return hidden if split == "unlabeled" else index % len(CLASSES)


def relative_video_path(split: str, index: int, label: int) -> str:
    """Path of a video inside the dataset folder (POSIX separators)."""
    if split == "unlabeled":
        return f"videos/unlabeled/unlabeled_{index:05d}.mp4"
    return f"videos/{split}/{CLASSES[label]}/{split}_{index:05d}.mp4"


def _make_one(job: _Job, *, cfg: SyntheticConfig, seed: int, root: str) -> ManifestRow:
    """Render and encode one video into ``root``; returns its manifest row."""
    rng = video_rng(seed, job.split, job.index)
    label = video_label(job.split, job.index, rng)
    domain = SPLITS[job.split][0]
    frames = render_video(label, rng, cfg, domain=domain)
    rel = relative_video_path(job.split, job.index, label)
    encode_video(frames, Path(root) / rel, cfg.fps, crf=cfg.crf, options={"preset": cfg.encoder_preset})
    shown = -1 if job.split == "unlabeled" else label
    return ManifestRow(
        path=rel, label=shown, split=job.split, num_frames=cfg.num_frames, fps=cfg.fps,
        width=cfg.size, height=cfg.size, duration=cfg.duration,
        label_name=CLASSES[label] if shown >= 0 else "", domain=domain, codec="h264",
    )


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> bool:
    """Rename the finished ``tmp`` folder to ``out_dir``. False if another run got there first."""
    if overwrite and out_dir.exists() and not _is_empty_dir(out_dir):
        trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, trash / out_dir.name)
        os.replace(tmp, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
        return True
    try:
        if _is_empty_dir(out_dir):
            out_dir.rmdir()
        os.rename(tmp, out_dir)
        return True
    except OSError:
        if (out_dir / MANIFEST_NAME).is_file():
            return False
        raise


def generate(
    out_dir: str | os.PathLike,
    *,
    preset: str | SyntheticConfig = "cpu",
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Generate the synthetic dataset into ``out_dir``; returns the manifest path.

    ``preset`` is ``"smoke"``, ``"cpu"``, ``"full"`` or a :class:`SyntheticConfig`. Videos
    are rendered and encoded by ``workers`` processes (``<= 1``: in this process) into a
    temporary sibling folder that is renamed to ``out_dir`` at the end, so ``out_dir`` never
    holds half a dataset. ``out_dir`` must be missing or empty unless ``overwrite``; if a
    concurrent run finishes first, its dataset is kept and this run's copy discarded.
    """
    cfg = resolve_config(preset)
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not _is_empty_dir(out_dir) and not overwrite:
        raise FileExistsError(
            f"{out_dir} exists and is not empty; generate into a missing or empty folder, "
            f"use ensure_dataset() to reuse a finished dataset, or pass overwrite=True"
        )
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"generate: seed must be a non-negative int, got {seed!r}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        jobs = [_Job(split, i) for split, count in cfg.split_sizes().items() for i in range(count)]
        make = partial(_make_one, cfg=cfg, seed=int(seed), root=str(tmp))
        bar = tqdm(total=len(jobs), desc=f"synthetic {cfg.name}", unit="video", disable=not progress)
        rows: list[ManifestRow] = []
        if workers <= 1:
            for job in jobs:
                rows.append(make(job))
                bar.update()
        else:
            chunk = max(1, min(16, len(jobs) // (workers * 8)))
            with process_pool(workers) as pool:
                for row in pool.map(make, jobs, chunksize=chunk):
                    rows.append(row)
                    bar.update()
        bar.close()
        order = {split: k for k, split in enumerate(SPLITS)}
        rows.sort(key=lambda r: (order[r.split], r.path.rsplit("_", 1)[-1]))
        write_manifest(rows, tmp / MANIFEST_NAME)
        info = {
            "generator": "vidlab.data.synthetic",
            "generator_version": GENERATOR_VERSION,
            "preset": cfg.name,
            "seed": int(seed),
            "config": asdict(cfg),
            "classes": list(CLASSES),
            "splits": cfg.split_sizes(),
            "domains": {split: domain for split, (domain, _) in SPLITS.items()},
        }
        (tmp / DATASET_JSON).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if not _move_into_place(tmp, out_dir, overwrite):
            print(f"{out_dir} was completed by another run meanwhile; keeping it and discarding this copy")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / MANIFEST_NAME


def read_dataset_info(data_dir: str | os.PathLike) -> dict | None:
    """``dataset.json`` of a generated dataset (``None`` if the folder has none)."""
    path = Path(data_dir) / DATASET_JSON
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def ensure_dataset(
    data_dir: str | os.PathLike,
    *,
    preset: str | SyntheticConfig = "cpu",
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
) -> Path:
    """Return ``data_dir/manifest.csv``, generating the synthetic dataset first if needed.

    * ``data_dir/manifest.csv`` exists: it is returned as is (any dataset with a manifest).
    * ``data_dir`` is missing or empty: the synthetic ``preset`` dataset is generated there.
    * ``data_dir`` holds other files but no manifest: ``FileExistsError`` (nothing is touched).
    """
    data_dir = Path(data_dir).expanduser()
    manifest = data_dir / MANIFEST_NAME
    if manifest.is_file():
        info = read_dataset_info(data_dir)
        cfg = resolve_config(preset)
        if info is not None and (info.get("preset") != cfg.name or info.get("seed") != seed):
            print(f"note: {data_dir} holds the synthetic {info.get('preset')!r} dataset (seed {info.get('seed')}), "
                  f"not {cfg.name!r} (seed {seed}); using it as it is")
        return manifest
    if data_dir.exists() and not _is_empty_dir(data_dir):
        if not data_dir.is_dir():
            raise NotADirectoryError(f"DATA_DIR {data_dir} is a file, not a dataset folder")
        raise FileExistsError(
            f"{data_dir} is not empty but has no {MANIFEST_NAME}, so it is not a vidlab dataset. "
            f"To use your own videos there, make a manifest with "
            f"`python data_scripts/prepare_folder.py {data_dir} --out <new folder>` and point DATA_DIR "
            f"at the new folder; "
            f"to get the synthetic dataset, set DATA_DIR to a missing or empty folder."
        )
    cfg = resolve_config(preset)
    print(f"no dataset at {data_dir}: generating the synthetic {cfg.name} dataset (seed {seed}) ...", flush=True)
    start = time.perf_counter()
    path = generate(data_dir, preset=cfg, seed=seed, workers=workers, progress=progress)
    if progress:
        print(f"generated {len(read_manifest(path))} videos in {time.perf_counter() - start:.1f} s -> {path}")
    return path


__all__ = [
    "CLASSES",
    "PRESETS",
    "SPLITS",
    "SyntheticConfig",
    "ensure_dataset",
    "generate",
    "read_dataset_info",
    "relative_video_path",
    "render_video",
    "resolve_config",
    "video_label",
    "video_rng",
]
