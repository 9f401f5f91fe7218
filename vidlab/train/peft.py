"""Parameter-efficient fine-tuning: linear probe, partial fine-tuning, BitFit, LoRA, adapters.

Every ``apply_*`` function changes the model in place, sets ``requires_grad`` so that only the
intended parameters train, and returns ``(model, summary)`` where ``summary`` is a dict with
``method``, ``trainable``, ``total`` and ``fraction`` (plus method details). The classifier
(``model.get_classifier()`` / ``model.head`` / ``model.fc`` / ``model.classifier``) always stays
trainable. Build the optimizer AFTER applying (``build_optimizer`` only takes trainable params).

Transformer models are timm-style: ``patch_embed``, ``blocks`` (timm ``Block`` with linear
layers ``attn.qkv``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``), ``head``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "Adapter",
    "AdapterWrapped",
    "LoRALinear",
    "apply_adapters",
    "apply_bitfit",
    "apply_linear_probe",
    "apply_lora",
    "apply_partial_finetune",
    "describe",
    "find_head",
    "find_stages",
    "merge_lora",
    "trainable_parameters",
]


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts (shared parameters counted once)."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def describe(model: nn.Module) -> str:
    """Human-readable summary: overall trainable share, then one line per top-level child."""
    trainable, total = trainable_parameters(model)
    lines = [f"{type(model).__name__}: {trainable:,} / {total:,} parameters trainable ({100 * trainable / max(total, 1):.2f}%)"]
    own = [(n, p) for n, p in model.named_parameters(recurse=False)]
    if own:
        t = sum(p.numel() for _, p in own if p.requires_grad)
        lines.append(f"  {'(own)':<20} {t:>12,} / {sum(p.numel() for _, p in own):>12,}  {', '.join(n for n, _ in own)}")
    for name, child in model.named_children():
        t, n = trainable_parameters(child)
        if n:
            lines.append(f"  {name:<20} {t:>12,} / {n:>12,}")
    return "\n".join(lines)


def _summary(model: nn.Module, method: str, **details: Any) -> dict[str, Any]:
    trainable, total = trainable_parameters(model)
    return {"method": method, "trainable": trainable, "total": total, "fraction": trainable / max(total, 1), **details}


def find_head(model: nn.Module) -> nn.Module:
    """The classifier module: ``get_classifier()`` (timm), else ``head`` / ``fc`` / ``classifier``."""
    get = getattr(model, "get_classifier", None)
    if callable(get):
        head = get()
        if isinstance(head, nn.Module):
            return head
    for name in ("head", "fc", "classifier"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    raise ValueError(
        f"{type(model).__name__} has no classifier: expected get_classifier(), .head, .fc or .classifier"
    )


def _set_trainable(modules_or_params: Iterable[nn.Module | nn.Parameter], flag: bool = True) -> None:
    for item in modules_or_params:
        params = item.parameters() if isinstance(item, nn.Module) else [item]
        for p in params:
            p.requires_grad_(flag)


def _freeze_all_but_head(model: nn.Module) -> nn.Module:
    model.requires_grad_(False)
    head = find_head(model)
    head.requires_grad_(True)
    return head


def apply_linear_probe(model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """Freeze everything except the classifier head."""
    _freeze_all_but_head(model)
    return model, _summary(model, "linear_probe")


_WRAPPER_NAMES = ("backbone", "encoder", "trunk", "model")


def _stages_of(module: nn.Module) -> list[nn.Module] | None:
    for name in ("blocks", "stages"):
        container = getattr(module, name, None)
        if isinstance(container, (nn.ModuleList, nn.Sequential)) and len(container) > 0:
            return list(container)
    layers = []
    while isinstance(getattr(module, f"layer{len(layers) + 1}", None), nn.Module):
        layers.append(getattr(module, f"layer{len(layers) + 1}"))
    return layers or None


def find_stages(model: nn.Module) -> list[nn.Module]:
    """The ordered list of stages/blocks: ``.blocks`` (ViT), ``.stages`` (X3D), or ``.layer1..layerN``
    (ResNet), on the model itself or on a wrapped ``backbone`` / ``encoder`` / ``trunk`` / ``model``.

    A stage that contains the classifier head is left out.
    """
    candidates = [model] + [getattr(model, n) for n in _WRAPPER_NAMES if isinstance(getattr(model, n, None), nn.Module)]
    stages = next((found for found in map(_stages_of, candidates) if found), None)
    if stages is None:
        raise ValueError(
            f"{type(model).__name__} has no stage structure: expected .blocks, .stages or .layer1..layerN "
            f"(on the model or its {'/'.join(_WRAPPER_NAMES)})"
        )
    try:
        head_params = {id(p) for p in find_head(model).parameters()}
    except ValueError:
        head_params = set()
    return [s for s in stages if not any(id(p) in head_params for p in s.parameters())]


def apply_partial_finetune(model: nn.Module, freeze_stages: int = 1) -> tuple[nn.Module, dict[str, Any]]:
    """Freeze the stem (patch embedding, tokens, position embeddings: every parameter that comes
    before the first stage) and the first ``freeze_stages`` stages; everything after trains.
    """
    stages = find_stages(model)
    if not 0 <= freeze_stages <= len(stages):
        raise ValueError(f"apply_partial_finetune: freeze_stages={freeze_stages} must be in [0, {len(stages)}]")
    model.requires_grad_(True)
    first_stage_params = {id(p) for p in stages[0].parameters()}
    for _, p in model.named_parameters():  # stem: registration order before the first stage
        if id(p) in first_stage_params:
            break
        p.requires_grad_(False)
    _set_trainable(stages[:freeze_stages], False)
    find_head(model).requires_grad_(True)
    return model, _summary(model, "partial_finetune", freeze_stages=freeze_stages, num_stages=len(stages))


def apply_bitfit(model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """Train only the bias terms (plus the head)."""
    model.requires_grad_(False)
    biases = [p for name, p in model.named_parameters() if name.split(".")[-1] == "bias"]
    if not biases:
        raise ValueError(f"apply_bitfit: {type(model).__name__} has no parameters named 'bias'")
    _set_trainable(biases)
    find_head(model).requires_grad_(True)
    return model, _summary(model, "bitfit", num_bias_tensors=len(biases))


class LoRALinear(nn.Module):
    """``y = base(x) + (alpha / r) * dropout(x) @ A^T @ B^T`` with a frozen ``base`` ``nn.Linear``.

    ``A``: ``(r, in_features)`` Kaiming-uniform, ``B``: ``(out_features, r)`` zeros, so the
    wrapped layer starts out exactly equal to ``base``.
    """

    def __init__(self, base: nn.Linear, *, rank: int = 4, alpha: float = 8.0, dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRALinear: rank must be >= 1, got {rank}")
        self.base = base
        self.base.requires_grad_(False)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """The low-rank update ``(alpha / r) * B @ A`` ``(out_features, in_features)``."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = nn.functional.linear(nn.functional.linear(self.dropout(x), self.lora_A), self.lora_B)
        return self.base(x) + update * self.scaling

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with ``W + (alpha / r) B A`` folded in."""
        base = self.base
        out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                        device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(base.weight + self.delta_weight().to(base.weight.dtype))
            if base.bias is not None:
                out.bias.copy_(base.bias)
        out.requires_grad_(base.weight.requires_grad)
        return out

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}"


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply_lora(
    model: nn.Module,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    targets: Sequence[str] = ("qkv", "proj", "fc1", "fc2"),
    dropout: float = 0.0,
) -> tuple[nn.Module, dict[str, Any]]:
    """Wrap every ``nn.Linear`` whose name ends in one of ``targets`` (e.g. ``"qkv"``, ``"attn.proj"``)
    in a :class:`LoRALinear`; freeze everything else except the head.

    Only the LoRA factors ``A``/``B`` and the head train. The classifier itself is never wrapped.
    """
    targets = tuple(targets)
    head_ids = {id(m) for m in find_head(model).modules()}
    names = [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and id(module) not in head_ids and _matches(name, targets)
    ]
    if not names:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:10]
        raise ValueError(f"apply_lora: no nn.Linear named like {list(targets)}; linear layers include {linears}")
    model.requires_grad_(False)
    for name in names:
        _set_submodule(model, name, LoRALinear(model.get_submodule(name), rank=rank, alpha=alpha, dropout=dropout))
    find_head(model).requires_grad_(True)
    return model, _summary(model, "lora", rank=rank, alpha=alpha, targets=list(targets), wrapped=names)


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by a plain ``nn.Linear`` with the update folded in (for inference)."""
    names = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name in names:
        _set_submodule(model, name, model.get_submodule(name).merged())
    return model


class Adapter(nn.Module):
    """Bottleneck adapter ``x + up(GELU(down(x)))`` on the last dimension; ``up`` is zero-initialised,
    so a freshly inserted adapter is the identity.
    """

    def __init__(self, dim: int, bottleneck: int = 16) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


class AdapterWrapped(nn.Module):
    """``adapter(inner(x))``: an adapter placed after ``inner`` (a block's MLP, or a whole block)."""

    def __init__(self, inner: nn.Module, adapter: Adapter) -> None:
        super().__init__()
        self.inner = inner
        self.adapter = adapter

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.adapter(self.inner(x, *args, **kwargs))


def _block_dim(block: nn.Module) -> int:
    mlp = getattr(block, "mlp", None)
    fc2 = getattr(mlp, "fc2", None)
    if isinstance(fc2, nn.Linear):
        return fc2.out_features
    norm = getattr(block, "norm1", None)
    shape = getattr(norm, "normalized_shape", None)
    if shape:
        return int(shape[-1])
    raise ValueError(f"apply_adapters: cannot tell the width of {type(block).__name__} (no mlp.fc2 or norm1)")


def apply_adapters(model: nn.Module, *, bottleneck: int = 16) -> tuple[nn.Module, dict[str, Any]]:
    """Insert a bottleneck :class:`Adapter` after the MLP of every transformer block in ``model.blocks``
    (after the whole block when it has no ``mlp``); freeze the backbone. Adapters and head train.

    The adapter sits inside the block's residual branch: ``x + mlp_adapter(mlp(norm2(x)))``.
    """
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or len(blocks) == 0:
        raise ValueError(f"apply_adapters: {type(model).__name__} has no .blocks of transformer blocks")
    model.requires_grad_(False)
    adapters = []
    for index, block in enumerate(blocks):
        dim = _block_dim(block)
        p = next(block.parameters())
        adapter = Adapter(dim, bottleneck).to(device=p.device, dtype=p.dtype)
        adapters.append(adapter)
        if isinstance(getattr(block, "mlp", None), nn.Module):
            block.mlp = AdapterWrapped(block.mlp, adapter)
        else:
            blocks[index] = AdapterWrapped(block, adapter)
    _set_trainable(adapters)
    find_head(model).requires_grad_(True)
    return model, _summary(model, "adapters", bottleneck=bottleneck, num_adapters=len(adapters))
