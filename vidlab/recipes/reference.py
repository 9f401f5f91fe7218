"""Notebook 03's reference classifier: the model notebooks 05-09 attack, compress and deploy.

At this scale the strongest model of notebook 03 is a ViT whose tokens are 4x4-px tubes spanning
every frame of the clip, with a max-pooling head, trained from scratch with notebook 03's
fine-tuning recipe. :func:`train_reference_classifier` builds and trains it (notebook 03 calls it
in its "what matters more at this scale" section and saves the result with
:func:`save_reference_classifier` as ``OUTPUT_DIR/model.pt``). :func:`reference_classifier` is
what later notebooks call: it returns that file, and trains it at the same preset when it is
missing (skipping around in JupyterLab works).

The file is a :func:`vidlab.models.save_model` file: load it with ``vl.models.load_model(path)``;
the model takes normalised clips ``(B, C, T, H, W)`` and returns logits ``(B, num_classes)``.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

REFERENCE_FILE = "model.pt"
REFERENCE_NOTEBOOK = "03_finetuning"
GLOBAL_POOL = "max"
# rough cost of training it, printed before a notebook builds it on demand
_COST = {"smoke": "a few seconds", "cpu": "about 3-5 minutes on 2 CPU cores", "gpu": "a few minutes on one GPU"}


def reference_geometry(preset: str) -> Any:
    """Notebook 02's clip geometry and ViT size for ``preset`` with the reference tokens:
    tubelets spanning all frames, 4x4-px patches (at the ``gpu`` size, where 4x4 px would give
    thousands of tokens, the preset's own patch). A :class:`~vidlab.recipes.pretraining.PretrainSettings`."""
    from vidlab.recipes.pretraining import PRETRAIN_PRESETS

    _check_preset(preset)
    geometry = PRETRAIN_PRESETS[preset]
    patch = 4 if geometry.img_size <= 64 else geometry.patch_size
    return dataclasses.replace(geometry, patch_size=patch, tubelet_size=geometry.num_frames)


def reference_settings(preset: str) -> Any:
    """Notebook 03's fine-tuning recipe (:class:`~vidlab.recipes.finetune.FinetuneSettings`) for
    ``preset`` with the max-pooling head."""
    from vidlab.recipes.finetune import FINETUNE_PRESETS

    _check_preset(preset)
    return dataclasses.replace(FINETUNE_PRESETS[preset], global_pool=GLOBAL_POOL)


def _check_preset(preset: str) -> None:
    from vidlab.recipes.finetune import FINETUNE_PRESETS

    if preset not in FINETUNE_PRESETS:
        raise ValueError(f"reference classifier: preset={preset!r} unknown; choose one of {', '.join(FINETUNE_PRESETS)}")


def load_reference_data(data_dir: str | os.PathLike, preset: str, *, workers: int | None = None,
                        progress: bool = True) -> Any:
    """Train / val / test clips (:class:`~vidlab.data.clips.ClipData`) at the reference
    geometry, with notebook 03's augmentation and test views. Decoded once."""
    from vidlab.recipes import finetune, pretraining

    return finetune.load_data(data_dir, pretraining.clip_geometry(reference_geometry(preset)),
                              reference_settings(preset), workers=workers, progress=progress)


def build_reference_model(preset: str, num_classes: int) -> nn.Module:
    """A freshly initialised reference ViT (registry model, so :func:`~vidlab.models.save_model` can store it)."""
    from vidlab.recipes import pretraining

    # trained from scratch: timm's default for a pooling head (a norm on the pooled feature)
    return pretraining.build_encoder(reference_geometry(preset), num_classes, global_pool=GLOBAL_POOL, fc_norm=True)


def train_reference_classifier(
    data_dir: str | os.PathLike,
    preset: str,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    data: Any = None,
    epochs: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the reference ViT from scratch with notebook 03's recipe at ``preset``.

    ``data`` reuses clips from :func:`load_reference_data`; ``epochs`` overrides the recipe's.
    Returns ``train_and_test``'s dict (``test_top1``, ``history``, ``test``, ``train_seconds``, ...)
    plus ``model`` (trained, eval mode), ``classes``, ``preset``, ``seed`` and ``stride``.
    """
    from vidlab.recipes import finetune
    from vidlab.recipes.supervised import train_and_test

    settings = reference_settings(preset)
    if data is None:
        data = load_reference_data(data_dir, preset, progress=progress)
    torch.manual_seed(seed)
    model = build_reference_model(preset, data.num_classes)
    cfg = finetune.train_config(settings, peft_method=False, seed=seed, epochs=epochs)
    result = train_and_test(model, data, cfg, device=device, batch_size=settings.batch_size, progress=progress)
    model.eval()
    result.update(model=model, classes=list(data.classes), preset=preset, seed=seed,
                  stride=reference_geometry(preset).stride)
    return result


def save_reference_classifier(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save :func:`train_reference_classifier`'s model with :func:`vidlab.models.save_model`
    (atomically), with its class names, clip geometry, preset and test top-1 in ``meta``."""
    from vidlab.models import save_model

    model = result["model"]
    return save_model(
        model, path, class_names=result["classes"], frame_stride=result["stride"],
        meta={"preset": result["preset"], "seed": result["seed"], "test_top1": float(result["test_top1"]),
              "epochs": len(result["history"]), "recipe": "03_finetuning reference (scratch, max head)",
              "train_seconds": float(result["train_seconds"])},
    )


def reference_path(ctx: Any) -> Path:
    """Where notebook 03 saves the reference classifier for a run whose output folder is
    ``ctx.output_dir`` (a sibling folder, as ``python -m vidlab run`` lays them out)."""
    return Path(ctx.output_dir).parent / REFERENCE_NOTEBOOK / REFERENCE_FILE


def _usable(path: Path, preset: str) -> tuple[bool, str]:
    from vidlab.models.saving import read_model_info

    if not path.is_file():
        return False, "missing"
    try:
        info, _ = read_model_info(path)
    except Exception as err:  # an unreadable file is rebuilt, and the reason printed
        return False, f"unreadable ({err})"
    saved = info.meta.get("preset")
    if saved is not None and saved != preset:
        return False, f"built at preset {saved!r}, not {preset!r}"
    return True, "found"


def reference_classifier(ctx: Any, *, epochs: int | None = None, progress: bool = True) -> Path:
    """The ``save_model`` file of notebook 03's reference classifier for this run.

    ``ctx`` is the notebook context of :func:`vidlab.setup` (``output_dir``, ``data_dir``,
    ``preset``, ``seed``, ``device``). Looks for ``ctx.output_dir.parent / "03_finetuning" /
    "model.pt"``; when it is missing (or was built at another preset) it trains the model at
    ``ctx.preset`` on ``ctx.data_dir``, says so, and saves it there. ``epochs`` overrides the
    recipe's (for tests).
    """
    path = reference_path(ctx)
    ok, why = _usable(path, ctx.preset)
    if ok:
        print(f"[vidlab] reference classifier: {path}")
        return path
    settings = reference_settings(ctx.preset)
    print(f"[vidlab] reference classifier {path} {why}: training notebook 03's reference ViT at preset "
          f"{ctx.preset!r} ({epochs or settings.epochs} epochs; {_COST.get(ctx.preset, 'minutes')})")
    t0 = time.perf_counter()
    result = train_reference_classifier(ctx.data_dir, ctx.preset, seed=ctx.seed, device=ctx.device,
                                        epochs=epochs, progress=progress)
    save_reference_classifier(result, path)
    print(f"[vidlab] reference classifier trained in {time.perf_counter() - t0:.0f} s, "
          f"test top-1 {result['test_top1']:.3f} -> {path}")
    return path
