"""Parameter and multiply-accumulate (MAC) counts.

``count_macs`` runs one forward pass under ``torch.utils.flop_counter.FlopCounterMode`` and
returns FLOPs / 2. On the default ``device="meta"`` no arithmetic happens, so counting even
X3D-L at 16x312x312 is instant: build the model with ``with torch.device("meta"):`` or let
``count_macs`` move a copy there. Counted ops are torch's (convolutions, matmuls, attention);
element-wise ops, normalisation and pooling are not, like the fvcore counts papers report.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "count_macs"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements), optionally only those with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _without_norm_layers(module: nn.Module) -> nn.Module:
    """Replace BatchNorm / GroupNorm / LayerNorm children with Identity (in place)."""
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    for name, child in module.named_children():
        if isinstance(child, norm_types):
            setattr(module, name, nn.Identity())
        else:
            _without_norm_layers(child)
    return module


def count_macs(model: nn.Module, input_shape: Sequence[int], device: str | torch.device = "meta") -> int:
    """MACs of one eval-mode forward pass on an input of ``input_shape`` ``(B, C, T, H, W)``.

    With ``device="meta"`` (default) the count runs on a deep copy moved to the meta device, in
    which normalisation layers are replaced by Identity (torch does not count them, and they are
    slow on meta); the original model is untouched. Any other device runs a real forward there.
    """
    device = torch.device(device)
    if len(input_shape) != 5:
        raise ValueError(f"input_shape must be (B, C, T, H, W), got {tuple(input_shape)}")
    if device.type == "meta":
        # A meta copy; normalisation layers (not counted, and slow on meta) become Identity.
        model = _without_norm_layers(copy.deepcopy(model).to(device))
    else:
        first = next(model.parameters(), None)
        if first is not None and first.device != device:
            model = copy.deepcopy(model).to(device)
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(tuple(input_shape), device=device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
