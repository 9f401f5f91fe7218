"""Transfer learning for video (notebook 04): image -> video, and domain A -> domain B.

Image -> video. A 2D image backbone (a timm ResNet) becomes a video model three ways
(:mod:`vidlab.models.lifted`): TSN (per-frame features averaged over time, blind to frame
order), TSM (the same network with a zero-cost temporal shift in every residual block) and
I3D (every 2D kernel inflated to 3D). The helpers here move one trained 2D backbone between
them (:func:`image_model_of`, :func:`save_image_model`, :func:`still_video_gap`) and measure
what order-blindness costs (:func:`pair_accuracy`, :func:`order_sensitivity`).

Domain shift. :func:`train_with_budget` fine-tunes (or trains from scratch) on ``k`` labelled
videos per class for a fixed number of optimizer steps and tests; :func:`label_budget_curve`
runs it over several budgets for an A-pretrained model against a randomly initialised one.

Layouts: clips ``(C, T, H, W)``, batches ``(B, C, T, H, W)``, test batches ``(B, V, C, T, H, W)``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from vidlab.data.cache import cached_loader
from vidlab.data.clips import ClipData, load_clip_data
from vidlab.data.clips import repeat_dataset as repeat_to
from vidlab.recipes.lessons import Lesson
from vidlab.train.engine import TrainConfig, evaluate, fit
from vidlab.utils import atomic_torch_save

__all__ = [
    "TransferSettings",
    "DOMAIN_SPLITS",
    "load_domain",
    "TRANSFER_PRESETS",
    "DIRECTION_PAIRS",
    "pair_confusion",
    "pair_accuracy",
    "image_backbone",
    "image_model_of",
    "save_image_model",
    "save_video_model",
    "still_video_gap",
    "order_sensitivity",
    "repeat_to",
    "train_with_budget",
    "label_budget_curve",
]


@dataclass(frozen=True)
class TransferSettings:
    """04_transfer_learning settings (one per preset)."""

    backbone: str = "test_resnet"  # timm 2D ResNet used as the image model
    small_input_stem: bool = False  # drop the stem max-pool (CIFAR-style) to keep more pixels of tiny frames
    num_frames: int = 8  # frames per clip
    stride: int = 4  # native frames between sampled frames (8 x 4 spans a 32-frame video)
    clip_size: int = 32  # crop size fed to the models
    crop_scale_min: float = 0.8  # random resized crop keeps at least this fraction of the area
    batch_size: int = 16
    test_views: int = 2  # clips per test video (video-level accuracy averages them)
    lr: float = 3e-3  # AdamW peak learning rate (warmup + cosine) of TSN and of domain-B scratch runs
    video_lr: float | None = None  # peak learning rate of TSM and I3D on domain A (None: ``lr``)
    tsn_epochs: int = 2  # TSN from random init: this trains the "image model"
    tsm_epochs: int = 7  # TSM initialised from the image model
    tsm_fold_div: int = 8  # 1/fold_div of the channels shift each way (the TSM paper: 8)
    tsm_small_input_stem: bool = False  # TSM runs the image model's weights without its stem max-pool
    tsm_warmup_epochs: float = 0.3  # linear warmup of TSM's learning rate (TSN, I3D: 0.3 epochs)
    tsm_clip_grad_norm: float | None = None  # clip TSM's gradient norm (None: no clipping)
    i3d_epochs: int = 8  # I3D inflated from the image model
    shift_budgets: tuple[int, ...] = (2, 5, 20)  # labelled domain-B videos per class
    shift_steps: int = 50  # optimizer steps per domain-B run (same for every budget and method)
    shift_lr: float = 1e-3  # fine-tuning learning rate on domain B (scratch uses ``lr``)
    decode_workers: int = 2  # processes decoding the videos into memory


TRANSFER_PRESETS: dict[str, TransferSettings] = {
    "smoke": TransferSettings(stride=2, batch_size=12, test_views=1, tsn_epochs=1, tsm_epochs=1, i3d_epochs=1,
                              shift_budgets=(1, 2), shift_steps=2, decode_workers=1, video_lr=6e-3, tsm_fold_div=4,
                              tsm_small_input_stem=True, tsm_warmup_epochs=1.0, tsm_clip_grad_norm=1.0),
    # TSM runs the image weights without the stem max-pool (tiny frames) and shifts 1/4 of the channels
    # each way: with the max-pool and 1/8 it stays at chance. It sits at chance for a few epochs before
    # it finds motion (how long depends on the seed and on rounding), hence the 1-epoch warmup,
    # clipping and 12 epochs. I3D trains 8 epochs at the larger learning rate (twice: from the image
    # model and from a random init).
    "cpu": TransferSettings(video_lr=6e-3, tsm_epochs=12, tsm_fold_div=4, tsm_small_input_stem=True,
                            tsm_warmup_epochs=1.0, tsm_clip_grad_norm=1.0, i3d_epochs=8, shift_budgets=(2, 20)),
    "gpu": TransferSettings(backbone="resnet18", num_frames=16, stride=2, clip_size=112, crop_scale_min=0.5,
                            batch_size=32, test_views=3,
                            lr=1e-3, tsn_epochs=12, tsm_epochs=10, i3d_epochs=10, shift_budgets=(2, 5, 10, 25, 50),
                            shift_steps=300, shift_lr=5e-4, decode_workers=8),
}

# What notebook 04's run must show (checked by ``python -m vidlab run --check``)
LESSONS = (
    Lesson("tsm_top1", ">=", "tsn_top1", 0.3, presets=("cpu",), why="shifting channels in time lets a 2D model see motion; averaging cannot"),
    Lesson("tsm_top1", ">=", 0.85, presets=("cpu",), why="TSM learns the motion classes"),
    Lesson("inflated_top1", ">=", 0.85, presets=("cpu",), why="I3D inflated from the image model learns the motion classes"),
    Lesson("transfer_top1", ">", "scratch_b_top1", presets=("cpu",), why="with few domain-B labels, starting from domain A helps"),
)

# Class pairs that differ only in the direction of time: the bag of frames of one class has the
# same distribution as that of the other (the synthetic world wraps around, starts are uniform).
DIRECTION_PAIRS: tuple[tuple[str, str], ...] = (
    ("move_left", "move_right"),
    ("move_up", "move_down"),
    ("rotate_clockwise", "rotate_counterclockwise"),
)


# The (train, val, test) splits of each domain of the synthetic dataset.
DOMAIN_SPLITS: dict[str, tuple[str, str, str]] = {
    "A": ("train", "val", "test"),
    "B": ("shift_train", "shift_val", "shift_test"),
}


def has_domain(data_dir: str | os.PathLike, domain: str) -> bool:
    """Whether the dataset at ``data_dir`` holds ``domain``'s train / val / test splits (the synthetic
    data has domains A and B; a folder made by ``prepare_folder`` only A's ``train`` / ``val`` / ``test``)."""
    from vidlab.data.manifest import read_manifest, splits

    if domain not in DOMAIN_SPLITS:
        raise ValueError(f"has_domain: domain must be one of {', '.join(DOMAIN_SPLITS)}, got {domain!r}")
    return set(DOMAIN_SPLITS[domain]) <= set(splits(read_manifest(data_dir)))


def direction_pairs(classes: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The :data:`DIRECTION_PAIRS` whose two classes are both among ``classes`` (none for most real datasets)."""
    return tuple(pair for pair in DIRECTION_PAIRS if set(pair) <= set(classes))


def load_domain(
    data_dir: str | os.PathLike,
    domain: str,
    settings: TransferSettings,
    *,
    color_jitter: float = 0.0,
    progress: bool = True,
) -> ClipData:
    """Decode one domain's train/val/test splits into memory (:func:`~vidlab.data.clips.load_clip_data`).

    Training clips get a random resized crop (no flip: the labels are directions) and, unlike
    the default preset, no colour jitter unless ``color_jitter > 0``: on a 2-core CPU the jitter
    costs twice the rest of the pipeline, and leaving colours alone also keeps the domain gap
    honest (augmentation would hide part of it).
    """
    if domain not in DOMAIN_SPLITS:
        raise ValueError(f"load_domain: domain must be one of {', '.join(DOMAIN_SPLITS)}, got {domain!r}")
    return load_clip_data(data_dir, splits=DOMAIN_SPLITS[domain], num_frames=settings.num_frames,
                          stride=settings.stride, size=settings.clip_size, test_views=settings.test_views,
                          crop_scale=(settings.crop_scale_min, 1.0), color_jitter=color_jitter,
                          workers=settings.decode_workers, progress=progress)


# ----------------------------------------------------------------------------- what TSN cannot see

def _class_index(classes: Sequence[str], name: str) -> int:
    try:
        return list(classes).index(name)
    except ValueError:
        raise KeyError(f"class {name!r} is not one of the dataset's classes: {', '.join(classes)}") from None


def pair_confusion(prob: torch.Tensor, label: torch.Tensor, classes: Sequence[str],
                   pair: tuple[str, str]) -> torch.Tensor:
    """``(2, 2)`` counts for the two classes of ``pair`` when the model must choose between them.

    ``prob``: ``(N, K)`` class scores (e.g. ``evaluate(...)["predictions"]["prob"]``), ``label``:
    ``(N,)``. Only videos of the two classes count; each is assigned to whichever of the two
    classes scores higher (other classes are ignored). Rows: true class, columns: chosen class.
    """
    prob, label = torch.as_tensor(prob), torch.as_tensor(label)
    if prob.ndim != 2 or prob.shape[1] != len(classes) or label.shape != prob.shape[:1]:
        raise ValueError(f"pair_confusion: expected prob (N, {len(classes)}) and label (N,), got "
                         f"{tuple(prob.shape)} and {tuple(label.shape)}")
    a, b = _class_index(classes, pair[0]), _class_index(classes, pair[1])
    out = torch.zeros(2, 2, dtype=torch.long)
    for row, k in enumerate((a, b)):
        mine = label == k
        chose_b = (prob[mine, b] > prob[mine, a]).long()
        out[row, 1] = chose_b.sum()
        out[row, 0] = mine.sum() - chose_b.sum()
    return out


def pair_accuracy(prob: torch.Tensor, label: torch.Tensor, classes: Sequence[str],
                  pairs: Sequence[tuple[str, str]] = DIRECTION_PAIRS) -> dict[str, float]:
    """Two-way accuracy within each pair (see :func:`pair_confusion`): chance is 0.5.

    Returns ``{"a/b": accuracy, ..., "mean": mean over pairs}`` (``nan`` for a pair with no videos).
    """
    out: dict[str, float] = {}
    for a, b in pairs:
        block = pair_confusion(prob, label, classes, (a, b))
        total = int(block.sum())
        out[f"{a}/{b}"] = float(block.trace()) / total if total else float("nan")
    finite = [v for v in out.values() if not math.isnan(v)]
    out["mean"] = sum(finite) / len(finite) if finite else float("nan")
    return out


@torch.no_grad()
def order_sensitivity(model: nn.Module, clips: torch.Tensor) -> float:
    """Largest change in the logits when the clips are played backwards. ``clips``: ``(B, C, T, H, W)``.

    0 (up to rounding) for an order-blind model such as TSN: it gives a video and its reverse
    (``move_left`` played backwards is a ``move_right``) the same scores.
    """
    if clips.ndim != 5:
        raise ValueError(f"order_sensitivity: expected clips (B, C, T, H, W), got {tuple(clips.shape)}")
    was_training = model.training
    model.eval()
    try:
        forward = model(clips)
        backward = model(clips.flip(2))
    finally:
        model.train(was_training)
    return float((forward - backward).abs().max())


# ----------------------------------------------------------------------------- the image model

def image_backbone(name: str = "test_resnet", *, small_input_stem: bool = False) -> nn.Module:
    """A randomly initialised timm 2D ResNet without classifier.

    ``forward_features``: ``(B, 3, H, W)`` -> ``(B, F, h, w)``.

    ``small_input_stem`` replaces the stem max-pool by an identity, as ResNets for 32-px images
    (CIFAR) do: feature maps keep twice the resolution (four times the compute after the stem).
    """
    import timm

    from vidlab.models.lifted import small_input_stem_

    model = timm.create_model(name, pretrained=False, num_classes=0)
    return small_input_stem_(model) if small_input_stem else model


def image_model_of(video_model: nn.Module) -> nn.Module:
    """A standalone copy of the 2D backbone inside a TSN (the "image model": frames in, features out).

    ``video_model.backbone`` must be a 2D network (TSN, not TSM or I3D, whose backbones were changed).
    """
    backbone = getattr(video_model, "backbone", None)
    if backbone is None:
        raise ValueError(f"image_model_of: {type(video_model).__name__} has no .backbone")
    if any(isinstance(m, nn.Conv3d) for m in backbone.modules()):
        raise ValueError("image_model_of: the backbone has 3D convolutions; pass the TSN model, not an I3D")
    from vidlab.models.lifted import TemporalShift

    if any(isinstance(m, TemporalShift) for m in backbone.modules()):
        raise ValueError("image_model_of: the backbone holds temporal shifts; pass the TSN model, not a TSM")
    return copy.deepcopy(backbone).eval()


def save_image_model(image_model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the 2D backbone's ``state_dict`` (tensors only, atomically) where ``backbone_checkpoint=`` can read it."""
    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in image_model.state_dict().items()}
    atomic_torch_save(state, path)
    return path


def save_video_model(model: nn.Module, path: str | os.PathLike, *, backbone: str, classes: Sequence[str],
                     frame_stride: int, small_input_stem: bool = False, meta: dict[str, Any] | None = None,
                     **model_kwargs: Any) -> Path:
    """Save a TSN / TSM / I3D built around a 2D backbone object with :func:`vidlab.models.save_model`,
    recorded as the registry entry of its architecture with ``backbone=`` the timm name (and
    ``small_input_stem``), so ``vl.models.load_model(path)`` rebuilds the same network alone.

    ``model_kwargs`` are the other constructor arguments that differ from the defaults (e.g.
    ``fold_div``, ``drop_rate``); ``num_classes``, ``num_frames`` and ``img_size`` come from the model.
    """
    from vidlab.models import list_models, save_model
    from vidlab.models.lifted import I3D, TSM, TSN

    arch = next((n for cls, n in ((TSM, "tsm"), (TSN, "tsn"), (I3D, "i3d")) if isinstance(model, cls)), None)
    if arch is None:
        raise TypeError(f"save_video_model: expected a TSN, TSM or I3D, got {type(model).__name__}")
    name = f"{arch}_{backbone}" if f"{arch}_{backbone}" in list_models() else f"test_{arch}"
    cfg = model.default_cfg
    kwargs = {"backbone": backbone, "small_input_stem": small_input_stem, "num_classes": model.num_classes,
              "num_frames": cfg["num_frames"], "img_size": cfg["img_size"], **model_kwargs}
    return save_model(model, path, name=name, model_kwargs=kwargs, class_names=list(classes),
                      frame_stride=frame_stride, meta=meta)


@torch.no_grad()
def still_video_gap(image_model: nn.Module, inflated: nn.Module, images: torch.Tensor, num_frames: int = 8) -> float:
    """Largest difference between the 2D model's feature map of an image and the inflated model's
    feature map, at every time step, of a still video made of that image repeated ``num_frames`` times.

    ``images``: ``(B, C, H, W)``; ``image_model.forward_features`` maps it to ``(B, F, h, w)``,
    ``inflated.forward_features`` maps ``(B, C, T, H, W)`` to ``(B, F, T, h, w)``. Both are put
    in eval mode (BatchNorm uses its running statistics). I3D inflation makes this ~0.
    """
    if images.ndim != 4:
        raise ValueError(f"still_video_gap: expected images (B, C, H, W), got {tuple(images.shape)}")
    modes = (image_model.training, inflated.training)
    image_model.eval()
    inflated.eval()
    try:
        flat = image_model.forward_features(images)
        still = images.unsqueeze(2).expand(-1, -1, num_frames, -1, -1).contiguous()
        video = inflated.forward_features(still)
    finally:
        image_model.train(modes[0])
        inflated.train(modes[1])
    if video.shape[2] != num_frames or video.shape[:2] != flat.shape[:2] or video.shape[3:] != flat.shape[2:]:
        raise ValueError(f"still_video_gap: shapes do not line up: 2D {tuple(flat.shape)}, 3D {tuple(video.shape)}")
    return float((video - flat.unsqueeze(2)).abs().max())


# ----------------------------------------------------------------------------- few labels, fixed steps

def train_with_budget(
    model: nn.Module,
    data: ClipData,
    per_class: int,
    *,
    steps: int,
    cfg: TrainConfig,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` on ``per_class`` videos per class of ``data.train`` for ``steps`` optimizer steps, then test.

    The schedule (warmup + cosine from ``cfg``) spans exactly ``steps`` steps of ``batch_size``
    clips whatever the budget, so budgets and methods get the same compute; no validation is
    used (there are too few labels to spare). Returns ``test_top1`` (video level), ``test``
    (the :func:`~vidlab.train.evaluate` dict), ``train_videos``, ``steps``, ``train_seconds``.
    """
    if steps < 1:
        raise ValueError(f"train_with_budget: steps must be >= 1, got {steps}")
    subset = data.with_train_budget(per_class, seed=seed)
    train = repeat_to(subset.train, steps * batch_size, seed=seed)
    loader = cached_loader(train, batch_size=batch_size, shuffle=False, seed=seed, drop_last=True)
    run_cfg = dataclasses.replace(cfg, epochs=1, seed=seed, early_stopping_patience=None)
    device = torch.device(device)
    t0 = time.perf_counter()
    fit(model, loader, None, run_cfg, device=device, progress=progress, num_classes=data.num_classes)
    seconds = time.perf_counter() - t0
    test = evaluate(model, cached_loader(data.test, batch_size=batch_size), device=device,
                    num_classes=data.num_classes, amp=cfg.amp, amp_dtype=cfg.amp_dtype, progress=False)
    return {"test_top1": float(test["top1"]), "test": test, "train_videos": len(subset.train),
            "steps": len(loader), "train_seconds": seconds}


def label_budget_curve(
    methods: dict[str, tuple[Callable[[], nn.Module], TrainConfig]],
    data: ClipData,
    budgets: Sequence[int],
    *,
    steps: int,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Accuracy vs labelled videos per class for several ways to start.

    ``methods`` maps a name to ``(make_model, cfg)``: ``make_model()`` returns a fresh model
    (e.g. a copy of the domain-A model, or a random init). Every (method, budget) pair trains
    with :func:`train_with_budget` on the same videos (same ``seed``). Returns one row per run:
    ``{"method", "labels_per_class", "train_videos", "test_top1", "train_seconds"}``.
    """
    from tqdm.auto import tqdm

    rows = []
    runs = [(name, k) for k in budgets for name in methods]
    for name, k in tqdm(runs, desc="label budgets", disable=not progress):
        make_model, cfg = methods[name]
        result = train_with_budget(make_model(), data, k, steps=steps, cfg=cfg, batch_size=batch_size,
                                   device=device, seed=seed, progress=False)
        rows.append({"method": name, "labels_per_class": int(k), "train_videos": result["train_videos"],
                     "test_top1": result["test_top1"], "train_seconds": result["train_seconds"]})
    return rows
