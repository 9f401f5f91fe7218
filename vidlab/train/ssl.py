"""Self-supervised video pretraining: VideoMAE (tube masking), a SimCLR-style contrastive
alternative, and the probes that measure what the pretrained encoder learned.

Layouts: a batch of clips is ``(B, C, T, H, W)`` float (normalised with the dataset's
per-channel mean/std); two views of the same videos are ``(B, 2, C, T, H, W)``. The encoder is
a :class:`vidlab.models.vit.VideoViT` (``tokenize``, ``forward_tokens``, ``forward_features``,
``grid_size``); its token order is ``(T', H', W')`` flattened, time slowest.

The three parts:

* masking + :class:`VideoMAE`: the encoder sees only the visible tubelets (gathered into a dense
  ``(B, n_visible, D)`` tensor), a light decoder fills in mask tokens and regresses the
  per-patch-normalised pixels of the masked tubelets (loss on masked tokens only);
* :class:`SimCLRVideo`: two clips of one video (other time window, own augmentation) are
  positives, every other clip in the batch a negative (NT-Xent / InfoNCE);
* :func:`extract_features`, :func:`knn_accuracy`, :func:`linear_probe_accuracy` and
  :func:`fewshot_finetune` (pretrained vs scratch with one recipe at one label budget).
"""
from __future__ import annotations

import copy
import math
import os
import resource
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from tqdm.auto import tqdm

from vidlab.data.transforms import DEFAULT_MEAN, DEFAULT_STD  # the clips' normalisation; VideoMAE undoes it
from vidlab.utils import atomic_torch_save, load_checkpoint

MASK_TYPES = ("tube", "random", "frame")

__all__ = [
    "DEFAULT_MEAN",
    "DEFAULT_STD",
    "MAEDecoder",
    "SimCLRVideo",
    "TwoViews",
    "VideoMAE",
    "extract_features",
    "fewshot_finetune",
    "few_label_indices",
    "frame_mask",
    "knn_accuracy",
    "linear_probe_accuracy",
    "make_mask",
    "nt_xent_loss",
    "patchify",
    "pretrain_contrastive",
    "pretrain_mae",
    "random_mask",
    "save_encoder",
    "load_encoder",
    "tube_mask",
    "unpatchify",
]


# ----------------------------------------------------------------------------- masking
def _check_grid(grid: Sequence[int]) -> tuple[int, int, int]:
    if len(grid) != 3 or any(int(g) < 1 for g in grid):
        raise ValueError(f"grid must be (T', H', W') with positive sizes, got {tuple(grid)!r}")
    return int(grid[0]), int(grid[1]), int(grid[2])


def _num_masked(ratio: float, n: int, what: str) -> int:
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
    t, h, w = _check_grid(grid)
    k = _num_masked(ratio, h * w, "spatial positions")
    spatial = _rank_mask(batch, h * w, k, generator)  # (B, H'W')
    return spatial[:, None, :].expand(batch, t, h * w).reshape(batch, t * h * w)


def random_mask(
    batch: int, grid: Sequence[int], ratio: float = 0.9, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Independent random masking of ``round(ratio*N)`` of the N tokens per sample; ``(B, N)`` bool."""
    t, h, w = _check_grid(grid)
    n = t * h * w
    return _rank_mask(batch, n, _num_masked(ratio, n, "tokens"), generator)


def frame_mask(
    batch: int, grid: Sequence[int], ratio: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mask whole time steps: ``round(ratio*T')`` of the T' token frames per sample; ``(B, N)`` bool."""
    t, h, w = _check_grid(grid)
    frames = _rank_mask(batch, t, _num_masked(ratio, t, "time steps"), generator)  # (B, T')
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
    gt, gh, gw = _check_grid(grid)
    b, n, d = patches.shape
    if n != gt * gh * gw or d != tubelet * patch * patch * channels:
        raise ValueError(
            f"patches of shape {tuple(patches.shape)} do not match grid {tuple(grid)}, "
            f"tubelet={tubelet}, patch={patch}, channels={channels}"
        )
    x = patches.reshape(b, gt, gh, gw, tubelet, patch, patch, channels)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # b c gt tubelet gh p gw p
    return x.reshape(b, channels, gt * tubelet, gh * patch, gw * patch)


def _patch_stats(target: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    mean = target.mean(dim=-1, keepdim=True)
    std = (target.var(dim=-1, unbiased=True, keepdim=True) + eps).sqrt()
    return mean, std


# ----------------------------------------------------------------------------- VideoMAE
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


class VideoMAE(nn.Module):
    """VideoMAE around a :class:`VideoViT` encoder.

    ``forward(x (B, C, T, H, W), mask=None) -> (loss, pred (B, N, patch_dim), mask (B, N))``.
    The encoder runs on the visible tokens only; the targets are the pixels of the
    un-normalised clip (``x * std + mean``), each tubelet patch normalised by its own mean and
    std when ``norm_pix_loss``; the MSE is averaged over masked tokens only.

    ``motion_weight > 0`` weights each masked token by how much its pixels change inside the
    tubelet (see :meth:`motion_weights`). On small clips most of the plain loss is static
    background that copying from a visible frame already predicts; weighting the moving
    tubelets is what made the pretrained encoder useful for motion classes on the synthetic
    data (``mask_type="frame"``, ``mask_ratio=0.5``, ``motion_weight=4``).
    ``target="frame_diff"`` regresses frame differences instead of pixels.
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
        _num_masked(self.mask_ratio, self._mask_unit_count(), "units")  # validate now, not at step 1
        if target == "frame_diff" and self.tubelet < 2:
            raise ValueError("target='frame_diff' needs tubelet_size >= 2 (differences inside a tubelet)")
        frames_per_target = self.tubelet if target == "pixels" else self.tubelet - 1
        patch_dim = frames_per_target * self.patch * self.patch * self.channels
        self.decoder = MAEDecoder(
            int(encoder.embed_dim), decoder_dim, decoder_depth, decoder_heads, patch_dim, math.prod(self.grid)
        )
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1, 1), persistent=False)

    def _mask_unit_count(self) -> int:
        t, h, w = self.grid
        return {"tube": h * w, "random": t * h * w, "frame": t}[self.mask_type]

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
            mean, std = _patch_stats(target)
            target = (target - mean) / std
        return target

    def encode_visible(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder latents of the visible tokens only: ``(B, n_vis, D)``."""
        tokens = self.encoder.tokenize(x)  # (B, N, D)
        b, n, d = tokens.shape
        if mask.shape != (b, n):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match the {n} tokens of a batch of {b}")
        n_vis = int((~mask[0]).sum())
        visible = tokens[~mask].reshape(b, n_vis, d)
        return self.encoder.forward_tokens(visible)

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
            mean, std = _patch_stats(patches)
            pred = pred * std + mean
        m = mask[..., None]
        recon = torch.where(m, pred, patches)
        masked = torch.where(m, torch.full_like(patches, 0.5), patches)
        unp = lambda p: unpatchify(p, self.grid, self.tubelet, self.patch, self.channels).clamp(0, 1)  # noqa: E731
        return {"original": unp(patches), "masked": unp(masked), "reconstruction": unp(recon), "mask": mask}


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, (tuple, list)) else v


# ----------------------------------------------------------------------------- contrastive
def nt_xent_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1, negatives: torch.Tensor | None = None
) -> torch.Tensor:
    """NT-Xent (SimCLR InfoNCE) for ``(B, d)`` embeddings of two views; row i of z1 and z2 are positives.

    Each of the 2B embeddings is classified against the other 2B-1 by cosine similarity /
    temperature; ``negatives`` ``(M, d)`` (e.g. time-reversed clips) are extra candidates that
    are never the answer.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (B, d), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    candidates = z if negatives is None else torch.cat([z, F.normalize(negatives.float(), dim=1)])
    sim = z @ candidates.t() / temperature  # (2B, 2B + M)
    self_mask = torch.zeros_like(sim, dtype=torch.bool)
    self_mask[:, : 2 * b] = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, targets)


class SimCLRVideo(nn.Module):
    """Contrastive pretraining: two clips of the same video (other time window, own augmentation)
    are positives; the encoder's mean-pooled tokens go through an MLP projector into NT-Xent.

    With ``reverse_negatives`` the time-reversed first view of every video is added as a
    negative: it has the same appearance as the positives and the opposite motion, so the
    encoder can only tell them apart by the direction of motion (appearance alone no longer
    solves the task).

    ``forward(views (B, 2, C, T, H, W)) -> loss``; ``forward(view1, view2)`` works too.
    """

    def __init__(
        self,
        encoder: nn.Module,
        proj_dim: int = 128,
        temperature: float = 0.1,
        hidden_dim: int | None = None,
        reverse_negatives: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.temperature = float(temperature)
        self.reverse_negatives = reverse_negatives
        d = int(encoder.embed_dim)
        hidden = hidden_dim or 2 * d
        self.projector = nn.Sequential(
            nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, proj_dim)
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Projected embedding ``(B, proj_dim)`` of a clip batch ``(B, C, T, H, W)``."""
        return self.projector(self.encoder.forward_features(x).mean(dim=1))

    def forward(self, views: torch.Tensor, view2: torch.Tensor | None = None) -> torch.Tensor:
        if view2 is None:
            if views.ndim != 6 or views.shape[1] < 2:
                raise ValueError(f"SimCLRVideo expects views (B, 2, C, T, H, W), got {tuple(views.shape)}")
            v1, v2 = views[:, 0], views[:, 1]
        else:
            v1, v2 = views, view2
        b = v1.shape[0]
        clips = [v1, v2] + ([v1.flip(2)] if self.reverse_negatives else [])
        z = self.embed(torch.cat(clips))  # one pass: BatchNorm sees all clips
        negatives = z[2 * b:] if self.reverse_negatives else None
        return nt_xent_loss(z[:b], z[b : 2 * b], self.temperature, negatives)


class TwoViews(torch.utils.data.Dataset):
    """Wrap a dataset whose items are random (random time window + random augmentation) so each
    item holds two independent draws: ``video`` becomes ``(2, C, T, H, W)``; other keys of the
    first draw are kept."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        first = self.dataset[index]
        if not isinstance(first, dict):  # a skipped item (vidlab.data.datasets.Skip) passes through
            return first
        second = self.dataset[index]
        if not isinstance(second, dict):
            return second
        item = dict(first)
        item["video"] = torch.stack([first["video"], second["video"]])
        return item


# ----------------------------------------------------------------------------- pretraining loop
def _video_of(batch: Any) -> torch.Tensor:
    if isinstance(batch, dict):
        if "video" not in batch:
            raise KeyError(f"batch dict has no 'video' key (keys: {sorted(batch)})")
        return batch["video"]
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def _cycle(loader: Iterable) -> Iterator:
    while True:
        got = False
        for batch in loader:
            got = True
            yield batch
        if not got:
            raise ValueError("the pretraining loader yielded no batches")


def _amp_context(amp: bool | str, device: torch.device) -> tuple[Any, torch.amp.GradScaler | None]:
    if not amp:
        return nullcontext(), None
    if amp is True:
        amp = "bf16" if device.type == "cpu" or torch.cuda.is_bf16_supported() else "fp16"
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"amp={amp!r}; use False, True, 'bf16' or 'fp16'")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return torch.autocast(device.type, dtype=dtype), scaler


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: lifetime peak RSS (kB on Linux, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms, positional embeddings and tokens (1-d or named so)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or "pos_embed" in name or "token" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _warmup_cosine(step: int, total: int, warmup: int, min_factor: float = 0.0) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _pretrain(
    model: nn.Module,
    loader: Iterable,
    loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    *,
    steps: int | None,
    epochs: int | None,
    lr: float,
    warmup: int | float,
    weight_decay: float,
    accum_steps: int,
    amp: bool | str,
    device: str | torch.device,
    grad_clip: float | None,
    betas: tuple[float, float],
    progress: bool,
    desc: str,
) -> dict[str, Any]:
    device = torch.device(device)
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps= (optimizer steps) or epochs=")
    if accum_steps < 1:
        raise ValueError(f"accum_steps must be >= 1, got {accum_steps}")
    if steps is None:
        try:
            per_epoch = len(loader)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ValueError("epochs= needs a loader with a length; pass steps= instead") from exc
        steps = max(1, (per_epoch * int(epochs)) // accum_steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    warmup_steps = int(round(warmup * steps)) if isinstance(warmup, float) and warmup < 1 else int(warmup)
    model.to(device).train()
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=betas)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _warmup_cosine(s, steps, max(1, warmup_steps))
    )
    autocast, scaler = _amp_context(amp, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    peak_rss = _rss_bytes()
    history: list[float] = []
    skipped = 0
    batches = _cycle(loader)
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for _ in bar:
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(accum_steps):
            video = _video_of(next(batches)).to(device, non_blocking=True)
            with autocast:
                loss = loss_fn(model, video)
            scaled = loss / accum_steps
            (scaler.scale(scaled) if scaler else scaled).backward()
            total += float(loss.detach()) / accum_steps
        if not math.isfinite(total):
            skipped += 1  # fp16 overflow or a bad batch: do not step, keep going
            if scaler:
                scaler.update()
            schedule.step()
            continue
        if scaler:
            scaler.unscale_(optimizer)
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        schedule.step()
        history.append(total)
        if device.type == "cpu":
            peak_rss = max(peak_rss, _rss_bytes())
        if progress:
            bar.set_postfix(loss=f"{total:.4f}")
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss
    model.eval()
    return {"history": history, "seconds": seconds, "peak_memory_bytes": int(peak), "steps": steps,
            "skipped_steps": skipped}


def pretrain_mae(
    model: VideoMAE,
    loader: Iterable,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    lr: float = 1.5e-3,
    warmup: int | float = 0.1,
    weight_decay: float = 0.05,
    accum_steps: int = 1,
    amp: bool | str = False,
    device: str | torch.device = "cpu",
    grad_clip: float | None = 1.0,
    betas: tuple[float, float] = (0.9, 0.95),
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain a :class:`VideoMAE` with AdamW, linear warmup then cosine decay.

    ``loader`` yields batches with ``video`` ``(B, C, T, H, W)`` (labels are ignored); it is
    cycled until ``steps`` optimizer steps (each of ``accum_steps`` batches) are done, or
    ``epochs`` passes. ``warmup`` is a step count, or a fraction of the steps when < 1.
    ``amp``: False, ``"bf16"``, ``"fp16"`` (with a GradScaler) or True (bf16 where supported).

    Returns ``history`` (loss per optimizer step), ``seconds``, ``peak_memory_bytes``
    (``torch.cuda.max_memory_allocated`` on a GPU, peak process RSS sampled each step on a
    CPU), ``steps`` and ``skipped_steps`` (non-finite losses, not applied).
    """
    return _pretrain(
        model, loader, lambda m, v: m(v)[0], steps=steps, epochs=epochs, lr=lr, warmup=warmup,
        weight_decay=weight_decay, accum_steps=accum_steps, amp=amp, device=device, grad_clip=grad_clip,
        betas=betas, progress=progress, desc="VideoMAE pretraining",
    )


def pretrain_contrastive(
    model: SimCLRVideo,
    loader: Iterable,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    lr: float = 1e-3,
    warmup: int | float = 0.1,
    weight_decay: float = 0.05,
    accum_steps: int = 1,
    amp: bool | str = False,
    device: str | torch.device = "cpu",
    grad_clip: float | None = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain a :class:`SimCLRVideo`; like :func:`pretrain_mae` but batches hold two views,
    ``video`` ``(B, 2, C, T, H, W)`` (see :class:`TwoViews`). With ``accum_steps > 1`` the
    negatives come from each micro-batch only."""
    return _pretrain(
        model, loader, lambda m, v: m(v), steps=steps, epochs=epochs, lr=lr, warmup=warmup,
        weight_decay=weight_decay, accum_steps=accum_steps, amp=amp, device=device, grad_clip=grad_clip,
        betas=betas, progress=progress, desc="contrastive pretraining",
    )


# ----------------------------------------------------------------------------- checkpoints
def _encoder_config(encoder: nn.Module, config: dict[str, Any] | None) -> dict[str, Any]:
    cfg = dict(config or {})
    if "model" not in cfg:
        raise ValueError("save_encoder config needs 'model' (the registry name, e.g. 'vit_tiny')")
    patch = getattr(encoder, "patch_size", None)
    tubelet = getattr(encoder, "tubelet_size", None)
    grid = getattr(encoder, "grid_size", None)
    derived: dict[str, Any] = {}
    if patch is not None and tubelet is not None:
        derived = {"patch_size": int(_first(patch)), "tubelet_size": int(tubelet)}
        if grid is not None:
            derived["num_frames"] = int(grid[0]) * int(tubelet)
            derived["img_size"] = int(grid[1]) * int(_first(patch))
    for key, value in derived.items():
        cfg.setdefault(key, value)
    for key, value in cfg.items():
        _check_primitive(value, f"save_encoder config[{key!r}]")
    return cfg


def _check_primitive(value: Any, where: str) -> None:
    """Checkpoints hold only primitives (weights-only loading): numbers, strings, lists, dicts of them."""
    if isinstance(value, (int, float, str, bool, type(None))):
        return
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            _check_primitive(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a non-string key {k!r}")
            _check_primitive(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"{where} must be a primitive (number, string, list, dict), got {type(value).__name__}")


def save_encoder(path: str | os.PathLike, encoder: nn.Module, config: dict[str, Any]) -> Path:
    """Write ``{"state_dict": encoder weights, "config": config}`` atomically, weights-only loadable.

    ``config`` holds primitives: ``model`` (registry name) plus the ``create_model`` keywords
    that fix the geometry (``img_size``, ``num_frames``, ``patch_size``, ``tubelet_size``, ...);
    anything else (pretraining recipe, losses) may ride along under other keys and is ignored
    by :func:`load_encoder` unless listed in ``config["model_kwargs"]``.
    """
    cfg = _encoder_config(encoder, config)
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    return atomic_torch_save({"state_dict": state, "config": cfg, "format": "vidlab.encoder/1"}, path)


_MODEL_KWARGS = ("img_size", "num_frames", "patch_size", "tubelet_size")


def load_encoder(path: str | os.PathLike, num_classes: int, **overrides: Any) -> nn.Module:
    """Rebuild the saved :class:`VideoViT` with ``create_model`` and its weights; the classifier
    is re-initialised for ``num_classes`` (the pretrained head, if any, is dropped)."""
    from vidlab.models import create_model

    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path} is not an encoder checkpoint written by save_encoder")
    cfg = ckpt["config"]
    kwargs = {k: cfg[k] for k in _MODEL_KWARGS if k in cfg}
    kwargs.update(cfg.get("model_kwargs", {}))
    kwargs.update(overrides)
    model = create_model(cfg["model"], num_classes=num_classes, **kwargs)
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad_missing = [k for k in missing if not k.startswith("head.")]
    if bad_missing or unexpected:
        raise ValueError(
            f"{path} does not fit {cfg['model']} with {kwargs}: missing {bad_missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def extract_features(
    encoder: nn.Module, loader: Iterable, device: str | torch.device = "cpu", amp: bool | str = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features: mean-pooled ``forward_features`` -> ``(feats (N, D) float32 CPU, labels (N,))``.

    Multi-view batches ``(B, V, C, T, H, W)`` are averaged over the views.
    """
    device = torch.device(device)
    was_training = encoder.training
    encoder.to(device).eval()
    autocast, _ = _amp_context(amp, device)
    feats, labels = [], []
    try:
        for batch in loader:
            video = _video_of(batch).to(device)
            views = video.shape[1] if video.ndim == 6 else 1
            flat = video.flatten(0, 1) if video.ndim == 6 else video
            with autocast:
                f = encoder.forward_features(flat).mean(dim=1).float()
            feats.append(f.view(-1, views, f.shape[-1]).mean(dim=1).cpu())
            labels.append(batch["label"].cpu() if isinstance(batch, dict) else batch[1].cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Cosine kNN (weighted vote ``exp(sim / temperature)``, as in DINO); returns top-1 accuracy in [0, 1]."""
    if len(train_feats) == 0 or len(test_feats) == 0:
        raise ValueError("knn_accuracy needs non-empty train and test features")
    k = min(k, len(train_feats))
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    tr = F.normalize(train_feats.float(), dim=1)
    te = F.normalize(test_feats.float(), dim=1)
    sim, idx = (te @ tr.t()).topk(k, dim=1)
    votes = torch.zeros(len(te), num_classes)
    votes.scatter_add_(1, train_labels[idx].long(), (sim / temperature).exp())
    return float((votes.argmax(1) == test_labels).float().mean())


def linear_probe_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    steps: int = 200,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> float:
    """Multinomial logistic regression on frozen, standardised features (full-batch L-BFGS,
    L2 penalty ``weight_decay``); returns test top-1 accuracy in [0, 1]."""
    mean = train_feats.float().mean(0, keepdim=True)
    std = train_feats.float().std(0, keepdim=True).clamp_min(1e-6) if len(train_feats) > 1 else 1.0
    xtr = (train_feats.float() - mean) / std
    xte = (test_feats.float() - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    gen = torch.Generator().manual_seed(seed)
    clf = nn.Linear(xtr.shape[1], num_classes)
    with torch.no_grad():
        clf.weight.copy_(torch.randn(clf.weight.shape, generator=gen) * 0.01)
        clf.bias.zero_()
    opt = torch.optim.LBFGS(clf.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")
    ytr = train_labels.long()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(clf(xtr), ytr) + weight_decay * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float((clf(xte).argmax(1) == test_labels).float().mean())


def few_label_indices(labels: Sequence[int] | torch.Tensor, per_class: int, seed: int = 0) -> list[int]:
    """Indices of ``per_class`` examples of every class (a seeded draw): the label budget."""
    labels = torch.as_tensor(labels)
    gen = torch.Generator().manual_seed(seed)
    picked: list[int] = []
    for c in labels.unique().tolist():
        where = (labels == c).nonzero().flatten()
        if len(where) < per_class:
            raise ValueError(f"class {c} has only {len(where)} examples, fewer than per_class={per_class}")
        picked += where[torch.randperm(len(where), generator=gen)[:per_class]].tolist()
    return sorted(picked)


@torch.no_grad()
def _accuracy(model: nn.Module, loader: Iterable, device: torch.device, autocast: Any) -> float:
    model.eval()
    correct = total = 0
    for batch in loader:
        video = _video_of(batch).to(device)
        label = (batch["label"] if isinstance(batch, dict) else batch[1]).to(device)
        with autocast:
            if video.ndim == 6:  # multi-view: average the softmax over views
                b, v = video.shape[:2]
                logits = model(video.flatten(0, 1)).float().softmax(-1).view(b, v, -1).mean(1)
            else:
                logits = model(video).float()
        correct += int((logits.argmax(-1) == label).sum())
        total += len(label)
    return correct / max(1, total)


def fewshot_finetune(
    encoder: nn.Module | None,
    train_loader: Iterable,
    test_loader: Iterable,
    *,
    num_classes: int,
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    steps: int = 200,
    lr: float = 1e-3,
    backbone_lr_scale: float = 0.1,
    freeze_steps: int = 0,
    warmup: int | float = 0.1,
    weight_decay: float = 0.05,
    label_smoothing: float = 0.1,
    layer_decay: float | None = None,
    amp: bool | str = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``encoder`` (a copy; pretrained) or a fresh ``create_model(model_name, **model_kwargs)``
    (``encoder=None``: scratch) with one recipe, so the two are comparable at one label budget.

    Recipe: the classifier is re-initialised; for the first ``freeze_steps`` only the head
    trains (a linear probe), then everything trains with the backbone at ``lr * backbone_lr_scale``
    (and, with ``layer_decay``, blocks further from the head scaled down per block); AdamW,
    warmup then cosine, label smoothing, gradient clipping at 1. Returns ``test_acc``,
    ``probe_acc`` (after the frozen phase, or None), ``history`` (loss per step), ``seconds``.
    """
    from vidlab.models import create_model

    device = torch.device(device)
    torch.manual_seed(seed)
    if encoder is None:
        if model_name is None:
            raise ValueError("fewshot_finetune from scratch (encoder=None) needs model_name=")
        model = create_model(model_name, num_classes=num_classes, **(model_kwargs or {}))
    else:
        model = copy.deepcopy(encoder)
        model.reset_classifier(num_classes)
    model.to(device)
    head_names = {n for n, _ in model.named_parameters() if n.startswith(("head.", "fc_norm."))}
    blocks = getattr(model, "blocks", [])
    depth = len(blocks)

    def scale_of(name: str) -> float:
        if name in head_names:
            return 1.0
        if layer_decay is None:
            return backbone_lr_scale
        layer = 0
        if name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        elif name.startswith("norm."):
            layer = depth
        return backbone_lr_scale * layer_decay ** (depth - layer)

    groups: dict[tuple[float, bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        no_wd = p.ndim <= 1 or "pos_embed" in name or "token" in name
        groups.setdefault((scale_of(name), no_wd, name in head_names), []).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": ps, "lr_scale": s, "is_head": is_head, "weight_decay": 0.0 if no_wd else weight_decay}
         for (s, no_wd, is_head), ps in groups.items()],
        lr=lr,
    )
    warm = int(round(warmup * steps)) if isinstance(warmup, float) and warmup < 1 else int(warmup)
    autocast, scaler = _amp_context(amp, device)
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    batches = _cycle(train_loader)
    history: list[float] = []
    probe_acc = None
    start = time.perf_counter()
    for step in tqdm(range(steps), desc="few-shot fine-tune", disable=not progress):
        frozen = step < freeze_steps
        if step == freeze_steps and freeze_steps > 0:
            probe_acc = _accuracy(model, test_loader, device, autocast)
        model.train()
        if frozen:  # linear-probe phase: only the head (fc_norm + classifier) is updated
            sched = _warmup_cosine(step, freeze_steps, max(1, int(round(0.1 * freeze_steps))))
        else:
            sched = _warmup_cosine(step - freeze_steps, steps - freeze_steps, max(1, warm))
        for g in optimizer.param_groups:
            g["lr"] = lr * sched * (1.0 if g["is_head"] else (0.0 if frozen else g["lr_scale"]))
        batch = next(batches)
        video = _video_of(batch).to(device)
        label = (batch["label"] if isinstance(batch, dict) else batch[1]).to(device)
        with autocast:
            loss = criterion(model(video).float(), label)
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if frozen:
            for g in optimizer.param_groups:
                if not g["is_head"]:
                    for p in g["params"]:
                        p.grad = None
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        history.append(float(loss.detach()))
    if freeze_steps >= steps:
        probe_acc = _accuracy(model, test_loader, device, autocast)
    test_acc = _accuracy(model, test_loader, device, autocast)
    return {"test_acc": test_acc, "probe_acc": probe_acc, "history": history,
            "seconds": time.perf_counter() - start, "model": model}
