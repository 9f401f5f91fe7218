"""2:4 semi-structured sparsity: in every group of 4 consecutive weights along a Linear layer's
input dimension, 2 are zero.

The pattern is regular enough for sparse tensor cores (NVIDIA Ampere and later) to skip the
zeros, about halving the matmul work; CPUs have no such kernel, so on CPU the pattern is only an
accuracy question. :func:`apply_2_4` prunes to the pattern with masks that stay attached while
the model is fine-tuned (``torch.nn.utils.prune``), :func:`make_permanent` folds them in, and
:func:`gpu_speedup` times ``torch.sparse.to_sparse_semi_structured`` against the dense matmul
(CUDA only).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from vidlab.compress.pruning import make_permanent

__all__ = ["mask_2_4", "apply_2_4", "is_2_4", "make_permanent", "gpu_speedup", "GPU_SKIP_REASON"]

GPU_SKIP_REASON = ("2:4 sparse kernels exist only for CUDA GPUs (torch.sparse.to_sparse_semi_structured "
                   "needs sparse tensor cores); on CPU a 2:4 model runs the same dense kernels")


def mask_2_4(weight: torch.Tensor) -> torch.Tensor:
    """Boolean mask of ``weight`` ``(out, in)`` keeping the 2 largest-magnitude of every 4
    consecutive inputs (``in`` must be a multiple of 4)."""
    if weight.ndim != 2 or weight.shape[1] % 4:
        raise ValueError(f"mask_2_4: needs a (out, in) weight with in % 4 == 0, got {tuple(weight.shape)}")
    groups = weight.detach().abs().reshape(weight.shape[0], -1, 4)
    keep = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(weight.shape)


def is_2_4(weight: torch.Tensor) -> bool:
    """True when every group of 4 consecutive inputs has at most 2 non-zeros."""
    return bool(((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


def apply_2_4(model: nn.Module, *, exclude: Iterable[nn.Module] = ()) -> list[nn.Linear]:
    """Prune every ``nn.Linear`` of ``model`` (but ``exclude``; those whose input size is not a
    multiple of 4 are skipped) to the 2:4 pattern. The masks stay attached (``weight_orig`` *
    ``weight_mask``) so training keeps the pattern; :func:`make_permanent` folds them in.
    Returns the layers pruned."""
    skip = {id(m) for m in exclude}
    done = []
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module) not in skip and module.in_features % 4 == 0:
            prune.custom_from_mask(module, "weight", mask_2_4(module.weight))
            done.append(module)
    return done


def gpu_speedup(shape: tuple[int, int], tokens: int, *, dtype: torch.dtype = torch.float16,
                repeats: int = 50) -> dict[str, Any]:
    """Dense vs 2:4 sparse ``linear`` on the GPU for a weight ``shape`` ``(out, in)`` and ``tokens``
    input rows: ``{"dense_ms", "sparse_ms", "speedup"}`` (medians of :func:`~vidlab.compress.measure_latency`).
    Raises ``RuntimeError`` with :data:`GPU_SKIP_REASON` without CUDA."""
    from vidlab.compress.latency import measure_latency

    if not torch.cuda.is_available():
        raise RuntimeError(GPU_SKIP_REASON)
    from torch.sparse import to_sparse_semi_structured

    weight = torch.randn(shape, device="cuda", dtype=dtype)
    weight = weight * mask_2_4(weight)
    x = torch.randn(tokens, shape[1], device="cuda", dtype=dtype)
    sparse = to_sparse_semi_structured(weight)
    dense = measure_latency(lambda a: torch.nn.functional.linear(a, weight), x, repeats=repeats)
    fast = measure_latency(lambda a: torch.nn.functional.linear(a, sparse), x, repeats=repeats)
    return {"dense_ms": dense.median_ms, "sparse_ms": fast.median_ms, "speedup": dense.median_ms / fast.median_ms}
