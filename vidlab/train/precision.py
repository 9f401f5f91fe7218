"""Mixed precision, measured: number formats, loss scaling, which ops autocast lowers, step time.

* :func:`format_table` lists fp32, tf32, fp16, bf16 and the two fp8 formats from ``torch.finfo``;
  :func:`round_to` rounds fp32 values to any of them (tf32 emulated by dropping mantissa bits).
* :func:`step_gradients` and :func:`underflow_fraction`: how much of a real gradient (weights and
  the activations between blocks) vanishes when it is stored in fp16, with and without a loss scale.
* :class:`TeachingGradScaler`: ``torch.amp.GradScaler`` written out in a few lines (one
  optimizer); it plugs into :func:`vidlab.train.train_one_epoch` through ``scaler=``.
* :func:`trace_op_dtypes`: every aten op the model runs under autocast, with its input and
  output dtypes (a ``TorchDispatchMode`` records them).
* :func:`time_training_steps`: seconds per training step of several configurations, each
  step run by the engine, repeats interleaved so background load hits all of them alike.

Training memory (peak of one step, checkpointing, accumulation) is :mod:`vidlab.train.memory`.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from tqdm.auto import tqdm

from vidlab.train.engine import StepContext, StepOutput, TrainConfig, default_step, train_one_epoch

__all__ = [
    "FORMATS",
    "TeachingGradScaler",
    "TimedRun",
    "batches_from",
    "crossover",
    "format_table",
    "gradient_values",
    "round_to",
    "step_gradients",
    "tf32_matmuls",
    "time_training_steps",
    "trace_op_dtypes",
    "train_with_scaler",
    "underflow_fraction",
]

# name -> torch dtype (tf32 has none: it is fp32 storage with a 10-bit mantissa inside matmuls)
FORMATS: dict[str, torch.dtype | None] = {
    "float32": torch.float32,
    "tf32": None,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
}


def format_table() -> list[dict[str, Any]]:
    """One row per format of :data:`FORMATS`: ``bits``, ``exponent_bits``, ``mantissa_bits``, ``max``,
    ``smallest_normal``, ``smallest_subnormal``, ``eps`` (gap between 1 and the next value) and
    ``decimal_digits``, read from ``torch.finfo`` (tf32: fp32's range with fp16's mantissa)."""
    rows = []
    for name, dtype in FORMATS.items():
        if dtype is None:  # tf32
            f32 = torch.finfo(torch.float32)
            bits, mantissa, top, tiny = 19, 10, f32.max, f32.smallest_normal
        else:
            info = torch.finfo(dtype)
            bits, top, tiny = info.bits, info.max, info.smallest_normal
            mantissa = round(-math.log2(info.eps))
        eps = 2.0 ** -mantissa
        rows.append({
            "format": name, "bits": bits, "exponent_bits": bits - 1 - mantissa, "mantissa_bits": mantissa,
            "max": float(top), "smallest_normal": float(tiny), "smallest_subnormal": float(tiny) * eps,
            "eps": eps, "decimal_digits": round(mantissa * math.log10(2) + math.log10(2), 1),
        })
    return rows


def round_to(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """fp32 ``x`` rounded to format ``fmt`` (a :data:`FORMATS` name) and returned as fp32.

    tf32 keeps fp32's 8 exponent bits and the top 10 of its 23 mantissa bits (round to nearest
    even on the 13 dropped bits), as a tensor core does to matmul inputs.
    """
    if fmt not in FORMATS:
        raise ValueError(f"round_to: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    x = x.float()
    if fmt == "tf32":
        bits = x.contiguous().view(torch.int32)
        drop = 13
        lsb = (bits >> drop) & 1
        rounded = (bits + (1 << (drop - 1)) - 1 + lsb) & ~((1 << drop) - 1)
        out = rounded.view(torch.float32)
        return torch.where(torch.isfinite(x), out, x)
    return x.to(FORMATS[fmt]).float()


def gradient_values(model: nn.Module) -> torch.Tensor:
    """Every gradient entry of ``model`` as one flat fp32 tensor ``(P,)`` (parameters without a grad are left out)."""
    grads = [p.grad.detach().float().flatten() for p in model.parameters() if p.grad is not None]
    if not grads:
        raise ValueError(f"gradient_values: {type(model).__name__} has no gradients; run backward first")
    return torch.cat(grads)


def step_gradients(model: nn.Module, video: torch.Tensor, label: torch.Tensor,
                   modules: Iterable[nn.Module] = ()) -> dict[str, torch.Tensor]:
    """One fp32 forward/backward of the cross entropy of ``model(video)`` (``(B, C, T, H, W)``) against
    ``label`` ``(B,)``. Returns flat fp32 tensors: ``weights`` (every parameter gradient) and
    ``activations`` (the gradients flowing into the outputs of ``modules``, e.g. a ViT's blocks:
    in fp16 training these are what backward passes from layer to layer). Grads are cleared after."""
    caught: list[torch.Tensor] = []

    def keep(_: nn.Module, __: Any, out: torch.Tensor) -> None:
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(lambda g: caught.append(g.detach().float().flatten()))

    handles = [m.register_forward_hook(keep) for m in modules]
    try:
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(video), label).backward()
    finally:
        for h in handles:
            h.remove()
    weights = gradient_values(model)
    model.zero_grad(set_to_none=True)
    return {"weights": weights, "activations": torch.cat(caught) if caught else torch.zeros(0)}


def underflow_fraction(values: torch.Tensor, *, scale: float = 1.0, dtype: torch.dtype = torch.float16) -> float:
    """Fraction of the non-zero ``values`` that become exactly zero when ``values * scale`` is stored in ``dtype``."""
    nonzero = values[values != 0].float()
    if nonzero.numel() == 0:
        raise ValueError("underflow_fraction: every value is zero")
    return float(((nonzero * scale).to(dtype) == 0).float().mean())


class TeachingGradScaler:
    """Dynamic loss scaling in a few lines; the same decisions as ``torch.amp.GradScaler`` for one optimizer.

    ``scale(loss)`` multiplies the loss by ``S`` so small gradients survive fp16; ``unscale_``
    divides the gradients by ``S`` and notes whether any is inf/NaN; ``step`` skips the update
    when one is; ``update`` halves ``S`` after an overflow and doubles it after
    ``growth_interval`` clean steps in a row. ``history`` lists ``(scale, skipped)`` per step.
    """

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000) -> None:
        self._scale = float(init_scale)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self._good_steps = 0
        self._unscaled = False
        self._found_inf = False
        self.history: list[tuple[float, bool]] = []

    def is_enabled(self) -> bool:
        return True

    def get_scale(self) -> float:
        return self._scale

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self._scale

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if self._unscaled:
            raise RuntimeError("TeachingGradScaler.unscale_ was already called since the last update()")
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self._found_inf = not all(bool(torch.isfinite(g).all()) for g in grads)
        for g in grads:
            g.mul_(1.0 / self._scale)
        self._unscaled = True

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._unscaled:
            self.unscale_(optimizer)
        if not self._found_inf:
            optimizer.step()

    def update(self) -> None:
        self.history.append((self._scale, self._found_inf))
        if self._found_inf:
            self._scale *= self.backoff_factor
            self._good_steps = 0
        else:
            self._good_steps += 1
            if self._good_steps == self.growth_interval:
                self._scale *= self.growth_factor
                self._good_steps = 0
        self._unscaled = self._found_inf = False


def train_with_scaler(model: nn.Module, batches: Sequence[Mapping[str, Any]], scaler: Any, *, lr: float = 1e-3,
                      overflow_at: Iterable[int] = (), device: torch.device | str = "cpu") -> dict[str, Any]:
    """One pass of fp16-autocast training over ``batches`` (``video`` ``(B, C, T, H, W)``, ``label``) by the
    engine, with ``scaler`` (a ``torch.amp.GradScaler`` or :class:`TeachingGradScaler`) and AdamW.

    At the batch indices in ``overflow_at`` the gradient flowing out of the logits is multiplied by
    inf, as when an activation gradient overflows fp16. Returns ``scales`` (the scale each step's loss
    was multiplied by), ``skipped`` (per step: the update was dropped; seen as the scale backing
    off), ``skipped_steps`` (the engine's count) and ``losses``.
    """
    overflow = set(overflow_at)
    scales: list[float] = []
    losses: list[float] = []

    def step(m: nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> StepOutput:
        scales.append(float(scaler.get_scale()))
        out = default_step(m, batch, ctx)
        if ctx.step in overflow:
            out.logits.register_hook(lambda g: g * float("inf"))
        losses.append(float(out.loss.detach()))
        return out

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    cfg = TrainConfig(epochs=1, lr=lr, amp=True, amp_dtype="float16", scheduler="constant")
    result = train_one_epoch(model.to(device), batches, opt, None, cfg=cfg, device=torch.device(device), epoch=0,
                             scaler=scaler, step_fn=step, progress=False)
    after = scales[1:] + [float(scaler.get_scale())]
    return {"scales": scales, "skipped": [b < a for a, b in zip(scales, after)],
            "skipped_steps": result["skipped_steps"], "losses": losses}


class _OpDtypes(TorchDispatchMode):
    """Counts ``(op, input float dtypes, output dtypes)`` for every aten op run inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))

        def dtypes(tree: Any, floating: bool) -> str:
            leaves = [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]
            names = {str(t.dtype).removeprefix("torch.") for t in leaves if t.is_floating_point() or not floating}
            return "+".join(sorted(names)) or "-"

        self.counts[(func.overloadpacket.__name__, dtypes((args, kwargs), True), dtypes(out, False))] += 1
        return out


# ops that only re-view or move data (no arithmetic): left out of the table by default
_LAYOUT_OPS = frozenset({"view", "_unsafe_view", "reshape", "transpose", "t", "permute", "unbind", "expand",
                         "detach", "lift_fresh", "clone", "contiguous", "split", "slice", "select",
                         "unsqueeze", "squeeze", "alias", "as_strided", "empty_like", "empty", "ones_like"})


def trace_op_dtypes(model: nn.Module, x: torch.Tensor, *, amp_dtype: torch.dtype | None = torch.bfloat16,
                    labels: torch.Tensor | None = None, backward: bool = False,
                    layout_ops: bool = False) -> list[dict[str, Any]]:
    """The aten ops of ``model(x)`` (``x``: a ``(B, C, T, H, W)`` batch) under ``torch.autocast(dtype=amp_dtype)``
    (``None``: no autocast), with the cross entropy against ``labels`` when given, and the backward
    pass too if ``backward``. Returns rows ``{"op", "calls", "input_dtypes", "output_dtypes"}`` in first-call
    order; ``_to_copy`` rows are the casts autocast inserts. Pure re-views are left out unless ``layout_ops``.
    """
    recorder = _OpDtypes()
    device_type = x.device.type
    with recorder:
        with torch.autocast(device_type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            out = model(x)
            loss = nn.functional.cross_entropy(out, labels) if labels is not None else out.float().sum()
        if backward:
            loss.backward()
    if backward:
        model.zero_grad(set_to_none=True)
    return [
        {"op": op, "calls": n, "input_dtypes": ins, "output_dtypes": outs}
        for (op, ins, outs), n in recorder.counts.items()
        if layout_ops or op not in _LAYOUT_OPS
    ]


@contextlib.contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """Within the block, CUDA fp32 matmuls and convolutions use TF32 tensor cores (``enabled``) or full
    IEEE fp32 (not ``enabled``); the previous settings come back afterwards. No effect on a CPU."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    matmul.fp32_precision = conv.fp32_precision = "tf32" if enabled else "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


@dataclass
class TimedRun:
    """One configuration for :func:`time_training_steps`."""

    model: nn.Module
    cfg: TrainConfig  # amp / amp_dtype pick the precision
    batches: Sequence[Mapping[str, Any]] | None = None  # None: the shared batches
    context: Callable[[], contextlib.AbstractContextManager] | None = None  # entered around each pass (TF32)
    repeats: int | None = None  # timed passes of this run if fewer than the others' (a very slow one)


def time_training_steps(
    runs: Mapping[str, TimedRun],
    batches: Sequence[Mapping[str, Any]],
    *,
    device: torch.device | str = "cpu",
    repeats: int = 3,
    warmup: int = 1,
    progress: bool = False,
    desc: str = "timing steps",
) -> dict[str, dict[str, Any]]:
    """Seconds per training step of each named :class:`TimedRun` on the same ``batches`` (dicts with ``video``
    ``(B, C, T, H, W)`` and ``label`` ``(B,)``), each pass run by :func:`vidlab.train.train_one_epoch`.

    Every run gets its own AdamW (and, for fp16 AMP, a ``torch.amp.GradScaler``), one untimed pass
    per ``warmup``, then ``repeats`` timed passes, **interleaved**: repeat r runs every
    configuration once (in reversed order on odd r), so background load affects all alike.
    Returns ``{name: {"step_s": seconds per step of the fastest pass, "median_s": the median pass,
    "steps_s": [per-pass values]}}``: the fastest pass is the one least disturbed by other work on
    the machine, so ratios of ``step_s`` stay meaningful on a busy computer.
    ``progress`` shows a bar (``desc``) advanced once per pass.
    """
    device = torch.device(device)
    state = {}
    for name, run in runs.items():
        run.model.to(device)
        params = [p for p in run.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=run.cfg.lr, weight_decay=0.0)
        scaler = torch.amp.GradScaler(device.type, enabled=run.cfg.amp and run.cfg.amp_dtype == "float16")
        state[name] = (run, opt, scaler, run.batches if run.batches is not None else batches)
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    passes = sum(warmup + min(repeats, run.repeats or repeats) for run in runs.values())
    bar = tqdm(total=passes, desc=desc, disable=not progress, leave=False)
    for r in range(warmup + repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            run, opt, scaler, data = state[name]
            if run.repeats is not None and r >= warmup + run.repeats:
                continue
            with run.context() if run.context is not None else contextlib.nullcontext():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                out = train_one_epoch(run.model, data, opt, None, cfg=run.cfg, device=device, epoch=0,
                                      scaler=scaler, progress=False)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            if r >= warmup:
                times[name].append((time.perf_counter() - start) / max(out["steps"], 1))
            bar.update(1)
    bar.close()
    return {name: {"step_s": min(ts), "median_s": statistics.median(ts), "steps_s": ts} for name, ts in times.items()}


def crossover(xs: Sequence[float], ys: Sequence[float], level: float = 1.0) -> float | None:
    """The first ``x`` where the curve ``ys`` (over increasing ``xs``) rises through ``level``, linearly
    interpolated; ``xs[0]`` if it starts at or above ``level``; ``None`` if it never gets there."""
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"crossover: xs and ys must be non-empty and of equal length, got {len(xs)} and {len(ys)}")
    if ys[0] >= level:
        return float(xs[0])
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if y0 < level <= y1:
            return float(x0 + (level - y0) * (x1 - x0) / (y1 - y0))
    return None


def batches_from(loader: Iterable[Mapping[str, Any]], count: int) -> list[dict[str, Any]]:
    """``count`` batches of ``loader`` (passing over it again if it is shorter) as ``{"video", "label"}`` dicts."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        before = len(out)
        for batch in loader:
            out.append({"video": batch["video"], "label": batch["label"]})
            if len(out) == count:
                break
        if len(out) == before:
            raise ValueError("batches_from: the loader yielded no batches")
    return out
