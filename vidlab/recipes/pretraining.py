"""Notebook 02's recipe: self-supervised pretraining presets and the steps built on :mod:`vidlab.train.ssl`.

One :class:`PretrainSettings` fixes everything a run needs: clip geometry and encoder, the
VideoMAE recipe, the contrastive recipe, the probes and the few-label fine-tuning recipe
(:mod:`vidlab.recipes.ssl_probes`). :data:`PRETRAIN_PRESETS` holds the ``smoke`` / ``cpu`` /
``gpu`` values (same code at every size). Notebook 02 pretrains with :func:`pretrain_encoder` and
saves the MAE encoder with :func:`save_pretrained` (a :func:`vidlab.models.save_model` file) as
``OUTPUT_DIR/ssl_encoder.pt``; notebook 03 calls :func:`ensure_pretrained_encoder`, which reuses
that file or, when it is missing (or was built for another geometry), runs the same recipe itself.

Layouts: clips ``(C, T, H, W)`` normalised floats; batches ``(B, C, T, H, W)``; contrastive
batches ``(B, 2, C, T, H, W)``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from vidlab.data.cache import CachedClipDataset, DecodedVideos, cached_loader
from vidlab.data.manifest import read_manifest, splits
from vidlab.data.transforms import eval_transform, train_transform
from vidlab.models import create_model, save_model
from vidlab.models.saving import read_model_info
from vidlab.recipes.lessons import Lesson
from vidlab.train import TrainConfig, ssl

METHODS = ("mae", "contrastive")
ENCODER_FILE = "ssl_encoder.pt"
PRETRAIN_NOTEBOOK = "02_self_supervised_pretraining"
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
    amp: bool = False  # autocast while pretraining and fine-tuning (TrainConfig.amp)
    amp_dtype: str = "bfloat16"  # "bfloat16" | "float16" (float16 adds a GradScaler)
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
    # frame masks at 50 % with a motion-weighted loss and no scale jitter: plain tube-90 % MAE does not
    # help the few-label fine-tune on these small clips (benchmarks/mae_recipes.py, notebook 02). The
    # contrastive objective needs a longer budget than 40 steps before its probe clears a random encoder's
    # (benchmarks/contrastive_budget.py); notebook 03 covers the smaller label budgets.
    "cpu": PretrainSettings(mask_type="frame", mask_ratio=0.5, motion_weight=16.0, mae_steps=1200,
                            crop_scale_min=1.0, contrastive_steps=120, fewshot_budgets=(10,)),
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

# ----------------------------------------------------------------------------- encoder + data
def model_kwargs(settings: PretrainSettings) -> dict[str, Any]:
    """``create_model`` keywords that fix the encoder's geometry and size. ``fc_norm=False``: the
    encoder ends with its own per-token LayerNorm (VideoMAE's encoder norm), learnt in pretraining and
    kept by fine-tuning, instead of a fresh norm on the pooled feature."""
    return {
        "img_size": settings.img_size, "num_frames": settings.num_frames, "patch_size": settings.patch_size,
        "tubelet_size": settings.tubelet_size, "embed_dim": settings.embed_dim, "depth": settings.depth,
        "num_heads": settings.num_heads, "fc_norm": False,
    }


def clip_geometry(settings: PretrainSettings) -> dict[str, int]:
    """The clips the encoder takes: ``num_frames``, ``img_size``, ``frame_stride`` (as
    :func:`vidlab.models.load_model` reports them in ``model.clip_geometry``)."""
    return {"num_frames": settings.num_frames, "img_size": settings.img_size, "frame_stride": settings.stride}


def build_encoder(settings: PretrainSettings, num_classes: int = 0, **overrides: Any) -> nn.Module:
    """A fresh :class:`~vidlab.models.vit.VideoViT` for ``settings`` (``num_classes=0``: no classifier);
    ``overrides`` set what the settings do not, such as the head's ``global_pool``."""
    return create_model(settings.model, num_classes=num_classes, **{**model_kwargs(settings), **overrides})


def pretraining_split(data_dir: str | os.PathLike) -> str:
    """The split pretraining reads: ``unlabeled`` when the dataset has one (the synthetic data), else
    ``train`` with its labels unused (a folder made by ``prepare_folder`` has only train / val / test)."""
    return "unlabeled" if "unlabeled" in splits(read_manifest(data_dir)) else "train"


def unlabeled_videos(data_dir: str | os.PathLike, settings: PretrainSettings, *, progress: bool = True) -> DecodedVideos:
    """The :func:`pretraining_split` decoded once into memory (at most ``settings.unlabeled_videos`` videos)."""
    return DecodedVideos(
        data_dir, pretraining_split(data_dir), size=settings.cache_size, max_per_class=settings.unlabeled_videos,
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
def pretrain_config(settings: PretrainSettings, method: str, steps: int, *, seed: int = 0) -> TrainConfig:
    """The engine's :class:`~vidlab.train.TrainConfig` of one pretraining run: AdamW (betas 0.9 / 0.95
    for VideoMAE), ``settings.warmup`` of the ``steps`` as linear warmup then cosine, clipping at 1,
    the preset's accumulation and AMP."""
    mae = method == "mae"
    return TrainConfig(
        lr=settings.mae_lr if mae else settings.contrastive_lr, weight_decay=settings.weight_decay,
        betas=(0.9, 0.95) if mae else (0.9, 0.999), warmup_steps=max(1, int(round(settings.warmup * steps))),
        clip_grad_norm=1.0, accum_steps=settings.accum_steps, amp=settings.amp, amp_dtype=settings.amp_dtype,
        seed=seed,
    )


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

    Returns :func:`vidlab.train.ssl.pretrain`'s dict (``history``: loss per step, ``seconds``,
    ``peak_memory_bytes``, ``steps``, ``skipped_steps``) plus ``encoder`` (the VideoViT, on CPU,
    eval mode), ``model`` (the VideoMAE / SimCLR wrapper), ``method`` and ``settings``.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; choose one of {', '.join(METHODS)}")
    torch.manual_seed(seed)
    videos = videos if videos is not None else unlabeled_videos(data_dir, settings, progress=progress)
    encoder = build_encoder(settings)
    if method == "mae":
        model: nn.Module = build_mae(encoder, settings, mask_ratio=mask_ratio)
        batch, dataset, steps = settings.batch_size, pretrain_dataset(videos, settings), steps or settings.mae_steps
    else:
        model = ssl.SimCLRVideo(encoder, temperature=settings.temperature, reverse_negatives=settings.reverse_negatives)
        batch, dataset = settings.contrastive_batch_size, pretrain_dataset(videos, settings, views=2)
        steps = steps or settings.contrastive_steps
    loader = cached_loader(dataset, batch_size=batch, shuffle=True, seed=seed, drop_last=len(videos) > batch)
    out = ssl.pretrain(model, loader, pretrain_config(settings, method, steps, seed=seed), steps=steps,
                       device=device, progress=progress, desc="VideoMAE pretraining" if method == "mae"
                       else "contrastive pretraining")
    model.cpu().eval()
    return {**out, "encoder": encoder, "model": model, "method": method, "settings": settings}


def save_pretrained(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save :func:`pretrain_encoder`'s encoder with :func:`vidlab.models.save_model` (atomically):
    registry name and arguments, weights, clip geometry, and in ``meta`` the method, the recipe and
    the loss. ``vl.models.load_model(path)`` rebuilds it alone."""
    settings = result["settings"]
    recipe = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(settings).items()}
    history = result["history"]
    meta = {"method": result["method"], "recipe": recipe, "pretrain_seconds": float(result["seconds"]),
            "final_loss": float(history[-1]) if history else None}
    geometry = clip_geometry(settings)
    return save_model(result["encoder"], path, num_frames=geometry["num_frames"], img_size=geometry["img_size"],
                      frame_stride=geometry["frame_stride"], meta=meta)


def encoder_path(output_dir: str | os.PathLike) -> Path:
    """Where notebook 02 leaves its MAE encoder for a run whose notebooks write to sibling folders
    of ``output_dir`` (as ``python -m vidlab run`` and ``runs/interactive`` lay them out)."""
    return Path(output_dir).parent / PRETRAIN_NOTEBOOK / ENCODER_FILE


def artifact_matches(path: str | os.PathLike, settings: PretrainSettings) -> tuple[bool, str]:
    """Whether the encoder file at ``path`` has ``settings``' model and geometry; ``(ok, reason)``."""
    path = Path(path)
    if not path.exists():
        return False, "missing"
    try:
        info, _ = read_model_info(path)
    except Exception as err:  # an unreadable or foreign file is rebuilt, not trusted
        return False, f"unreadable ({type(err).__name__}: {err})"
    saved = {"model": info.name, **{k: v for k, v in info.kwargs.items() if k != "num_classes"},
             "frame_stride": info.frame_stride}
    wanted = {"model": settings.model, **model_kwargs(settings), "frame_stride": settings.stride}
    keys = sorted(set(saved) | set(wanted))
    diffs = [f"{k}: saved {saved.get(k)!r}, preset {wanted.get(k)!r}" for k in keys if saved.get(k) != wanted.get(k)]
    return (not diffs), "; ".join(diffs) or "ok"


def ensure_pretrained_encoder(
    preset: str,
    data_dir: str | os.PathLike,
    path: str | os.PathLike,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    settings: PretrainSettings | None = None,
) -> Path:
    """The MAE encoder file at ``path`` (e.g. :func:`encoder_path` of notebook 03's output folder):
    reused when it exists with the preset's geometry, otherwise pretrained now with the preset's
    MAE recipe (as notebook 02) and saved there atomically.

    ``settings`` overrides the preset's settings (tests). Load it with ``vl.models.load_model(path)``.
    """
    if settings is None:
        if preset not in PRETRAIN_PRESETS:
            raise ValueError(f"preset={preset!r} is not a pretraining preset; choose one of {', '.join(PRETRAIN_PRESETS)}")
        settings = PRETRAIN_PRESETS[preset]
    target = Path(path)
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
