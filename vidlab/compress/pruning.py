"""Pruning: unstructured magnitude pruning (zeros in dense tensors) and structured channel pruning
(smaller dense tensors).

* :func:`magnitude_prune` zeroes the globally smallest weights with ``torch.nn.utils.prune`` and
  makes the zeros permanent. The tensors keep their shape, so dense kernels do the same work:
  latency does not move; only a sparse file format (:func:`sparse_bytes`) gets smaller.
* :func:`prune_channels` removes whole channels (conv filters, hidden units, attention heads)
  with Torch-Pruning (``torch_pruning``), which traces the model's dependency graph so every
  layer that reads a removed channel (BatchNorm, depthwise convs, squeeze-excitation gates,
  residual adds) shrinks with it. It handles the kit's X3D (Conv3d, depthwise, SE, residuals)
  and ViT (timm ``Block``: heads of the fused qkv projection) without model-specific code.

Models take clips ``(B, C, T, H, W)``.
"""
from __future__ import annotations

import io
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_weights(model: nn.Module, *, types: tuple[type[nn.Module], ...] = PRUNABLE,
                     exclude: Iterable[nn.Module] = ()) -> list[tuple[nn.Module, str]]:
    """``(module, "weight")`` for every layer of ``types`` in ``model`` except ``exclude``."""
    skip = {id(m) for m in exclude}
    return [(m, "weight") for m in model.modules() if isinstance(m, types) and id(m) not in skip]


def magnitude_prune(model: nn.Module, amount: float, *, exclude: Iterable[nn.Module] = (),
                    permanent: bool = True) -> nn.Module:
    """Global unstructured L1 pruning: zero the ``amount`` fraction (0-1) of smallest-magnitude
    weights over all prunable layers together (``torch.nn.utils.prune.global_unstructured``).

    ``permanent=True`` folds each mask into its weight (``prune.remove``): the model is a plain
    module again, with zeros in its weights. With ``permanent=False`` the masks stay attached
    (``weight_orig`` * ``weight_mask``), so fine-tuning keeps the pruned weights at zero.
    The model is changed in place and returned.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"magnitude_prune: amount must be in [0, 1), got {amount}")
    params = prunable_weights(model, exclude=exclude)
    if not params:
        raise ValueError(f"magnitude_prune: {type(model).__name__} has no Linear / Conv layers to prune")
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(amount))
    if permanent:
        make_permanent(model)
    return model


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every ``torch.nn.utils.prune`` mask of ``model`` into its tensor (in place)."""
    for module in model.modules():
        for name in [k[: -len("_orig")] for k, _ in list(module.named_parameters(recurse=False)) if k.endswith("_orig")]:
            prune.remove(module, name)
    return model


def sparsity(model: nn.Module, *, exclude: Iterable[nn.Module] = ()) -> float:
    """Fraction of exact zeros among the prunable weights of ``model``."""
    params = prunable_weights(model, exclude=exclude)
    zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in params)
    total = sum(getattr(m, n).numel() for m, n in params)
    return zeros / max(total, 1)


def state_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what a dense checkpoint costs on disk."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def sparse_bytes(model: nn.Module) -> int:
    """Bytes of the state dict with every tensor that has zeros stored sparse: a packed bitmask
    (1 bit per element) plus the non-zero values. Dense tensors without zeros are stored as is.
    The bitmask costs 1/32 of a float32 tensor, so the file shrinks roughly with the density."""
    packed = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point() and value.numel() > 0 and bool((value == 0).any()):
            mask = (value != 0).flatten()
            pad = (-mask.numel()) % 8
            bits = torch.cat([mask, mask.new_zeros(pad)]).view(-1, 8).to(torch.uint8)
            weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
            packed[key] = {"shape": list(value.shape), "mask": (bits * weights).sum(1).to(torch.uint8),
                           "values": value.flatten()[mask].clone()}
        else:
            packed[key] = value
    buf = io.BytesIO()
    torch.save(packed, buf)
    return buf.getbuffer().nbytes


def prune_channels(model: nn.Module, example: torch.Tensor, ratio: float, *,
                   ignored_layers: Iterable[nn.Module] | None = None, p: int = 2) -> nn.Module:
    """Structured pruning: remove the ``ratio`` fraction (0-1) of channels of every prunable layer,
    lowest L``p`` filter norm first, with Torch-Pruning's ``MetaPruner``.

    ``example`` is a batch ``(B, C, T, H, W)`` used to trace the dependency graph. The
    classifier (``model.get_classifier()`` when the model has it) keeps its outputs; pass
    ``ignored_layers`` to protect others. For a timm-``Block`` ViT the heads are pruned
    (``ratio`` of them, whole) together with the MLP hidden units. The model is changed in
    place and returned: a smaller dense model (its registry arguments no longer describe it;
    save it with ``torch.export``).
    """
    import torch_pruning as tp

    if not 0.0 < ratio < 1.0:
        raise ValueError(f"prune_channels: ratio must be in (0, 1), got {ratio}")
    ignored = list(ignored_layers) if ignored_layers is not None else []
    if ignored_layers is None and hasattr(model, "get_classifier"):
        ignored.append(model.get_classifier())
    num_heads = {}
    for module in model.modules():
        attn = getattr(module, "attn", None)
        if attn is not None and hasattr(attn, "qkv") and hasattr(attn, "num_heads"):
            num_heads[attn.qkv] = attn.num_heads
    # a ViT keeps its embedding width (the residual stream, positional embedding and norms); its
    # heads and MLP hidden units go
    if num_heads:
        ignored += [m for m in model.modules() if isinstance(m, nn.Conv3d)]
        ignored += [blk.attn.proj for blk in model.modules() if hasattr(blk, "attn") and hasattr(blk.attn, "proj")]
        ignored += [blk.mlp.fc2 for blk in model.modules() if hasattr(blk, "mlp") and hasattr(blk.mlp, "fc2")]
    was_training = model.training
    model.eval()
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=p), pruning_ratio=float(ratio),
        ignored_layers=ignored, num_heads=num_heads, prune_head_dims=False, prune_num_heads=bool(num_heads),
        head_pruning_ratio=float(ratio),
    )
    pruner.step()
    for qkv, heads in pruner.num_heads.items():
        for module in model.modules():
            attn = getattr(module, "attn", None)
            if attn is not None and getattr(attn, "qkv", None) is qkv:
                attn.num_heads = heads
                attn.head_dim = qkv.out_features // (3 * heads)
                if hasattr(attn, "attn_dim"):
                    attn.attn_dim = heads * attn.head_dim
                if hasattr(attn, "scale"):
                    attn.scale = attn.head_dim ** -0.5
    model.train(was_training)
    return model
