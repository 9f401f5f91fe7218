"""How much memory does a training step need? Measured on GPU, counted on CPU.

On CUDA the answer is ``torch.cuda.max_memory_allocated``. On a CPU there is no allocator
counter, so :func:`training_memory` counts what a training step must hold at its peak:
the weights, the activations autograd saves for the backward pass (counted with
``torch.autograd.graph.saved_tensors_hooks``, each storage once), a gradient for every
trainable parameter, and the optimizer state (AdamW: two tensors per trainable parameter).
Parameter-efficient fine-tuning shrinks the last two and often the activations.

Measured instead of counted: :func:`peak_step_memory` follows every tensor of one engine training
step with ``torch.distributed._tools.MemTracker`` and reports the peak by category (weights,
gradients, optimizer state, activations, temporaries). :func:`checkpoint_blocks` recomputes each
block's activations in backward (``torch.utils.checkpoint``); :func:`accumulation_difference`
checks that gradient accumulation gives the update of one large batch.
"""
from __future__ import annotations

import copy
import os
import resource
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidlab.train.engine import TrainConfig, train_one_epoch


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    return (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())


def saved_activation_bytes(model: nn.Module, batch: torch.Tensor) -> int:
    """Bytes autograd saves for backward in one forward pass of ``batch`` (each storage once)."""
    seen: dict[tuple[int, int], int] = {}
    params = {_storage_key(p) for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in params:
            seen[key] = key[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(batch)
    out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def training_memory(model: nn.Module, batch: torch.Tensor, *, optimizer_states_per_param: int = 2) -> dict[str, Any]:
    """Peak training-step memory in MiB: ``weights``, ``activations``, ``gradients``, ``optimizer``, ``total``.

    ``batch`` is a ``(B, C, T, H, W)`` input on the model's device. On CUDA ``total`` is the
    measured peak of one forward/backward; on CPU it is the sum of the counted parts.
    """
    mib = 2**20
    trainable = [p for p in model.parameters() if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.numel() * p.element_size() for p in trainable)
    optim = optimizer_states_per_param * grads
    was_training = model.training
    model.train()
    if batch.is_cuda:
        torch.cuda.reset_peak_memory_stats(batch.device)
        base = torch.cuda.memory_allocated(batch.device)
    activations = saved_activation_bytes(model, batch)
    model.train(was_training)
    parts = {"weights": weights / mib, "activations": activations / mib, "gradients": grads / mib, "optimizer": optim / mib}
    if batch.is_cuda:
        parts["total"] = (torch.cuda.max_memory_allocated(batch.device) - base + weights + optim) / mib
    else:
        parts["total"] = sum(parts.values())
    return parts


def process_rss_bytes() -> int:
    """Resident memory of this process now (Linux ``/proc``); elsewhere the lifetime peak RSS."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: lifetime peak RSS (kB on Linux, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024


class PeakMemory:
    """Peak memory of a training run: ``torch.cuda.max_memory_allocated`` on a GPU, on a CPU the
    largest process RSS seen at :meth:`sample` (call it after every step, e.g. as ``on_step``)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.rss = process_rss_bytes()

    def sample(self, *_: Any) -> None:
        if self.device.type != "cuda":
            self.rss = max(self.rss, process_rss_bytes())

    @property
    def bytes(self) -> int:
        return int(torch.cuda.max_memory_allocated(self.device)) if self.device.type == "cuda" else int(self.rss)


class Checkpointed(nn.Module):
    """Runs ``module`` under ``torch.utils.checkpoint`` while training: only its inputs are kept for
    backward, its inner activations are recomputed then (one more forward of the module)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any) -> Any:
        if self.training and torch.is_grad_enabled():
            return checkpoint(self.module, *args, use_reentrant=False)
        return self.module(*args)


def checkpoint_blocks(model: nn.Module, attr: str = "blocks") -> nn.Module:
    """A deep copy of ``model`` in which every child of ``model.<attr>`` (a ViT's ``blocks``, an
    X3D's ``stages``) is wrapped in :class:`Checkpointed`. Same weights, same outputs."""
    clone = copy.deepcopy(model)
    blocks = getattr(clone, attr, None)
    if not isinstance(blocks, nn.Module) or not list(blocks.children()):
        raise ValueError(f"checkpoint_blocks: {type(model).__name__} has no module list {attr!r} to checkpoint")
    for name, child in list(blocks.named_children()):
        setattr(blocks, name, Checkpointed(child))
    return clone


_MEM_NAMES = {"Parameter": "weights", "Buffer": "buffers", "Gradient": "gradients", "Optstate": "optimizer",
              "Activation": "activations", "Temp": "temporaries", "Other": "other"}


def peak_step_memory(model: nn.Module, batch: Mapping[str, Any], cfg: TrainConfig, *,
                     device: torch.device | str = "cpu") -> dict[str, float]:
    """Peak live tensor memory (MiB) of one training step of ``model`` run by the engine with ``cfg``
    (AMP settings included) on ``batch`` (``video`` ``(B, C, T, H, W)``, ``label`` ``(B,)``).

    Measured, not estimated: ``MemTracker`` follows every tensor's storage through forward,
    backward and the AdamW step and reports the breakdown at the moment the total peaks:
    ``weights``, ``buffers``, ``gradients``, ``optimizer``, ``activations`` (forward outputs kept
    for backward, including recomputed ones), ``temporaries`` (backward scratch) and ``total``.
    It counts tensor bytes, not allocator overhead. A copy of the model is trained (one untimed
    step first so the optimizer state exists); ``model`` is left untouched.
    """
    from torch.distributed._tools.mem_tracker import MemTracker

    device = torch.device(device)
    work = copy.deepcopy(model).to(device)
    opt = torch.optim.AdamW([p for p in work.parameters() if p.requires_grad], lr=cfg.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and cfg.amp_dtype == "float16")
    batches = [dict(batch)]
    train_one_epoch(work, batches, opt, None, cfg=cfg, device=device, epoch=0, scaler=scaler, progress=False)
    tracker = MemTracker()
    tracker.track_external(work, opt)
    with tracker:
        train_one_epoch(work, batches, opt, None, cfg=cfg, device=device, epoch=0, scaler=scaler, progress=False)
    snapshot = tracker.get_tracker_snapshot("peak")
    per_device = next((v for k, v in snapshot.items() if torch.device(k).type == device.type), None)
    if per_device is None:
        raise RuntimeError(f"peak_step_memory: MemTracker saw no tensors on {device}")
    out = {name: 0.0 for name in _MEM_NAMES.values()}
    for key, value in per_device.items():
        label = getattr(key, "value", str(key))
        out[_MEM_NAMES.get(label, "total" if label == "Total" else label)] = value / 2**20
    return out


def accumulation_difference(model: nn.Module, batch: Mapping[str, Any], micro_batches: int, *,
                            device: torch.device | str = "cpu") -> float:
    """Largest absolute weight difference between one SGD step (lr 1, so the update *is* the gradient)
    on the whole ``batch`` and one step accumulated by the engine over ``micro_batches`` equal
    slices of it (``TrainConfig.accum_steps``). Zero up to rounding for models without batch
    statistics; BatchNorm sees smaller batches and makes it differ. ``model`` is left untouched."""
    size = int(batch["label"].shape[0])
    if micro_batches < 1 or size % micro_batches:
        raise ValueError(f"accumulation_difference: batch of {size} does not split into {micro_batches} equal slices")
    device = torch.device(device)
    results = []
    for accum in (1, micro_batches):
        work = copy.deepcopy(model).to(device)
        opt = torch.optim.SGD(work.parameters(), lr=1.0)
        cfg = TrainConfig(epochs=1, lr=1.0, optimizer="sgd", weight_decay=0.0, accum_steps=accum, scheduler="constant")
        chunk = size // accum
        parts = [{"video": batch["video"][i:i + chunk], "label": batch["label"][i:i + chunk]} for i in range(0, size, chunk)]
        train_one_epoch(work, parts, opt, None, cfg=cfg, device=device, epoch=0, progress=False)
        results.append([p.detach().cpu() for p in work.parameters()])
    return max(float((a - b).abs().max()) for a, b in zip(*results))
