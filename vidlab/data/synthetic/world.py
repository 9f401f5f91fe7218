"""The synthetic world: what each video shows, drawn from its random stream.

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
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

from vidlab.data.synthetic.config import CLASSES, SyntheticConfig
from vidlab.data.synthetic.shapes import ACTOR_SHAPES, DISTRACTOR_SHAPES

# Actor size: radius (half extent) log-uniform in this range, as a fraction of the frame.
# A trade-off: bigger actors make the turning sense of the rotation classes easier to see, but
# also make the few-label task easy, so self-supervised pretraining has less to add. Small
# tokens spanning all frames with a max-pooling head learn rotation at this size
# (benchmarks/finetune_geometry.py measures it; notebook 03, section 6).
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
