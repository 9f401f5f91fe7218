"""VideoMAE: the encoder sees only the visible tubelets, a light decoder predicts the hidden ones.

``VideoMAE(encoder)`` wraps a :class:`vidlab.models.vit.VideoViT` (``tokenize``,
``forward_tokens``, ``grid_size``). The visible tokens are gathered into a dense
``(B, n_visible, D)`` tensor, encoded, normalised (the encoder's own per-token ``norm`` when built with
``fc_norm=False``, which fine-tuning then keeps; otherwise a LayerNorm kept in the wrapper), the
decoder fills in mask tokens and regresses the per-patch-normalised pixels of the hidden
tubelets; the loss counts hidden tokens only.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block

from vidlab.data.transforms import DEFAULT_MEAN, DEFAULT_STD  # the clips' normalisation; VideoMAE undoes it
from vidlab.train.ssl.masking import MASK_TYPES, make_mask, mask_units, num_masked, patch_stats, patchify, unpatchify

__all__ = ["MAEDecoder", "VideoMAE", "mask_ratio_losses"]


class MAEDecoder(nn.Module):
    """The light VideoMAE decoder: visible latents + mask tokens (+ its own positions) -> pixels.

    ``forward(latent (B, n_vis, embed_dim), mask (B, N) bool) -> (B, N, patch_dim)``: one
    prediction per token (the loss uses only the masked ones).
    """

    def __init__(
        self,
        embed_dim: int,
        decoder_dim: int,
        decoder_depth: int,
        decoder_heads: int,
        patch_dim: int,
        num_patches: int,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if decoder_dim % decoder_heads:
            raise ValueError(f"decoder_dim={decoder_dim} is not divisible by decoder_heads={decoder_heads}")
        self.num_patches = num_patches
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, decoder_dim))
        self.blocks = nn.ModuleList(
            Block(decoder_dim, decoder_heads, mlp_ratio=mlp_ratio, qkv_bias=True) for _ in range(decoder_depth)
        )
        self.norm = nn.LayerNorm(decoder_dim)
        self.head = nn.Linear(decoder_dim, patch_dim)
        trunc_normal_(self.mask_token, std=0.02)
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_linear)

    def forward(self, latent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n = mask.shape
        if n != self.num_patches:
            raise ValueError(f"mask has {n} tokens, the decoder was built for {self.num_patches}")
        vis = self.embed(latent)  # (B, n_vis, Dd)
        full = self.mask_token.to(vis.dtype).expand(b, n, -1).clone()
        full[~mask] = vis.reshape(-1, vis.shape[-1])
        x = full + self.pos_embed.to(vis.dtype)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x))


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, (tuple, list)) else v


class VideoMAE(nn.Module):
    """VideoMAE around a :class:`VideoViT` encoder.

    ``forward(x (B, C, T, H, W), mask=None) -> (loss, pred (B, N, patch_dim), mask (B, N))``.
    The encoder runs on the visible tokens only; the targets are the pixels of the
    un-normalised clip (``x * std + mean``), each tubelet patch normalised by its own mean and
    std when ``norm_pix_loss``; the MSE is averaged over masked tokens only.

    ``motion_weight > 0`` weights each masked token by how much its pixels change inside the
    tubelet (see :meth:`motion_weights`). On small clips most of the plain loss is static
    background that copying from a visible frame already predicts; weighting the moving
    tubelets is what makes the pretrained encoder useful for motion classes on the synthetic
    data. ``target="frame_diff"`` regresses frame differences instead of pixels.
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        decoder_dim: int = 192,
        decoder_depth: int = 2,
        decoder_heads: int = 3,
        mask_ratio: float = 0.9,
        mask_type: str = "tube",
        norm_pix_loss: bool = True,
        target: str = "pixels",
        motion_weight: float = 0.0,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
    ) -> None:
        super().__init__()
        if mask_type not in MASK_TYPES:
            raise ValueError(f"mask_type={mask_type!r} is unknown; choose one of {', '.join(MASK_TYPES)}")
        for attr in ("tokenize", "forward_tokens", "grid_size", "patch_size", "tubelet_size", "embed_dim"):
            if not hasattr(encoder, attr):
                raise TypeError(f"VideoMAE needs a VideoViT-like encoder; {type(encoder).__name__} has no {attr!r}")
        self.encoder = encoder
        self.mask_ratio = float(mask_ratio)
        self.mask_type = mask_type
        self.norm_pix_loss = norm_pix_loss
        if target not in ("pixels", "frame_diff"):
            raise ValueError(f"target={target!r}; use 'pixels' or 'frame_diff'")
        self.target = target
        if motion_weight < 0:
            raise ValueError(f"motion_weight must be >= 0, got {motion_weight}")
        self.motion_weight = float(motion_weight)
        self.grid = tuple(int(g) for g in encoder.grid_size)
        self.patch = int(_first(encoder.patch_size))
        self.tubelet = int(encoder.tubelet_size)
        self.channels = len(mean)
        num_masked(self.mask_ratio, mask_units(self.mask_type, self.grid), "units")  # validate now, not at step 1
        if target == "frame_diff" and self.tubelet < 2:
            raise ValueError("target='frame_diff' needs tubelet_size >= 2 (differences inside a tubelet)")
        frames_per_target = self.tubelet if target == "pixels" else self.tubelet - 1
        patch_dim = frames_per_target * self.patch * self.patch * self.channels
        # VideoMAE normalises the encoder's output tokens: the encoder's own ``norm`` when it has one
        # (fc_norm=False, then fine-tuning keeps it), else a norm kept here
        own_norm = not isinstance(getattr(encoder, "norm", nn.Identity()), nn.Identity)
        self.encoder_norm = nn.Identity() if own_norm else nn.LayerNorm(int(encoder.embed_dim), eps=1e-6)
        self.decoder = MAEDecoder(
            int(encoder.embed_dim), decoder_dim, decoder_depth, decoder_heads, patch_dim, math.prod(self.grid)
        )
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1, 1), persistent=False)

    def make_mask(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A fresh ``(B, N)`` mask of this model's type and ratio (on CPU)."""
        return make_mask(self.mask_type, batch, self.grid, self.mask_ratio, generator)

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """Targets ``(B, N, patch_dim)`` from the un-normalised clip ``x * std + mean``.

        ``target="pixels"``: each tubelet's pixels, normalised by the patch's own mean/std when
        ``norm_pix_loss`` (VideoMAE). ``target="frame_diff"``: the differences between
        consecutive frames inside each tubelet (motion only; static background gives 0), not
        normalised.
        """
        pixels = x.float() * self.std + self.mean
        target = patchify(pixels, self.tubelet, self.patch)
        if self.target == "frame_diff":
            b, n, _ = target.shape
            per_frame = target.view(b, n, self.tubelet, -1)
            return (per_frame[:, :, 1:] - per_frame[:, :, :-1]).reshape(b, n, -1)
        if self.norm_pix_loss:
            mean, std = patch_stats(target)
            target = (target - mean) / std
        return target

    def encode_visible(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Normalised encoder latents of the visible tokens only: ``(B, n_vis, D)``."""
        tokens = self.encoder.tokenize(x)  # (B, N, D)
        b, n, d = tokens.shape
        if mask.shape != (b, n):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match the {n} tokens of a batch of {b}")
        n_vis = int((~mask[0]).sum())
        visible = tokens[~mask].reshape(b, n_vis, d)
        return self.encoder_norm(self.encoder.forward_tokens(visible))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if mask is None:
            mask = self.make_mask(x.shape[0])
        mask = mask.to(x.device)
        latent = self.encode_visible(x, mask)
        pred = self.decoder(latent, mask)
        weight = self.motion_weights(x) if self.motion_weight > 0 else None
        loss = self.loss(pred, self.targets(x), mask, weight)
        return loss, pred, mask

    def motion_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token loss weights ``(B, N)``: ``1 + motion_weight * e / mean(e)``, where ``e`` is the
        mean absolute frame difference inside each tubelet (moving objects count more than
        static background, which copying from other frames already predicts)."""
        with torch.no_grad():
            pixels = patchify(x.float() * self.std + self.mean, self.tubelet, self.patch)
            b, n, _ = pixels.shape
            per_frame = pixels.view(b, n, self.tubelet, -1)
            energy = (per_frame[:, :, 1:] - per_frame[:, :, :-1]).abs().mean(dim=(2, 3))
            return 1.0 + self.motion_weight * energy / energy.mean(dim=1, keepdim=True).clamp_min(1e-6)

    @staticmethod
    def loss(
        pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean squared error over the masked tokens only (visible predictions are ignored);
        optional per-token ``weight`` ``(B, N)`` (weighted mean over the masked tokens)."""
        per_token = (pred.float() - target).pow(2).mean(dim=-1)
        m = mask.to(per_token.dtype)
        if weight is not None:
            m = m * weight.to(per_token.dtype)
        return (per_token * m).sum() / m.sum().clamp_min(1e-6)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Reconstruct clips for display; all clips in pixel space ``(B, C, T, H, W)`` in [0, 1].

        Returns ``original``, ``masked`` (masked tubelets set to 0.5 grey), ``reconstruction``
        (visible tubelets copied, masked ones predicted; with ``norm_pix_loss`` the prediction
        is de-normalised with each patch's actual mean/std, as the VideoMAE demo does) and
        ``mask`` ``(B, N)``.
        """
        if self.target != "pixels":
            raise ValueError(f"reconstruct needs target='pixels'; this model predicts {self.target!r}")
        was_training = self.training
        self.eval()
        try:
            if mask is None:
                mask = self.make_mask(x.shape[0])
            mask = mask.to(x.device)
            pred = self.decoder(self.encode_visible(x, mask), mask).float()
        finally:
            self.train(was_training)
        pixels = x.float() * self.std + self.mean
        patches = patchify(pixels, self.tubelet, self.patch)
        if self.norm_pix_loss:
            mean, std = patch_stats(patches)
            pred = pred * std + mean
        m = mask[..., None]
        recon = torch.where(m, pred, patches)
        masked = torch.where(m, torch.full_like(patches, 0.5), patches)
        unp = lambda p: unpatchify(p, self.grid, self.tubelet, self.patch, self.channels).clamp(0, 1)  # noqa: E731
        return {"original": unp(patches), "masked": unp(masked), "reconstruction": unp(recon), "mask": mask}


@torch.no_grad()
def mask_ratio_losses(
    mae: VideoMAE,
    clips: torch.Tensor,
    ratios: Sequence[float],
    mask_types: Sequence[str] = MASK_TYPES,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Reconstruction loss of a trained :class:`VideoMAE` on held-out ``clips`` ``(B, C, T, H, W)``
    for each mask type and ratio (a fixed, seeded mask per setting); rows of
    ``mask_type``, ``ratio``, ``loss``, ``visible_tokens``. A ratio a type cannot reach
    (e.g. masking every frame) is skipped."""
    mae.eval()
    rows = []
    for mask_type in mask_types:
        for ratio in ratios:
            gen = torch.Generator().manual_seed(seed)
            try:
                mask = make_mask(mask_type, clips.shape[0], mae.grid, ratio, gen)
            except ValueError:
                continue
            latent = mae.encode_visible(clips, mask)
            loss = mae.loss(mae.decoder(latent, mask), mae.targets(clips), mask)
            rows.append({"mask_type": mask_type, "ratio": float(ratio), "loss": float(loss),
                         "visible_tokens": int((~mask[0]).sum())})
    return rows
