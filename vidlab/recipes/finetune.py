"""Fine-tuning recipes for notebook 03: full fine-tuning, a linear probe, partial fine-tuning,
BitFit, LoRA and adapters on the same backbone, each with one call.

The backbone is the self-supervised encoder of notebook 02 (a :class:`~vidlab.models.VideoViT`
saved with :func:`vidlab.models.save_model`), or the same architecture from random
initialisation ("scratch"), so every comparison changes exactly one thing.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from vidlab.data.clips import ClipData, load_clip_data
from vidlab.models import create_model
from vidlab.models.saving import read_model_info
from vidlab.recipes.lessons import Lesson
from vidlab.recipes.supervised import train_and_test
from vidlab.train import peft
from vidlab.train.engine import TrainConfig
from vidlab.train.memory import training_memory


@dataclass(frozen=True)
class FinetuneSettings:
    """03_finetuning."""

    epochs: int = 12  # full fine-tuning (early stopping may end it sooner)
    peft_epochs: int = 8  # linear probe, partial, BitFit, LoRA, adapters
    lr: float = 1e-3  # full fine-tuning and scratch
    peft_lr: float = 3e-3  # the few trainable parameters of PEFT tolerate a larger step
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    batch_size: int = 32
    color_jitter: float = 0.2  # training-clip colour jitter (0 turns it off; it costs CPU time)
    patience: int = 4  # early stopping on validation top-1
    lora_rank: int = 8
    adapter_bottleneck: int = 32
    freeze_blocks: int = 2  # partial fine-tuning: freeze the patch embedding and this many blocks
    label_budgets: tuple[int, ...] = (5, 20)  # labelled videos per class; "all" is added
    budget_epochs: int = 4
    budget_steps: int = 100  # optimizer steps of each label-budget run, whatever the budget
    test_views: int = 3
    decode_workers: int = 2
    crop_scale_min: float = 0.8  # training crops keep this much of the frame or more (small actors)
    # Token pooling of the head: "avg" (VideoMAE's mean) or "max". Max pooling helps the model from
    # scratch far more than the pretrained one, so with it the pretraining gain disappears (notebook 03).
    global_pool: str = "avg"


FINETUNE_PRESETS = {
    "smoke": FinetuneSettings(epochs=2, peft_epochs=1, batch_size=8, patience=2, label_budgets=(1,), budget_epochs=1,
                              budget_steps=2, warmup_epochs=0.5),
    # sized for a few minutes on 2 CPU cores. Colour jitter off: on a 2-core CPU it costs about as much
    # as the model step, and the time saved buys more epochs. PEFT methods score at 2 epochs as at 3.
    # 15 full epochs: at 10 both starts are still climbing and seeds decide the order.
    "cpu": FinetuneSettings(epochs=15, peft_epochs=2, patience=4, label_budgets=(5,), budget_steps=60, color_jitter=0.0),
    "gpu": FinetuneSettings(epochs=30, peft_epochs=20, batch_size=64, label_budgets=(5, 20, 50), budget_epochs=20, budget_steps=600, test_views=5, decode_workers=8),
}

# What notebook 03's run must show (checked by ``python -m vidlab run --check``)
LESSONS = (
    Lesson("test_top1", ">=", 0.78, presets=("cpu",), why="fine-tuning notebook 02's encoder gives a usable classifier"),
    Lesson("test_top1", ">", "scratch_top1", presets=("cpu",), why="the pretrained start beats scratch with the same recipe"),
    Lesson("geometry_top1", ">=", 0.90, presets=("cpu",),
           why="at this scale a 4x4-px x 8-frame max-pooled ViT from scratch matters more than pretraining"),
)


def encoder_geometry(path: str | os.PathLike) -> dict[str, int]:
    """The clips a saved encoder (a :func:`vidlab.models.save_model` file) expects:
    ``num_frames``, ``img_size``, ``frame_stride``."""
    info, _ = read_model_info(path)
    return {"num_frames": info.num_frames, "img_size": info.img_size, "frame_stride": info.frame_stride}


def load_data(data_dir: str | os.PathLike, geometry: dict[str, int], settings: FinetuneSettings, *,
              workers: int | None = None, progress: bool = True) -> ClipData:
    """Train / val / test clips at the encoder's ``geometry`` (``num_frames``, ``img_size``,
    ``frame_stride``, as :func:`encoder_geometry` returns) with the recipe's augmentation and test
    views. Clips ``(C, T, H, W)``; test items ``(V, C, T, H, W)``. Decoded once; ``workers``
    defaults to ``settings.decode_workers``."""
    return load_clip_data(data_dir, num_frames=geometry["num_frames"], stride=geometry.get("frame_stride", 2),
                          size=geometry["img_size"], test_views=settings.test_views,
                          color_jitter=settings.color_jitter, crop_scale=(settings.crop_scale_min, 1.0),
                          workers=settings.decode_workers if workers is None else workers, progress=progress)


def build_backbone(encoder_path: str | os.PathLike, num_classes: int, *, pretrained: bool = True,
                   **model_kwargs: Any) -> nn.Module:
    """The encoder's architecture with a fresh ``num_classes`` head: its pretrained weights
    (``pretrained=True``) or a random initialisation of the very same model (scratch).
    ``model_kwargs`` change what the weights do not fix, such as ``global_pool``."""
    info, state = read_model_info(encoder_path)
    model = create_model(info.name, **{**info.kwargs, "num_classes": num_classes, **model_kwargs})
    if pretrained:
        weights = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not k.startswith("head.")]
        if missing or unexpected:
            raise ValueError(f"{encoder_path} does not fit {info.name} with {model_kwargs}: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def _full(model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    trainable, total = peft.trainable_parameters(model)
    return model, {"method": "full", "trainable": trainable, "total": total}


def methods(settings: FinetuneSettings) -> dict[str, Callable[[nn.Module], tuple[nn.Module, dict[str, Any]]]]:
    """Name -> a function that turns a pretrained model into that fine-tuning method."""
    return {
        "full": _full,
        "linear_probe": peft.apply_linear_probe,
        "partial": lambda m: peft.apply_partial_finetune(m, freeze_stages=settings.freeze_blocks),
        "bitfit": peft.apply_bitfit,
        "lora": lambda m: peft.apply_lora(m, rank=settings.lora_rank, alpha=2 * settings.lora_rank),
        "adapters": lambda m: peft.apply_adapters(m, bottleneck=settings.adapter_bottleneck),
    }


def train_config(settings: FinetuneSettings, *, peft_method: bool, seed: int, epochs: int | None = None) -> TrainConfig:
    """The one recipe every run shares (AdamW, warmup + cosine, label smoothing, clipping, early stopping)."""
    return TrainConfig(
        epochs=epochs or (settings.peft_epochs if peft_method else settings.epochs),
        lr=settings.peft_lr if peft_method else settings.lr,
        weight_decay=settings.weight_decay,
        warmup_epochs=settings.warmup_epochs,
        label_smoothing=settings.label_smoothing,
        clip_grad_norm=1.0,
        early_stopping_patience=settings.patience,
        seed=seed,
    )


def run_method(
    method: str,
    encoder_path: str | os.PathLike,
    data: ClipData,
    settings: FinetuneSettings,
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    pretrained: bool = True,
    epochs: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune with one method; returns ``train_and_test``'s dict plus ``method``,
    ``memory`` (training-step memory parts in MiB, see :mod:`vidlab.train.memory`) and ``model``."""
    torch.manual_seed(seed)
    model = build_backbone(encoder_path, data.num_classes, pretrained=pretrained, global_pool=settings.global_pool)
    model, summary = methods(settings)[method](model)
    model.to(device)
    probe = data.train[0]["video"].unsqueeze(0).expand(settings.batch_size, -1, -1, -1, -1).contiguous().to(device)
    memory = training_memory(model, probe)
    cfg = train_config(settings, peft_method=method != "full", seed=seed, epochs=epochs)
    result = train_and_test(model, data, cfg, device=device, batch_size=settings.batch_size, progress=progress)
    result.update(method=method, memory=memory, model=model, summary=summary)
    return result


def compare_methods(
    encoder_path: str | os.PathLike,
    data: ClipData,
    settings: FinetuneSettings,
    *,
    names: tuple[str, ...] = ("full", "linear_probe", "partial", "bitfit", "lora", "adapters"),
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
    done: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per method: trainable / total parameters, training memory (MiB), seconds, test top-1.
    ``done`` supplies runs already made (e.g. the full fine-tune) instead of repeating them."""
    rows = []
    for name in names:
        res = (done or {}).get(name) or run_method(name, encoder_path, data, settings, device=device, seed=seed, progress=progress)
        rows.append({
            "method": name,
            "trainable_params": res["trainable_params"],
            "trainable_%": 100 * res["trainable_params"] / res["total_params"],
            "memory_mib": res["memory"]["total"],
            "train_seconds": res["train_seconds"],
            "epochs": len(res["history"]),
            "test_top1": res["test_top1"],
        })
    return rows


def label_efficiency(
    encoder_path: str | os.PathLike,
    data: ClipData,
    settings: FinetuneSettings,
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Full fine-tuning from the pretrained encoder and from scratch at each label budget
    (videos per class), same recipe and the same number of optimizer steps
    (``settings.budget_steps``, the small subsets are repeated); one row per (budget, init)."""
    rows = []
    per_epoch = settings.budget_steps * settings.batch_size // settings.budget_epochs
    for budget in settings.label_budgets:
        subset = data.with_train_budget(budget, seed=seed, repeat_to=per_epoch)
        for pretrained in (True, False):
            t0 = time.perf_counter()
            res = run_method("full", encoder_path, subset, settings, device=device, seed=seed, pretrained=pretrained,
                             epochs=settings.budget_epochs, progress=progress)
            rows.append({"labels_per_class": budget, "init": "pretrained" if pretrained else "scratch",
                         "test_top1": res["test_top1"], "seconds": time.perf_counter() - t0})
    return rows
