"""Token masks and tubelet patches for masked video modelling.

A clip ``(B, C, T, H, W)`` is cut into tubelets of ``tubelet x patch x patch`` pixels; the token
grid is ``(T', H', W') = (T/tubelet, H/patch, W/patch)``, flattened time slowest (the order of
:class:`vidlab.models.vit.VideoViT`'s tokens). A mask is ``(B, T'*H'*W')`` bool, True = hidden.

* :func:`tube_mask` (VideoMAE: one spatial mask at every time step), :func:`random_mask`,
  :func:`frame_mask` (whole time steps), :func:`make_mask` by name;
* :func:`patchify` / :func:`unpatchify` between clips and per-token pixel vectors;
* :func:`temporal_redundancy` and :func:`copy_baseline_loss`: why a video mask must be heavy
  and per tube (copying a neighbouring time step solves the rest).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

MASK_TYPES = ("tube", "random", "frame")

__all__ = [
    "MASK_TYPES",
    "copy_baseline_loss",
    "frame_mask",
    "make_mask",
    "num_masked",
    "patch_stats",
    "patchify",
    "random_mask",
    "temporal_redundancy",
    "tube_mask",
    "unpatchify",
]


def check_grid(grid: Sequence[int]) -> tuple[int, int, int]:
    """``grid`` as three positive ints ``(T', H', W')``; a clear error otherwise."""
    if len(grid) != 3 or any(int(g) < 1 for g in grid):
        raise ValueError(f"grid must be (T', H', W') with positive sizes, got {tuple(grid)!r}")
    return int(grid[0]), int(grid[1]), int(grid[2])


def num_masked(ratio: float, n: int, what: str) -> int:
    """How many of ``n`` mask units ``ratio`` hides (``round(ratio * n)``); at least one stays visible."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got ratio={ratio!r}")
    k = int(round(ratio * n))
    if k >= n:
        raise ValueError(f"ratio={ratio} masks all {n} {what}; at least one must stay visible")
    return k


def _rank_mask(batch: int, n: int, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """(batch, n) bool with exactly ``k`` True per row at uniformly random positions."""
    noise = torch.rand(batch, n, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < k


def tube_mask(
    batch: int, grid: Sequence[int], ratio: float = 0.9, generator: torch.Generator | None = None
) -> torch.Tensor:
    """VideoMAE tube masking: one spatial mask repeated at every time step.

    Returns ``(B, T'*H'*W')`` bool, True = masked; exactly ``round(ratio*H'*W')`` tokens are
    masked in every time step, so every sample has the same number of visible tokens.
    """
    t, h, w = check_grid(grid)
    k = num_masked(ratio, h * w, "spatial positions")
    spatial = _rank_mask(batch, h * w, k, generator)  # (B, H'W')
    return spatial[:, None, :].expand(batch, t, h * w).reshape(batch, t * h * w)


def random_mask(
    batch: int, grid: Sequence[int], ratio: float = 0.9, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Independent random masking of ``round(ratio*N)`` of the N tokens per sample; ``(B, N)`` bool."""
    t, h, w = check_grid(grid)
    n = t * h * w
    return _rank_mask(batch, n, num_masked(ratio, n, "tokens"), generator)


def frame_mask(
    batch: int, grid: Sequence[int], ratio: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mask whole time steps: ``round(ratio*T')`` of the T' token frames per sample; ``(B, N)`` bool."""
    t, h, w = check_grid(grid)
    frames = _rank_mask(batch, t, num_masked(ratio, t, "time steps"), generator)  # (B, T')
    return frames[:, :, None].expand(batch, t, h * w).reshape(batch, t * h * w)


_MASKERS: dict[str, Callable[..., torch.Tensor]] = {
    "tube": tube_mask,
    "random": random_mask,
    "frame": frame_mask,
}


def make_mask(
    mask_type: str,
    batch: int,
    grid: Sequence[int],
    ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Dispatch to :func:`tube_mask` / :func:`random_mask` / :func:`frame_mask` by name."""
    if mask_type not in _MASKERS:
        raise ValueError(f"mask_type={mask_type!r} is unknown; choose one of {', '.join(MASK_TYPES)}")
    return _MASKERS[mask_type](batch, grid, ratio, generator)


def mask_units(mask_type: str, grid: Sequence[int]) -> int:
    """How many independent units a mask of ``mask_type`` chooses from (tubes, tokens or time steps)."""
    t, h, w = check_grid(grid)
    if mask_type not in _MASKERS:
        raise ValueError(f"mask_type={mask_type!r} is unknown; choose one of {', '.join(MASK_TYPES)}")
    return {"tube": h * w, "random": t * h * w, "frame": t}[mask_type]


# ----------------------------------------------------------------------------- patches
def patchify(x: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B, N, tubelet*patch*patch*C)``, tokens in ``(T', H', W')`` order.

    Inside one token the pixels are laid out ``(tubelet, patch, patch, C)`` (as VideoMAE).
    """
    if x.ndim != 5:
        raise ValueError(f"patchify expects (B, C, T, H, W), got shape {tuple(x.shape)}")
    b, c, t, h, w = x.shape
    if t % tubelet or h % patch or w % patch:
        raise ValueError(
            f"clip (T={t}, H={h}, W={w}) is not divisible by tubelet={tubelet}, patch={patch}"
        )
    gt, gh, gw = t // tubelet, h // patch, w // patch
    x = x.reshape(b, c, gt, tubelet, gh, patch, gw, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # b gt gh gw tubelet p p c
    return x.reshape(b, gt * gh * gw, tubelet * patch * patch * c)


def unpatchify(
    patches: torch.Tensor, grid: Sequence[int], tubelet: int, patch: int, channels: int = 3
) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, N, tubelet*patch*patch*C)`` -> ``(B, C, T, H, W)``."""
    gt, gh, gw = check_grid(grid)
    b, n, d = patches.shape
    if n != gt * gh * gw or d != tubelet * patch * patch * channels:
        raise ValueError(
            f"patches of shape {tuple(patches.shape)} do not match grid {tuple(grid)}, "
            f"tubelet={tubelet}, patch={patch}, channels={channels}"
        )
    x = patches.reshape(b, gt, gh, gw, tubelet, patch, patch, channels)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # b c gt tubelet gh p gw p
    return x.reshape(b, channels, gt * tubelet, gh * patch, gw * patch)


def patch_stats(target: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's own mean and std over its pixels (``(B, N, 1)`` each), as VideoMAE's
    ``norm_pix_loss`` uses them."""
    mean = target.mean(dim=-1, keepdim=True)
    std = (target.var(dim=-1, unbiased=True, keepdim=True) + eps).sqrt()
    return mean, std


# ----------------------------------------------------------------------------- why masks must be heavy
def temporal_redundancy(clips: torch.Tensor, tubelet: int, patch: int) -> dict[str, float]:
    """How much of a clip is predictable from its neighbours in time, on pixel clips ``(B, C, T, H, W)``.

    ``next_tubelet_mse``: mean squared difference between a tubelet and the tubelet at the same
    place one time step later; ``other_video_mse``: the same against the tubelet at the same
    place and time in another clip of the batch (a baseline of unrelated content);
    ``static_fraction``: share of tubelets whose next one differs by less than 1% of the
    baseline. Small ``next / other`` means copying from neighbouring time steps almost solves
    the reconstruction task, which is why masking must be heavy (and per tube).
    """
    if clips.ndim != 5 or clips.shape[0] < 2:
        raise ValueError(f"temporal_redundancy needs a batch of at least 2 clips (B, C, T, H, W), got {tuple(clips.shape)}")
    b, c, t, h, w = clips.shape
    gt, gh, gw = t // tubelet, h // patch, w // patch
    tokens = patchify(clips.float(), tubelet, patch).view(b, gt, gh * gw, -1)
    if gt < 2:
        raise ValueError(f"clips of {t} frames hold only {gt} tubelet step(s) of {tubelet} frames; need 2")
    nxt = (tokens[:, 1:] - tokens[:, :-1]).pow(2).mean(-1)  # (B, T'-1, H'W')
    other = (tokens.roll(1, dims=0) - tokens).pow(2).mean(-1)
    baseline = float(other.mean())
    return {
        "next_tubelet_mse": float(nxt.mean()),
        "other_video_mse": baseline,
        "ratio": float(nxt.mean()) / max(baseline, 1e-12),
        "static_fraction": float((nxt < 0.01 * baseline).float().mean()),
    }


def copy_baseline_loss(clips: torch.Tensor, mask: torch.Tensor, tubelet: int, patch: int) -> float:
    """The MAE loss of a model-free shortcut: fill every hidden tubelet by **copying** the nearest
    visible tubelet at the same place in time (predict the patch mean, i.e. 0, when that place
    is hidden at every time step).

    ``clips`` are pixel clips ``(B, C, T, H, W)``; ``mask`` ``(B, N)`` bool, True = hidden.
    Targets are normalised per patch as in :class:`~vidlab.train.ssl.VideoMAE` (so predicting
    the mean scores about 1). A low value means the mask leaves the copy shortcut open.
    """
    target = patchify(clips.float(), tubelet, patch)
    mean, std = patch_stats(target)
    target = (target - mean) / std
    b, n, d = target.shape
    gt = clips.shape[2] // tubelet
    if mask.shape != (b, n):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match the {n} tokens of {b} clips")
    tokens = target.view(b, gt, n // gt, d)
    hidden = mask.view(b, gt, n // gt)
    pred = torch.zeros_like(tokens)
    filled = ~hidden  # visible tokens need no prediction
    for offset in range(1, gt):
        for sign in (-1, 1):
            src = torch.arange(gt) + sign * offset
            ok = (src >= 0) & (src < gt)
            src = src.clamp(0, gt - 1)
            take = ~filled & ~hidden[:, src] & ok[None, :, None]  # (B, T', HW)
            pred = torch.where(take[..., None], tokens[:, src], pred)
            filled = filled | take
    err = (pred - tokens).pow(2).mean(-1)
    return float(err[hidden].mean())
