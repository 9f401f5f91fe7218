"""Notebook 05 (adversarial training): settings per preset, the lesson's thresholds, and the few
functions that stitch the lesson together on top of :mod:`vidlab.robust`.

Pixel space throughout. The loaders here yield clips in [0, 1] (the usual augmentation with
the normalisation left out) and every model is a :class:`~vidlab.models.Normalized` wrapper
holding the data pipeline's mean and std. The attack's ``eps``-ball and the [0, 1] box are
then constraints on the very tensor the loader yields, the standard step and the adversarial
steps see the same batches, and the saved models take the same clips as the saved
evaluation clips. (Denormalising normalised batches inside the step would work too, but every
attack would then round-trip through someone else's statistics.)

Layouts: clips ``(C, T, H, W)``, batches ``(B, C, T, H, W)``, all float in [0, 1].
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from vidlab.data.cache import CachedClipDataset, DecodedVideos, cached_loader
from vidlab.data.clips import ClipData
from vidlab.data.transforms import DEFAULT_MEAN, DEFAULT_STD, eval_transform, train_transform
from vidlab.recipes.lessons import Lesson
from vidlab.robust import attacks, corruptions, evaluation, training
from vidlab.train.engine import History, TrainConfig, fit

__all__ = [
    "AdversarialSettings",
    "PRESETS",
    "LESSONS",
    "METHODS",
    "load_data",
    "eval_set",
    "per_class_indices",
    "train_eval_set",
    "RobustTracker",
    "build_model",
    "step_for",
    "train_method",
    "attack_table",
    "sparse_success",
    "corruption_table",
    "save_models",
    "save_eval_clips",
]

NO_NORMALISATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # mean, std: the transforms stop at [0, 1] pixels


@dataclass(frozen=True)
class AdversarialSettings:
    """05_adversarial_training settings (one per preset)."""

    model: str = "cnn3d_small"  # registry name of the video model
    model_widths: tuple[int, ...] = (16, 32, 64, 128)  # channels of its stages
    num_frames: int = 8  # frames per clip
    stride: int = 4  # native frames between sampled frames (8 x 4 spans a 32-frame video)
    clip_size: int = 32  # crop size fed to the model
    crop_scale_min: float = 0.8  # random resized crop keeps at least this fraction of the area
    batch_size: int = 32
    epochs: int = 8  # standard training from scratch
    adv_epochs: int = 4  # every adversarial method: this many epochs, starting from the standard model
    lr: float = 3e-3  # AdamW peak learning rate (warmup + cosine)
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    eps_levels: float = 4.0  # L-inf budget in 8-bit levels: eps = eps_levels / 255
    train_pgd_steps: int = 7  # PGD steps inside PGD-AT (step 2.5 * eps / steps)
    ramp_epochs: float = 1.0  # adversarial runs grow eps linearly from 0 over this many epochs
    eval_pgd_steps: int = 20  # evaluation PGD: more steps ...
    eval_restarts: int = 2  # ... and restarts than training used
    eval_per_class: int = 16  # evaluation clips per class (test split, centre clip)
    sweep_levels: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 64.0)  # eps (8-bit levels) for accuracy vs eps
    sweep_pgd_steps: int = 10  # PGD steps of the eps sweep and the other checks
    sweep_per_class: int = 6  # clips per class in the sweeps and checks (a subset of the evaluation clips)
    track_per_class: int = 4  # clips per class whose FGSM / PGD accuracy is followed after every epoch
    track_pgd_steps: int = 5  # PGD steps of that per-epoch check
    check_steps: tuple[int, ...] = (1, 5, 20)  # PGD steps in the "more steps never help" check
    sparse_k: tuple[int, ...] = (1, 2, 4, 8)  # frames the frame-sparse attacker may change
    sparse_eps_levels: float = 16.0  # its L-inf budget on those frames (8-bit levels)
    overfit_alpha_factor: float = 2.0  # the "too large step" FGSM run: alpha = factor * eps, random start
    corruption_h264_crf: tuple[int, ...] = (28, 40)  # H.264 re-encoding qualities (x264 crf; 51 is worst)
    corruption_noise_sigma: float = 0.05
    corruption_blur_sigma: float = 1.0
    corruption_drop: float = 0.5  # probability that a frame is lost
    corruption_jitter: int = 1  # frames a frame may move in time
    train_per_class: int | None = None  # limit the training videos per class (None: all)
    decode_workers: int = 2

    @property
    def eps(self) -> float:
        return self.eps_levels / 255

    @property
    def sparse_eps(self) -> float:
        return self.sparse_eps_levels / 255


PRESETS: dict[str, AdversarialSettings] = {
    "smoke": AdversarialSettings(model_widths=(4, 8, 8, 16), stride=2, batch_size=12, epochs=1, adv_epochs=1,
                                 warmup_epochs=0.0,
                                 train_pgd_steps=2, ramp_epochs=0.5, eval_pgd_steps=3, eval_restarts=1,
                                 eval_per_class=2, sweep_levels=(2.0, 64.0), sweep_pgd_steps=2, sweep_per_class=1,
                                 check_steps=(1, 3), sparse_k=(1, 8), corruption_h264_crf=(40,), track_per_class=1,
                                 track_pgd_steps=2, decode_workers=1),
    "cpu": AdversarialSettings(),
    "gpu": AdversarialSettings(model_widths=(32, 64, 128, 256), num_frames=16, stride=2, clip_size=64, epochs=30, adv_epochs=15,
                               batch_size=64, eval_per_class=50, sweep_per_class=25, eval_restarts=5,
                               sparse_k=(1, 2, 4, 8, 16), decode_workers=8),
}

LESSONS = (
    Lesson("clean_top1_standard", ">=", 0.85, why="the standard model learns the motion classes"),
    Lesson("pgd_top1_standard", "<=", 0.10, why="a few 8-bit levels of PGD break the standard model"),
    Lesson("pgd_top1_pgd_at", ">=", 0.30, why="PGD adversarial training buys robust accuracy"),
    Lesson("pgd_at_gain_ratio", ">=", 3.0, why="PGD-AT's robust accuracy is at least 3x the standard model's"),
    Lesson("fgsm_rs_vs_pgd_at_robust", ">=", 0.90, why="fast FGSM-RS training gets most of PGD-AT's robustness"),
    Lesson("fgsm_rs_vs_pgd_at_time", "<=", 0.40, why="... in a fraction of its training time"),
)

# name -> (label in tables, how it trains)
METHODS: dict[str, str] = {
    "standard": "standard training (clean clips)",
    "pgd_at": "PGD-AT (Madry et al.): PGD with random start",
    "fgsm_rs": "FGSM-RS (Wong et al.): random start, step 1.25 eps",
    "fgsm_zero": "FGSM from the clean clip, step eps",
    "fgsm_big_step": "FGSM with random start, too large a step",
}


def load_data(data_dir: str | os.PathLike, settings: AdversarialSettings, *, workers: int | None = None,
              progress: bool = True) -> ClipData:
    """Train / val / test clip datasets yielding clips in [0, 1] ``(C, T, H, W)``, decoded once.

    Training: a random clip, random resized crop keeping ``crop_scale_min``-100 % of the area, no
    flip (labels are directions), no colour jitter. Validation and test: the centre clip.
    """
    s = settings
    workers = s.decode_workers if workers is None else workers
    cache = s.clip_size * 5 // 4
    decoded = {split: DecodedVideos(data_dir, split, size=cache, workers=workers, progress=progress, labeled_only=True,
                                    max_per_class=s.train_per_class if split == "train" else None)
               for split in ("train", "val", "test")}
    mean, std = NO_NORMALISATION
    common = {"num_frames": s.num_frames, "stride": s.stride}
    augment = train_transform(size=s.clip_size, scale=(s.crop_scale_min, 1.0), hflip=False, color_jitter=0.0,
                              mean=mean, std=std)
    centre = eval_transform(size=s.clip_size, resize=s.clip_size, mean=mean, std=std)
    return ClipData(
        train=CachedClipDataset(decoded["train"], sampler="random", transform=augment, **common),
        val=CachedClipDataset(decoded["val"], sampler="center", transform=centre, **common),
        test=CachedClipDataset(decoded["test"], sampler="center", transform=centre, **common),
        classes=decoded["train"].classes,
    )


def eval_set(dataset: CachedClipDataset, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` clips of each class: ``clips`` ``(N, C, T, H, W)`` in [0, 1], ``labels`` ``(N,)``."""
    chosen = per_class_indices(torch.tensor(dataset.labels), per_class)
    items = [dataset[int(i)] for i in chosen]
    return torch.stack([it["video"] for it in items]), torch.tensor([it["label"] for it in items])


def per_class_indices(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices of the first ``per_class`` items of each class in ``labels`` ``(N,)`` (a balanced subset)."""
    taken: dict[int, int] = {}
    chosen = []
    for i, label in enumerate(labels.tolist()):
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            chosen.append(i)
    return torch.tensor(chosen, dtype=torch.long)


def train_eval_set(data: ClipData, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre clips of ``per_class`` training videos per class, as the test clips are made (no
    augmentation): to compare accuracy on seen and unseen videos."""
    centre = CachedClipDataset(data.train.videos, sampler=data.val.sampler, transform=data.val.transform,
                               indices=data.train.indices)
    return eval_set(centre, per_class)


def build_model(settings: AdversarialSettings, num_classes: int, *, seed: int = 0) -> nn.Module:
    """A fresh ``settings.model`` inside :class:`~vidlab.models.Normalized`: it takes clips in [0, 1]."""
    from vidlab.models import Normalized, create_model

    torch.manual_seed(seed)
    inner = create_model(settings.model, num_classes=num_classes, widths=tuple(settings.model_widths),
                         num_frames=settings.num_frames, img_size=settings.clip_size)
    return Normalized(inner, DEFAULT_MEAN, DEFAULT_STD)


def step_for(method: str, settings: AdversarialSettings, steps_per_epoch: int) -> Callable | None:
    """The engine ``step_fn`` of a training method (``None``: the default clean step)."""
    ramp = round(settings.ramp_epochs * steps_per_epoch)
    eps = settings.eps
    if method == "standard":
        return None
    if method == "pgd_at":
        return training.pgd_at(eps, steps=settings.train_pgd_steps, ramp_steps=ramp)
    if method == "fgsm_rs":
        return training.fgsm_rs(eps, ramp_steps=ramp)
    if method == "fgsm_zero":
        return training.fgsm_at(eps, ramp_steps=ramp)
    if method == "fgsm_big_step":
        return training.FGSMTrainingStep(eps=eps, ramp_steps=ramp, alpha_factor=settings.overfit_alpha_factor,
                                         random_start=True)
    raise ValueError(f"unknown training method {method!r}; choose one of {', '.join(METHODS)}")


class RobustTracker:
    """An ``on_epoch_end`` callback for :func:`vidlab.train.fit`: clean, FGSM and PGD accuracy of
    ``model`` on a few clips ``(N, C, T, H, W)`` after every epoch (lists ``clean``, ``fgsm``,
    ``pgd``). It runs outside the timed training epoch."""

    def __init__(self, model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, *, eps: float,
                 pgd_steps: int) -> None:
        self.model, self.clips, self.labels = model, clips, labels
        self.eps, self.pgd_steps = eps, pgd_steps
        self.clean: list[float] = []
        self.fgsm: list[float] = []
        self.pgd: list[float] = []

    def __call__(self, epoch: int, history: History) -> None:
        was_training = self.model.training
        self.model.eval()
        fg = lambda m, x, y: attacks.fgsm(m, x, y, eps=self.eps)  # noqa: E731
        pg = lambda m, x, y: attacks.pgd(m, x, y, eps=self.eps, steps=self.pgd_steps)  # noqa: E731
        for name, attack in (("fgsm", fg), ("pgd", pg)):
            adv = evaluation.attack_all(self.model, self.clips, self.labels, attack)
            getattr(self, name).append(evaluation.accuracy(self.model, adv, self.labels))
        self.clean.append(evaluation.accuracy(self.model, self.clips, self.labels))
        self.model.train(was_training)

    def as_dict(self) -> dict[str, list[float]]:
        return {"clean": list(self.clean), "fgsm": list(self.fgsm), "pgd": list(self.pgd)}


def train_method(method: str, data: ClipData, settings: AdversarialSettings, *, device: torch.device | str = "cpu",
                 seed: int = 0, progress: bool = True, init: nn.Module | None = None, epochs: int | None = None,
                 track: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
    """Train a model with ``method`` (a key of :data:`METHODS`) for ``epochs`` (default ``settings.epochs``).

    Returns ``model`` (eval mode, takes [0, 1] clips), ``history``, ``seconds`` (training wall
    time: the epochs without validation or tracking) and ``step`` (the step function, ``None``
    for standard). With ``track=(clips, labels)`` a :class:`RobustTracker` measures clean / FGSM /
    PGD accuracy on those clips after every epoch (``"track"`` in the result). ``init``: start
    from a copy of this model's weights (e.g. the standard model) instead of a fresh model.
    """
    s = settings
    model = build_model(s, data.num_classes, seed=seed)
    if init is not None:
        model.load_state_dict(init.state_dict())
    loader = cached_loader(data.train, batch_size=s.batch_size, shuffle=True, seed=seed, drop_last=True)
    val_loader = cached_loader(data.val, batch_size=2 * s.batch_size)
    step = step_for(method, s, len(loader))
    cfg = TrainConfig(epochs=epochs or s.epochs, lr=s.lr, weight_decay=s.weight_decay, warmup_epochs=s.warmup_epochs, seed=seed)
    device = torch.device(device)
    tracker = None
    if track is not None:
        tracker = RobustTracker(model, track[0].to(device), track[1].to(device), eps=s.eps, pgd_steps=s.track_pgd_steps)
    history = fit(model, loader, val_loader, cfg, device=device, step_fn=step, progress=progress,
                  num_classes=data.num_classes, on_epoch_end=tracker)
    return {"model": model.eval(), "history": history, "seconds": float(sum(history.epoch_seconds)), "step": step,
            "track": tracker.as_dict() if tracker is not None else None}


def _pgd(settings: AdversarialSettings, **overrides: Any) -> evaluation.Attack:
    kwargs = {"eps": settings.eps, "steps": settings.eval_pgd_steps, "restarts": settings.eval_restarts, **overrides}
    return lambda model, x, y: attacks.pgd(model, x, y, **kwargs)


def attack_table(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, settings: AdversarialSettings, *,
                 batch_size: int = 64, progress: bool = False) -> dict[str, Any]:
    """Clean, FGSM and evaluation-PGD accuracy of ``model`` at ``settings.eps``.

    Returns ``{"clean", "fgsm", "pgd"}`` accuracies and ``"adv_fgsm"`` / ``"adv_pgd"``: the
    adversarial clips ``(N, C, T, H, W)`` (reused by the transfer check and the pictures).
    """
    model.eval()
    fgsm = lambda m, x, y: attacks.fgsm(m, x, y, eps=settings.eps)  # noqa: E731
    adv_fgsm = evaluation.attack_all(model, clips, labels, fgsm, batch_size=batch_size)
    adv_pgd = evaluation.attack_all(model, clips, labels, _pgd(settings), batch_size=batch_size, progress=progress,
                                    desc="PGD")
    return {
        "clean": evaluation.accuracy(model, clips, labels, batch_size=batch_size),
        "fgsm": evaluation.accuracy(model, adv_fgsm, labels, batch_size=batch_size),
        "pgd": evaluation.accuracy(model, adv_pgd, labels, batch_size=batch_size),
        "adv_fgsm": adv_fgsm,
        "adv_pgd": adv_pgd,
    }


def sparse_success(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, settings: AdversarialSettings, *,
                   select: str = "gradient", seed: int = 0, batch_size: int = 64) -> dict[int, float]:
    """For each ``k`` in ``settings.sparse_k``: the fraction of correctly classified clips that
    PGD on only ``k`` frames (``select`` = ``"gradient"`` or ``"random"``) makes misclassified."""
    model.eval()
    correct = evaluation.predict(model, clips, batch_size=batch_size) == labels
    x, y = clips[correct], labels[correct]
    if len(x) == 0:
        return {k: float("nan") for k in settings.sparse_k}
    out = {}
    for k in settings.sparse_k:
        g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
        attack = lambda m, a, b: attacks.frame_sparse_attack(  # noqa: E731
            m, a, b, k=k, eps=settings.sparse_eps, select=select, steps=settings.sweep_pgd_steps, generator=g)[0]
        adv = evaluation.attack_all(model, x, y, attack, batch_size=batch_size)
        out[k] = 1.0 - evaluation.accuracy(model, adv, y, batch_size=batch_size)
    return out


def corruption_suite(settings: AdversarialSettings) -> dict[str, dict[str, Any]]:
    """Corruption name -> ``(function name, keyword arguments)`` for :func:`vidlab.robust.corrupt`."""
    s = settings
    suite = {
        "gaussian_noise": {"name": "gaussian_noise", "sigma": s.corruption_noise_sigma},
        "blur": {"name": "blur", "sigma": s.corruption_blur_sigma},
        "frame_drop": {"name": "frame_drop", "drop": s.corruption_drop},
        "temporal_jitter": {"name": "temporal_jitter", "max_shift": s.corruption_jitter},
    }
    for crf in s.corruption_h264_crf:
        suite[f"h264_crf{crf}"] = {"name": "h264", "crf": crf}
    return suite


def corruption_table(models: dict[str, nn.Module], clips: torch.Tensor, labels: torch.Tensor,
                     settings: AdversarialSettings, *, seed: int = 0, batch_size: int = 64,
                     progress: bool = False) -> dict[str, dict[str, float]]:
    """Top-1 of each model on the clean clips and on each corruption: ``{corruption: {model: top1}}``.
    Every model sees the same corrupted clips (one seeded draw per corruption)."""
    from tqdm.auto import tqdm

    table = {"clean": {name: evaluation.accuracy(m.eval(), clips, labels, batch_size=batch_size)
                       for name, m in models.items()}}
    for corruption, spec in tqdm(corruption_suite(settings).items(), desc="corruptions", disable=not progress,
                                 leave=False):
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        bad = corruptions.corrupt(clips, spec["name"], seed=seed, **kwargs)
        table[corruption] = {name: evaluation.accuracy(m, bad, labels, batch_size=batch_size) for name, m in models.items()}
    return table


def save_models(models: dict[str, nn.Module], out_dir: str | os.PathLike, settings: AdversarialSettings,
                classes: list[str], *, meta: dict[str, dict[str, Any]] | None = None) -> dict[str, Path]:
    """Save each :class:`~vidlab.models.Normalized`-wrapped model as ``out_dir/<name>.pt`` with
    :func:`vidlab.models.save_model` (the inner network plus its mean / std).
    :func:`vidlab.robust.load_pixel_model` gives back a model that takes [0, 1] clips."""
    from vidlab.models import save_model

    paths = {}
    for name, model in models.items():
        inner = model.model
        paths[name] = save_model(
            inner, Path(out_dir) / f"{name}.pt", class_names=classes,
            mean=model.mean.flatten().tolist(), std=model.std.flatten().tolist(),
            num_frames=settings.num_frames, img_size=settings.clip_size, frame_stride=settings.stride,
            meta={"method": name, "eps": settings.eps, **((meta or {}).get(name, {}))},
        )
    return paths


def save_eval_clips(clips: torch.Tensor, labels: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write ``{"clips": (N, C, T, H, W) float in [0, 1], "labels": (N,)}`` atomically (weights-only loadable)."""
    from vidlab.utils import atomic_torch_save

    if clips.min() < 0 or clips.max() > 1:
        raise ValueError("save_eval_clips: clips must be pixels in [0, 1]")
    return atomic_torch_save({"clips": clips.detach().cpu().contiguous(), "labels": labels.detach().cpu().long()}, path)
