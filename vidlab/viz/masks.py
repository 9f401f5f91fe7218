"""Masked video modelling, visually: masked clips, mask-type grids, reconstructions, and an
ipywidgets explorer of tube / random / frame masks (it renders in JupyterLab; under papermill
it is built but static).

Clips here are pixel clips ``(C, T, H, W)`` in [0, 1] (undo the normalisation first, e.g.
``clip * std + mean``); masks are ``(N,)`` or ``(1, N)`` bool over the ``(T', H', W')`` token
grid, True = masked.
"""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from vidlab.viz.clips import frame_grid

GREY = 0.5


def _to_frames(clip: torch.Tensor) -> torch.Tensor:
    """``(C, T, H, W)`` float in [0, 1] -> ``(T, H, W, C)`` uint8."""
    return (clip.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).cpu()


def masked_clip(clip: torch.Tensor, mask: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """The clip ``(C, T, H, W)`` with every masked tubelet painted grey (same shape)."""
    from vidlab.train.ssl.masking import patchify, unpatchify

    if clip.ndim != 4:
        raise ValueError(f"masked_clip expects one clip (C, T, H, W), got shape {tuple(clip.shape)}")
    c, t, h, w = clip.shape
    grid = (t // tubelet, h // patch, w // patch)
    tokens = patchify(clip[None].float(), tubelet, patch)
    mask = mask.reshape(1, -1).to(torch.bool)
    if mask.shape[1] != tokens.shape[1]:
        raise ValueError(f"mask has {mask.shape[1]} tokens; a {tuple(clip.shape)} clip with tubelet={tubelet}, "
                         f"patch={patch} has {tokens.shape[1]}")
    tokens = torch.where(mask[..., None], torch.full_like(tokens, GREY), tokens)
    return unpatchify(tokens, grid, tubelet, patch, c)[0]


def plot_mask_types(
    clip: torch.Tensor,
    *,
    tubelet: int,
    patch: int,
    ratios: Sequence[float] = (0.5, 0.9),
    mask_types: Sequence[str] = ("tube", "random", "frame"),
    seed: int = 0,
    max_frames: int = 8,
) -> Figure:
    """One row per (mask type, ratio): the clip ``(C, T, H, W)`` with that mask applied
    (the original first). Ratios a mask type cannot reach are left out."""
    from vidlab.train.ssl.masking import make_mask

    c, t, h, w = clip.shape
    grid = (t // tubelet, h // patch, w // patch)
    rows, titles = [_to_frames(clip)], ["original"]
    for mask_type in mask_types:
        for ratio in ratios:
            try:
                mask = make_mask(mask_type, 1, grid, ratio, torch.Generator().manual_seed(seed))
            except ValueError:
                continue
            rows.append(_to_frames(masked_clip(clip, mask, tubelet, patch)))
            titles.append(f"{mask_type} {ratio:.0%}")
    return frame_grid(rows, row_titles=titles, max_frames=max_frames)


def plot_reconstructions(recon: dict[str, torch.Tensor], *, count: int = 3, max_frames: int = 8,
                         size: float = 1.0) -> Figure:
    """Rows original / masked / reconstruction for the first ``count`` clips of
    :meth:`vidlab.train.ssl.VideoMAE.reconstruct`'s output (clips ``(B, C, T, H, W)`` in [0, 1])."""
    rows, titles = [], []
    for i in range(min(count, recon["original"].shape[0])):
        for key in ("original", "masked", "reconstruction"):
            rows.append(_to_frames(recon[key][i]))
            titles.append(f"clip {i}: {key}")
    return frame_grid(rows, row_titles=titles, max_frames=max_frames, size=size)


def mask_explorer(clip: torch.Tensor, *, tubelet: int, patch: int, max_frames: int = 8) -> Any:
    """ipywidgets explorer over one pixel clip ``(C, T, H, W)``: pick the mask type, the ratio
    and the random draw, see the masked clip and how many tokens stay visible."""
    import ipywidgets as widgets
    from IPython.display import display

    from vidlab.train.ssl.masking import MASK_TYPES, make_mask

    c, t, h, w = clip.shape
    grid = (t // tubelet, h // patch, w // patch)
    kind = widgets.Dropdown(options=list(MASK_TYPES), value="tube", description="mask")
    ratio = widgets.FloatSlider(value=0.9, min=0.0, max=0.95, step=0.05, description="ratio", readout_format=".2f")
    seed = widgets.IntSlider(value=0, min=0, max=20, description="draw")
    out = widgets.Output()

    def render(*_: Any) -> None:
        with out:
            out.clear_output(wait=True)
            try:
                mask = make_mask(kind.value, 1, grid, ratio.value, torch.Generator().manual_seed(seed.value))
            except ValueError as err:
                print(err)
                return
            visible = int((~mask).sum())
            print(f"{kind.value} mask at {ratio.value:.0%}: {visible} of {mask.numel()} tokens visible "
                  f"(grid T'xH'xW' = {grid[0]}x{grid[1]}x{grid[2]})")
            fig = frame_grid([_to_frames(clip), _to_frames(masked_clip(clip, mask, tubelet, patch))],
                             row_titles=["original", "masked"], max_frames=max_frames)
            display(fig)
            plt.close(fig)

    for control in (kind, ratio, seed):
        control.observe(render, names="value")
    render()
    return widgets.VBox([widgets.HBox([kind, ratio, seed]), out])
