"""How much memory does a training step need? Measured on GPU, counted on CPU.

On CUDA the answer is ``torch.cuda.max_memory_allocated``. On a CPU there is no allocator
counter, so :func:`training_memory` counts what a training step must hold at its peak:
the weights, the activations autograd saves for the backward pass (counted with
``torch.autograd.graph.saved_tensors_hooks``, each storage once), a gradient for every
trainable parameter, and the optimizer state (AdamW: two tensors per trainable parameter).
Parameter-efficient fine-tuning shrinks the last two and often the activations.
"""
from __future__ import annotations

import os
import resource
from typing import Any

import torch
from torch import nn


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
