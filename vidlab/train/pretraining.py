"""Notebook 02's recipe: self-supervised pretraining presets and the steps built on :mod:`vidlab.train.ssl`.

One :class:`PretrainSettings` fixes everything a run needs: clip geometry and encoder, the
VideoMAE recipe, the contrastive recipe, the probes and the few-label fine-tuning recipe.
:data:`PRETRAIN_PRESETS` holds the ``smoke`` / ``cpu`` / ``gpu`` values (same code at every
size). Notebook 02 pretrains with :func:`pretrain_encoder` and saves the MAE encoder to
:func:`artifact_path`; notebook 03 calls :func:`ensure_pretrained_encoder`, which reuses that
file or, when it is missing (or was built for another geometry), runs the same recipe itself.

Layouts: clips ``(C, T, H, W)`` normalised floats; batches ``(B, C, T, H, W)``; contrastive
batches ``(B, 2, C, T, H, W)``; multi-view test batches ``(B, V, C, T, H, W)``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from vidlab.data.cache import CachedClipDataset, DecodedVideos, cached_loader
from vidlab.data.transforms import eval_transform, train_transform
from vidlab.presets import Lesson
from vidlab.train import ssl
from vidlab.train.supervised import ClipData, load_clip_data
from vidlab.utils import load_checkpoint, project_root

METHODS = ("mae", "contrastive")
# the unlabeled subset is drawn with a fixed seed so every run (and notebook 03) shares one decode cache
_POOL_SEED = 0


@dataclass(frozen=True)
class PretrainSettings:
    """02_self_supervised_pretraining (and the encoder notebook 03 fine-tunes)."""

    # clip geometry and encoder
    num_frames: int = 8  # frames per clip
    stride: int = 4  # native frames between sampled frames
    img_size: int = 32  # crop size fed to the encoder
    cache_size: int = 40  # short side of the decoded frames kept in memory
    patch_size: int = 8  # spatial patch of a tubelet
    tubelet_size: int = 2  # frames per tubelet
    model: str = "vit_mini"  # registry name of the VideoViT encoder
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    # unlabeled pool
    unlabeled_videos: int | None = 1200  # videos of the unlabeled split used (None: all)
    crop_scale_min: float = 0.6  # random resized crop scale range (min, 1) while pretraining
    # VideoMAE
    mask_type: str = "tube"  # library default (VideoMAE paper); the cpu preset uses "frame"
    mask_ratio: float = 0.9
    motion_weight: float = 0.0  # >0 up-weights the loss of moving tubelets (ssl.VideoMAE)
    decoder_dim: int = 64
    decoder_depth: int = 1
    decoder_heads: int = 4
    mae_steps: int = 300  # optimizer steps
    mae_lr: float = 1.5e-3
    warmup: float = 0.1  # fraction of the steps
    weight_decay: float = 0.05
    batch_size: int = 32
    accum_steps: int = 1
    amp: bool | str = False  # False | "bf16" | "fp16" | True
    compare_ratios: tuple[float, ...] = (0.5, 0.75, 0.9)  # mask ratios compared on held-out clips
    # contrastive (SimCLR-style)
    contrastive_steps: int = 80
    contrastive_lr: float = 1e-3
    contrastive_batch_size: int = 24
    temperature: float = 0.1
    reverse_negatives: bool = True  # time-reversed clips as extra negatives
    # probes on frozen features
    knn_k: int = 20
    test_views: int = 2  # clips per test video (features / logits averaged)
    # label efficiency: few-label fine-tuning, pretrained vs scratch, one recipe
    fewshot_per_class: int = 10  # labelled training videos per class (the headline comparison)
    fewshot_budgets: tuple[int, ...] = (10,)  # budgets of the label-efficiency curve (per class)
    fewshot_steps: int = 150
    fewshot_batch_size: int = 16
    fewshot_lr: float = 1e-3
    fewshot_backbone_lr_scale: float = 1.0
    fewshot_freeze_steps: int = 0
    workers: int = 2  # decoding processes


PRETRAIN_PRESETS: dict[str, PretrainSettings] = {
    "smoke": PretrainSettings(
        num_frames=4, stride=2, embed_dim=32, depth=2, num_heads=2, decoder_dim=32, decoder_heads=2,
        unlabeled_videos=None, mae_steps=6, batch_size=8, contrastive_steps=3, contrastive_batch_size=8,
        knn_k=5, test_views=1, fewshot_per_class=2, fewshot_budgets=(2,), fewshot_steps=4, fewshot_batch_size=8,
        compare_ratios=(0.5, 0.9), motion_weight=16.0,
    ),
    # measured offline (10 labels/class, 3 seeds): tube-0.9 plain MAE fine-tuned ~11 points below
    # scratch; frame masks at 50% with a motion-weighted loss, 600 steps, no scale jitter: +13.9 points
    "cpu": PretrainSettings(mask_type="frame", mask_ratio=0.5, motion_weight=16.0, mae_steps=600,
                            crop_scale_min=1.0, contrastive_steps=40, fewshot_budgets=(5, 10)),
    "gpu": PretrainSettings(
        num_frames=16, stride=2, img_size=224, cache_size=256, patch_size=16, tubelet_size=2,
        model="vit_small", embed_dim=384, depth=12, num_heads=6, unlabeled_videos=None, crop_scale_min=0.5,
        decoder_dim=192, decoder_depth=4, decoder_heads=3, mae_steps=4000, batch_size=32, accum_steps=2,
        amp=True, contrastive_steps=1000, contrastive_batch_size=64, test_views=3,
        fewshot_per_class=10, fewshot_budgets=(2, 5, 10, 25), fewshot_steps=600, fewshot_batch_size=16, fewshot_lr=5e-4,
        fewshot_backbone_lr_scale=0.5, workers=8,
    ),
}

# What notebook 02's run must show (checked by ``python -m vidlab run --check``)
LESSONS = (
    Lesson("fewshot_gain_points", ">=", 15.0, presets=("cpu",),
           why="with few labels, MAE pretraining beats the same mean-pooled ViT trained from scratch"),
)

# geometry keys an encoder artifact must match to be reused for a preset
_GEOMETRY = ("model", "img_size", "num_frames", "patch_size", "tubelet_size", "model_kwargs")


# ----------------------------------------------------------------------------- encoder + data
def model_kwargs(settings: PretrainSettings) -> dict[str, Any]:
    """``create_model`` keywords that fix the encoder's geometry and size."""
    return {
        "img_size": settings.img_size, "num_frames": settings.num_frames, "patch_size": settings.patch_size,
        "tubelet_size": settings.tubelet_size, "embed_dim": settings.embed_dim, "depth": settings.depth,
        "num_heads": settings.num_heads,
    }


def build_encoder(settings: PretrainSettings, num_classes: int = 0, **overrides: Any) -> nn.Module:
    """A fresh :class:`~vidlab.models.vit.VideoViT` for ``settings`` (``num_classes=0``: no classifier);
    ``overrides`` set what the settings do not, such as the head's ``global_pool``."""
    from vidlab.models import create_model

    return create_model(settings.model, num_classes=num_classes, **{**model_kwargs(settings), **overrides})


def encoder_config(settings: PretrainSettings, method: str = "mae") -> dict[str, Any]:
    """The ``save_encoder`` config: registry name, geometry, size, and the recipe that produced it."""
    kw = model_kwargs(settings)
    recipe = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(settings).items()}
    return {
        "model": settings.model,
        **{k: kw[k] for k in ("img_size", "num_frames", "patch_size", "tubelet_size")},
        "model_kwargs": {k: kw[k] for k in ("embed_dim", "depth", "num_heads")},
        "stride": settings.stride,
        "method": method,
        "recipe": recipe,
    }


def unlabeled_videos(data_dir: str | os.PathLike, settings: PretrainSettings, *, progress: bool = True) -> DecodedVideos:
    """The ``unlabeled`` split decoded once into memory (at most ``settings.unlabeled_videos`` videos)."""
    return DecodedVideos(
        data_dir, "unlabeled", size=settings.cache_size, max_per_class=settings.unlabeled_videos,
        seed=_POOL_SEED, workers=settings.workers, progress=progress,
    )


def pretrain_dataset(videos: DecodedVideos, settings: PretrainSettings, *, views: int = 1) -> torch.utils.data.Dataset:
    """Random clips with a random resized crop (no flip: flips change motion directions) and
    colour jitter. ``views=2`` gives two independent draws per item (:class:`~vidlab.train.ssl.TwoViews`)."""
    if views not in (1, 2):
        raise ValueError(f"views must be 1 (MAE) or 2 (contrastive), got {views}")
    transform = train_transform(size=settings.img_size, scale=(settings.crop_scale_min, 1.0), hflip=False,
                                color_jitter=0.4 if views == 2 else 0.1)
    clips = CachedClipDataset(videos, num_frames=settings.num_frames, stride=settings.stride, sampler="random",
                              transform=transform)
    return ssl.TwoViews(clips) if views == 2 else clips


def heldout_clips(videos: DecodedVideos, settings: PretrainSettings, count: int = 8) -> torch.Tensor:
    """The centre clips of the first ``count`` videos of ``videos`` (e.g. the val split, never seen
    while pretraining): ``(count, C, T, H, W)``, centre crop, normalised."""
    clips = CachedClipDataset(videos, num_frames=settings.num_frames, stride=settings.stride, sampler="center",
                              transform=eval_transform(size=settings.img_size, resize=settings.img_size),
                              indices=list(range(min(count, len(videos)))))
    return torch.stack([clips[i]["video"] for i in range(len(clips))])


def build_mae(encoder: nn.Module, settings: PretrainSettings, *, mask_ratio: float | None = None,
              mask_type: str | None = None) -> ssl.VideoMAE:
    """:class:`~vidlab.train.ssl.VideoMAE` around ``encoder`` with the preset's decoder and mask."""
    return ssl.VideoMAE(
        encoder, decoder_dim=settings.decoder_dim, decoder_depth=settings.decoder_depth,
        decoder_heads=settings.decoder_heads, mask_ratio=settings.mask_ratio if mask_ratio is None else mask_ratio,
        mask_type=mask_type or settings.mask_type, motion_weight=settings.motion_weight,
    )


# ----------------------------------------------------------------------------- pretraining
def pretrain_encoder(
    data_dir: str | os.PathLike,
    settings: PretrainSettings,
    *,
    method: str = "mae",
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    videos: DecodedVideos | None = None,
    steps: int | None = None,
    mask_ratio: float | None = None,
) -> dict[str, Any]:
    """Pretrain a fresh encoder on the ``unlabeled`` split of ``data_dir``.

    ``method="mae"``: VideoMAE (``settings.mask_type`` at ``mask_ratio`` or the preset's);
    ``"contrastive"``: SimCLR-style with two clips per video. ``videos`` reuses an already
    decoded pool; ``steps`` overrides the preset's step count.

    Returns ``encoder`` (the VideoViT, on CPU, eval mode), ``model`` (the VideoMAE / SimCLR
    wrapper), ``history`` (loss per step), ``seconds``, ``peak_memory_bytes``, ``steps``,
    ``method`` and ``config`` (for :func:`vidlab.train.ssl.save_encoder`).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; choose one of {', '.join(METHODS)}")
    torch.manual_seed(seed)
    videos = videos if videos is not None else unlabeled_videos(data_dir, settings, progress=progress)
    encoder = build_encoder(settings)
    common = dict(warmup=settings.warmup, weight_decay=settings.weight_decay, accum_steps=settings.accum_steps,
                  amp=settings.amp, device=device, progress=progress)
    if method == "mae":
        model: nn.Module = build_mae(encoder, settings, mask_ratio=mask_ratio)
        batch = settings.batch_size
        loader = cached_loader(pretrain_dataset(videos, settings), batch_size=batch, shuffle=True, seed=seed,
                               drop_last=len(videos) > batch)
        out = ssl.pretrain_mae(model, loader, steps=steps or settings.mae_steps, lr=settings.mae_lr, **common)
    else:
        model = ssl.SimCLRVideo(encoder, temperature=settings.temperature, reverse_negatives=settings.reverse_negatives)
        batch = settings.contrastive_batch_size
        loader = cached_loader(pretrain_dataset(videos, settings, views=2), batch_size=batch, shuffle=True,
                               seed=seed, drop_last=len(videos) > batch)
        out = ssl.pretrain_contrastive(model, loader, steps=steps or settings.contrastive_steps,
                                       lr=settings.contrastive_lr, **common)
    model.cpu().eval()
    return {**out, "encoder": encoder, "model": model, "method": method, "config": encoder_config(settings, method)}


def save_pretrained(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save ``pretrain_encoder``'s encoder (atomically) with its config and loss history."""
    config = dict(result["config"])
    config["pretrain_seconds"] = float(result["seconds"])
    config["final_loss"] = float(result["history"][-1]) if result["history"] else None
    return ssl.save_encoder(path, result["encoder"], config)


def artifact_path(preset: str) -> Path:
    """Where notebook 02 leaves the MAE encoder of ``preset`` for notebook 03."""
    return project_root() / "runs" / "artifacts" / preset / "ssl_encoder.pt"


def artifact_matches(path: str | os.PathLike, settings: PretrainSettings) -> tuple[bool, str]:
    """Whether the encoder file at ``path`` has ``settings``' geometry; ``(ok, reason)``."""
    path = Path(path)
    if not path.exists():
        return False, "missing"
    try:
        saved = load_checkpoint(path)["config"]
    except Exception as err:  # an unreadable or foreign file is rebuilt, not trusted
        return False, f"unreadable ({type(err).__name__}: {err})"
    wanted = encoder_config(settings)
    diffs = [f"{k}: saved {saved.get(k)!r}, preset {wanted[k]!r}" for k in _GEOMETRY if saved.get(k) != wanted[k]]
    return (not diffs), "; ".join(diffs) or "ok"


def ensure_pretrained_encoder(
    preset: str,
    data_dir: str | os.PathLike,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    settings: PretrainSettings | None = None,
    path: str | os.PathLike | None = None,
) -> Path:
    """The MAE encoder file for ``preset``: reused when it exists with the preset's geometry,
    otherwise pretrained now with the preset's MAE recipe (as notebook 02) and saved atomically.

    ``settings`` / ``path`` override the preset's settings and :func:`artifact_path` (tests).
    Load it with ``vidlab.train.ssl.load_encoder(path, num_classes)``.
    """
    if settings is None:
        if preset not in PRETRAIN_PRESETS:
            raise ValueError(f"preset={preset!r} is not a pretraining preset; choose one of {', '.join(PRETRAIN_PRESETS)}")
        settings = PRETRAIN_PRESETS[preset]
    target = Path(path) if path is not None else artifact_path(preset)
    ok, reason = artifact_matches(target, settings)
    if ok:
        return target
    why = "" if reason == "missing" else f" (existing file does not fit: {reason})"
    print(f"no pretrained encoder for preset {preset} at {target}{why}: pretraining it now "
          f"(same recipe as notebook 02) ...", flush=True)
    result = pretrain_encoder(data_dir, settings, method="mae", device=device, seed=seed, progress=progress)
    save_pretrained(result, target)
    print(f"saved {target} ({result['seconds']:.0f} s of pretraining)", flush=True)
    return target


# ----------------------------------------------------------------------------- evaluation
def labelled_data(data_dir: str | os.PathLike, settings: PretrainSettings, *, progress: bool = True) -> ClipData:
    """train / val / test clip datasets at the preset's geometry (decoded once)."""
    return load_clip_data(data_dir, num_frames=settings.num_frames, stride=settings.stride, size=settings.img_size,
                          cache_size=settings.cache_size, test_views=settings.test_views, workers=settings.workers,
                          progress=progress)


def _eval_view(data: ClipData, split: str, settings: PretrainSettings, indices: Sequence[int] | None = None) -> CachedClipDataset:
    base = getattr(data, split)
    views = settings.test_views if split == "test" else 1
    return CachedClipDataset(
        base.videos, num_frames=settings.num_frames, stride=settings.stride,
        sampler="multi" if views > 1 else "center", num_clips=views,
        transform=eval_transform(size=settings.img_size, resize=settings.img_size),
        indices=base.indices if indices is None else indices,
    )


def frozen_features(encoder: nn.Module, data: ClipData, settings: PretrainSettings, *,
                    device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Mean-pooled frozen features of every train (centre clip) and test (multi-view) video:
    ``train_x (N, D)``, ``train_y``, ``test_x``, ``test_y``."""
    train = cached_loader(_eval_view(data, "train", settings), batch_size=64)
    test = cached_loader(_eval_view(data, "test", settings), batch_size=32)
    trx, try_ = ssl.extract_features(encoder, train, device)
    tex, tey = ssl.extract_features(encoder, test, device)
    return {"train_x": trx, "train_y": try_, "test_x": tex, "test_y": tey}


def probe_encoder(encoder: nn.Module, data: ClipData, settings: PretrainSettings, *,
                  device: str | torch.device = "cpu", seed: int = 0) -> dict[str, float]:
    """kNN and linear-probe top-1 (in [0, 1]) of frozen features, all labelled train videos."""
    f = frozen_features(encoder, data, settings, device=device)
    knn = ssl.knn_accuracy(f["train_x"], f["train_y"], f["test_x"], f["test_y"], k=settings.knn_k)
    probe = ssl.linear_probe_accuracy(f["train_x"], f["train_y"], f["test_x"], f["test_y"], seed=seed)
    return {"knn_top1": knn, "probe_top1": probe}


def fewshot(
    encoder: nn.Module | None,
    data: ClipData,
    settings: PretrainSettings,
    *,
    per_class: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``encoder`` (``None``: a fresh encoder of the same architecture, from scratch)
    on ``per_class`` labelled videos per class with the preset's few-shot recipe; the recipe,
    the budget, the seed and the batches are identical for both. Returns
    :func:`vidlab.train.ssl.fewshot_finetune`'s dict plus ``per_class`` and ``train_videos``."""
    per_class = per_class or settings.fewshot_per_class
    budget = data.with_train_budget(per_class, seed=seed)
    batch = min(settings.fewshot_batch_size, len(budget.train))
    train_loader = cached_loader(budget.train, batch_size=batch, shuffle=True, seed=seed, drop_last=True)
    test_loader = cached_loader(_eval_view(data, "test", settings), batch_size=32)
    out = ssl.fewshot_finetune(
        encoder, train_loader, test_loader, num_classes=data.num_classes, model_name=settings.model,
        model_kwargs=model_kwargs(settings), steps=settings.fewshot_steps, lr=settings.fewshot_lr,
        backbone_lr_scale=settings.fewshot_backbone_lr_scale, freeze_steps=settings.fewshot_freeze_steps,
        amp=settings.amp, device=device, seed=seed, progress=progress,
    )
    out.pop("model", None)
    return {**out, "per_class": per_class, "train_videos": len(budget.train)}


@torch.no_grad()
def mask_ratio_losses(
    mae: ssl.VideoMAE,
    clips: torch.Tensor,
    ratios: Sequence[float],
    mask_types: Sequence[str] = ssl.MASK_TYPES,
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
                mask = ssl.make_mask(mask_type, clips.shape[0], mae.grid, ratio, gen)
            except ValueError:
                continue
            latent = mae.encode_visible(clips, mask)
            loss = mae.loss(mae.decoder(latent, mask), mae.targets(clips), mask)
            rows.append({"mask_type": mask_type, "ratio": float(ratio), "loss": float(loss),
                         "visible_tokens": int((~mask[0]).sum())})
    return rows


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
    tokens = ssl.patchify(clips.float(), tubelet, patch).view(b, gt, gh * gw, -1)
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
    target = ssl.patchify(clips.float(), tubelet, patch)
    mean = target.mean(-1, keepdim=True)
    std = (target.var(-1, unbiased=True, keepdim=True) + 1e-6).sqrt()
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

