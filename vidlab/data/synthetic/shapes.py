"""Actor and distractor shapes as signed distance functions, in the object's own frame
(units of its radius, negative inside). Coordinates are arrays of any shape; y points down
as in images. Actor shapes have no rotational symmetry, so a rotation is visible."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np



def _sdf_box(x: np.ndarray, y: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return np.maximum(np.abs(x - cx) - hx, np.abs(y - cy) - hy)


def _sdf_convex(x: np.ndarray, y: np.ndarray, vertices: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Convex polygon (vertices in either order): max of the signed distances to its edge lines."""
    v = np.asarray(vertices, dtype=np.float64)
    centre = v.mean(axis=0)
    out = None
    for a, b in zip(v.tolist(), np.roll(v, -1, axis=0).tolist()):
        # plain float arithmetic, no BLAS: the same result on every CPU
        nx, ny = b[1] - a[1], a[0] - b[0]
        length = math.sqrt(nx * nx + ny * ny)
        nx, ny = nx / length, ny / length
        if nx * (float(centre[0]) - a[0]) + ny * (float(centre[1]) - a[1]) > 0:  # make it point outwards
            nx, ny = -nx, -ny
        d = (x - a[0]) * nx + (y - a[1]) * ny
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
