"""Optimizers with sensible weight-decay (and layer-wise learning-rate) groups, and the per-step
schedules: cosine with warmup, or warmup then constant."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

# Parameter-name fragments that never get weight decay (learned embeddings and tokens).
NO_DECAY_NAME_FRAGMENTS: tuple[str, ...] = (
    "pos_embed",
    "pos_emb",
    "cls_token",
    "mask_token",
    "dist_token",
    "reg_token",
    "relative_position_bias_table",
    "rel_pos",
)


def _no_decay_names_from_model(model: nn.Module) -> set[str]:
    """Names a timm-style model lists in ``no_weight_decay()`` (empty when it has none)."""
    fn = getattr(model, "no_weight_decay", None)
    if callable(fn):
        try:
            return set(fn())
        except TypeError:
            return set()
    return set()


def param_groups_weight_decay(
    model: nn.Module,
    weight_decay: float,
    *,
    no_decay_fragments: Iterable[str] = NO_DECAY_NAME_FRAGMENTS,
) -> list[dict]:
    """Split the TRAINABLE parameters into a decayed and an undecayed group.

    No decay on: 1-d parameters (norm weights, biases, scales), names ending in ``bias``,
    names containing one of ``no_decay_fragments`` (position embeddings, tokens), and names
    the model lists in ``no_weight_decay()``. Frozen parameters (``requires_grad=False``) are left out.
    Each group carries a ``"group_name"`` (``"decay"`` / ``"no_decay"``); empty groups are dropped.
    """
    fragments = tuple(no_decay_fragments)
    model_no_decay = _no_decay_names_from_model(model)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = (
            param.ndim <= 1
            or name.endswith("bias")
            or name in model_no_decay
            or any(fragment in name for fragment in fragments)
        )
        (no_decay if skip else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "group_name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "group_name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    *,
    name: str = "adamw",
    lr: float,
    weight_decay: float = 0.05,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """AdamW or SGD over the model's trainable parameters, without decay on norms/biases/1-d/tokens.

    ``name``: ``"adamw"`` | ``"sgd"``. Frozen parameters are not handed to the optimizer, so a
    PEFT-wrapped model only optimises (and only stores state for) what it trains.
    """
    groups = param_groups_weight_decay(model, weight_decay)
    if not groups:
        raise ValueError(
            f"build_optimizer: {type(model).__name__} has no trainable parameters (all requires_grad=False)"
        )
    key = name.lower()
    if key == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
    if key == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    raise ValueError(f"build_optimizer: unknown optimizer name={name!r}; choose 'adamw' or 'sgd'")


def cosine_factor(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based).

    Linear warmup ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then a
    half cosine from 1 down to ``min_lr_ratio`` at ``total_steps``; flat at ``min_lr_ratio`` after.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Per-step ``LambdaLR``: linear warmup then cosine decay (call ``scheduler.step()`` after each optimizer step)."""
    if total_steps < 1:
        raise ValueError(f"cosine_with_warmup: total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"cosine_with_warmup: warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"cosine_with_warmup: min_lr_ratio must be in [0, 1], got {min_lr_ratio}")

    def factor(step: int) -> float:
        return cosine_factor(step, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio)

    return LambdaLR(optimizer, factor)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str = "cosine",
    *,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """The per-step schedule of :class:`~vidlab.train.TrainConfig`'s ``scheduler``: ``"cosine"``
    (:func:`cosine_with_warmup`) or ``"constant"`` (linear warmup, then flat)."""
    if kind == "cosine":
        return cosine_with_warmup(optimizer, warmup_steps=warmup_steps, total_steps=total_steps,
                                  min_lr_ratio=min_lr_ratio)
    if kind == "constant":
        return LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup_steps) if warmup_steps > 0 else 1.0)
    raise ValueError(f"build_scheduler: kind={kind!r}; choose 'cosine' or 'constant'")


HEAD_PREFIXES: tuple[str, ...] = ("head.", "fc_norm.")


def param_groups_layer_decay(
    model: nn.Module,
    weight_decay: float,
    *,
    lr: float,
    backbone_lr_scale: float = 1.0,
    layer_decay: float | None = None,
    head_prefixes: Iterable[str] = HEAD_PREFIXES,
) -> list[dict]:
    """Parameter groups for fine-tuning a pretrained backbone under a fresh head.

    The head (parameters named ``head.*`` / ``fc_norm.*``) trains at ``lr``; the backbone at
    ``lr * backbone_lr_scale``, and with ``layer_decay`` each block further from the head is
    scaled down once more (BEiT / MAE layer-wise decay, computed by timm's
    :func:`timm.optim.param_groups_layer_decay` from the model's ``group_matcher``). No weight
    decay on 1-d parameters and on the model's ``no_weight_decay()`` names. Each group holds its
    ``lr`` (already scaled, so a ``LambdaLR`` schedule keeps the ratios), ``lr_scale`` and
    ``is_head``; frozen parameters are left out.
    """
    from timm.optim import param_groups_layer_decay as timm_layer_decay

    prefixes = tuple(head_prefixes)
    head_ids = {id(p) for name, p in model.named_parameters() if name.startswith(prefixes)}
    groups = timm_layer_decay(model, weight_decay, no_weight_decay_list=tuple(_no_decay_names_from_model(model)),
                              layer_decay=1.0 if layer_decay is None else layer_decay)
    out = []
    for group in groups:
        for is_head in (True, False):
            params = [p for p in group["params"] if (id(p) in head_ids) == is_head]
            if params:
                scale = 1.0 if is_head else backbone_lr_scale * group["lr_scale"]
                out.append({"params": params, "weight_decay": group["weight_decay"], "lr": lr * scale,
                            "lr_scale": scale, "is_head": is_head})
    if not out:
        raise ValueError(f"param_groups_layer_decay: {type(model).__name__} has no trainable parameters")
    return out
