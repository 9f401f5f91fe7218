"""int8 quantization with the current PyTorch stack.

* The affine mapping itself: :func:`affine_qparams`, :func:`quantize`, :func:`dequantize`
  (``q = clamp(round(x / s) + z, -128, 127)``, ``x ~ s (q - z)``), per tensor or per channel.
* Post-training static int8 through PT2E (:func:`quantize_static`): ``torch.export`` ->
  ``prepare_pt2e`` with torchao's ``X86InductorQuantizer`` -> calibration on a few batches ->
  ``convert_pt2e``; then :func:`compile_frozen` (inductor with weight freezing) turns the
  quantize / dequantize pairs around each annotated op into int8 kernels.
  :func:`int8_coverage` lists which ops got int8 and which stayed float.
* Quantization-aware training (:func:`prepare_qat`): fake-quantize in the training graph, train,
  then :func:`convert_qat`.
* Dynamic int8 for Linear layers (:func:`dynamic_int8_linear`): weights int8 ahead of time,
  activations quantized per batch at run time; no calibration.

Models take clips ``(B, C, T, H, W)`` and return logits ``(B, num_classes)``.
"""
from __future__ import annotations

import contextlib
import copy
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

QMIN, QMAX = -128, 127
# ops whose int8 form the inductor lowering knows (when the quantizer annotates them)
_COMPUTE_OPS = {"conv1d": "Conv1d", "conv2d": "Conv2d", "conv3d": "Conv3d", "linear": "Linear"}


# ----------------------------------------------------------------------------- the affine mapping
def affine_qparams(x: torch.Tensor, *, axis: int | None = None, qmin: int = QMIN, qmax: int = QMAX,
                   eps: float = torch.finfo(torch.float32).eps) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point mapping the range of ``x`` (always including 0) onto ``[qmin, qmax]``:
    ``s = (max - min) / (qmax - qmin)``, ``z = qmin - round(min / s)``. ``axis`` gives one pair
    per slice along that axis (per channel); ``None`` one pair for the tensor (per tensor)."""
    if axis is None:
        lo, hi = x.min(), x.max()
    else:
        flat = x.transpose(0, axis).reshape(x.shape[axis], -1)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / float(qmax - qmin), min=eps)
    zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax).to(torch.int64)
    return scale.float(), zero_point


def _along(t: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    if axis is None or t.ndim == 0:
        return t
    shape = [1] * x.ndim
    shape[axis] = -1
    return t.reshape(shape)


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *, axis: int | None = None,
             qmin: int = QMIN, qmax: int = QMAX) -> torch.Tensor:
    """``clamp(round(x / s) + z, qmin, qmax)`` as int8 (``axis``: per-channel ``s``, ``z`` along it)."""
    s, z = _along(scale, x, axis), _along(zero_point, x, axis)
    return torch.clamp(torch.round(x / s) + z, qmin, qmax).to(torch.int8)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, *, axis: int | None = None) -> torch.Tensor:
    """``s * (q - z)`` as float32."""
    s, z = _along(scale, q, axis), _along(zero_point, q, axis)
    return (q.to(torch.float32) - z) * s


def roundtrip_error(x: torch.Tensor, *, axis: int | None = None) -> float:
    """Relative RMS error ``||x - deq(q(x))|| / ||x||`` of int8 per tensor (``axis=None``) or per channel."""
    scale, zp = affine_qparams(x, axis=axis)
    back = dequantize(quantize(x, scale, zp, axis=axis), scale, zp, axis=axis)
    return float(torch.linalg.vector_norm(x - back) / torch.linalg.vector_norm(x).clamp_min(1e-12))


# ----------------------------------------------------------------------------- PT2E static int8
def x86_quantizer(*, is_qat: bool = False) -> Any:
    """torchao's ``X86InductorQuantizer`` with its default int8 config (per-channel symmetric
    weights, per-tensor affine activations)."""
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    return xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config(is_qat=is_qat))


def export_module(model: nn.Module, example: torch.Tensor, *, dynamic_batch: bool = True) -> torch.fx.GraphModule:
    """``torch.export.export(model, (example,)).module()``; the batch dimension stays dynamic so the
    same graph takes batch 1 and batch 8."""
    if dynamic_batch and example.shape[0] < 2:  # export specialises a dimension of size 1 to a constant
        example = example.expand(2, *example.shape[1:])
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None
    return torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes).module()


def quantize_static(model: nn.Module, calibration: Iterable[torch.Tensor], *, example: torch.Tensor | None = None) -> torch.fx.GraphModule:
    """Post-training static int8: export, insert observers (``prepare_pt2e``), run the
    ``calibration`` batches ``(B, C, T, H, W)`` through, and ``convert_pt2e``.

    The result runs as is (quantize / dequantize in float: slow) and becomes int8 kernels
    under :func:`compile_frozen`. ``model`` itself is not modified.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    batches = iter(calibration)
    first = next(batches, None) if example is None else example
    if first is None:
        raise ValueError("quantize_static: no calibration batches")
    model = copy.deepcopy(model).eval()
    prepared = prepare_pt2e(export_module(model, first), x86_quantizer())
    with torch.no_grad():
        if example is None:
            prepared(first)
        for x in batches:
            prepared(x)
    return convert_pt2e(prepared)


def prepare_qat(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """Quantization-aware training: the exported training graph with fake-quantize nodes
    (``prepare_qat_pt2e``). Train it like any module (``vl.train.fit``), then :func:`convert_qat`."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    model = copy.deepcopy(model).train()
    graph = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},)).module()
    prepared = prepare_qat_pt2e(graph, x86_quantizer(is_qat=True))
    allow_exported_model_train_eval(prepared)
    return prepared


def convert_qat(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The int8 model of a :func:`prepare_qat` graph after training (eval mode)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    move_exported_model_to_eval(prepared)
    return convert_pt2e(prepared)


def _op_name(node: torch.fx.Node) -> str | None:
    name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
    return _COMPUTE_OPS.get(name)


def int8_coverage(converted: torch.fx.GraphModule) -> list[dict[str, Any]]:
    """Per compute op (Conv1d/2d/3d, Linear) of a converted PT2E graph: how many there are and
    how many read int8 inputs (a dequantize feeding both activation and weight, which inductor
    lowers to an int8 kernel); the rest run in float32."""
    total, int8 = Counter(), Counter()
    for node in converted.graph.nodes:
        op = _op_name(node) if node.op == "call_function" else None
        if op is None:
            continue
        total[op] += 1
        args = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
        if len(args) == 2 and all("dequantize" in str(a.target) for a in args):
            int8[op] += 1
    return [{"op": op, "count": total[op], "int8": int8[op], "float32": total[op] - int8[op]} for op in sorted(total)]


@contextlib.contextmanager
def inductor_freezing() -> Iterator[None]:
    """Inductor weight freezing on (constant-folds weights into the graph: needed for int8 kernels),
    with the C++ wrapper (the compiled graph is called from C++ rather than through a Python
    function per kernel: small models spend a large part of a call in that Python glue)."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True, cpp_wrapper=True):
        yield


def compile_frozen(model: Callable[[torch.Tensor], Any], examples: Iterable[torch.Tensor]) -> tuple[Callable[[torch.Tensor], Any], float]:
    """``torch.compile`` (inductor, static shapes, freezing) and compile it for each example batch
    now, so timing later measures only the run. Returns the compiled callable and the seconds the
    compilation took (the first calls)."""
    compiled = torch.compile(model, dynamic=False)
    t0 = time.perf_counter()
    with inductor_freezing(), torch.inference_mode():
        for x in examples:
            compiled(x)
    return compiled, time.perf_counter() - t0


# ----------------------------------------------------------------------------- dynamic int8
def dynamic_int8_linear(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers hold int8 weights and quantize their input
    per token at run time (torchao ``Int8DynamicActivationInt8WeightConfig``)."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = copy.deepcopy(model).eval()
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


# ----------------------------------------------------------------------------- saving
def drop_unused_tensors(graph_module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of ``graph_module`` without the parameters and buffers its graph no longer reads
    (after ``convert_pt2e`` the float weights stay attached beside their int8 copies)."""
    graph_module = copy.deepcopy(graph_module)
    used = {n.target for n in graph_module.graph.nodes if n.op == "get_attr"}
    for name, _ in [*graph_module.named_parameters(), *graph_module.named_buffers()]:
        if name in used:
            continue
        owner, _, attr = name.rpartition(".")
        module = graph_module.get_submodule(owner) if owner else graph_module
        module._parameters.pop(attr, None)
        module._buffers.pop(attr, None)
    return graph_module


def stored_tensor_bytes(path: str | os.PathLike) -> int:
    """Bytes of the tensors a saved model file holds: for a ``torch.export`` ``.pt2`` archive its
    weights and constants (not the graph description and example inputs it also carries), for
    any other file its size."""
    import zipfile

    path = Path(path)
    if not zipfile.is_zipfile(path) or path.suffix != ".pt2":
        return path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        return sum(i.file_size for i in archive.infolist()
                   if ("/data/weights/" in f"/{i.filename}" or "/data/constants/" in f"/{i.filename}")
                   and not i.filename.endswith(".json"))


def load_exported(path: str | os.PathLike) -> torch.fx.GraphModule:
    """Load a :func:`save_exported` ``.pt2`` as a callable module. The quantize / dequantize ops of
    an int8 program live in torchao's op library, which is imported first so they resolve."""
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401  (registers quantized_decomposed ops)

    return torch.export.load(Path(path)).module()


def save_exported(model: Callable[[torch.Tensor], Any], example: torch.Tensor, path: str | os.PathLike) -> Path:
    """``torch.export`` ``model`` (batch dimension dynamic) and write the program with
    ``torch.export.save`` (atomically): a self-contained ``.pt2`` with the weights as they are
    stored (int8 after quantization). Reload with :func:`load_exported`."""
    from vidlab.utils import atomic_path

    example = example[:2] if example.shape[0] >= 2 else example.expand(2, *example.shape[1:])  # the .pt2 keeps it
    if isinstance(model, torch.fx.GraphModule):
        model = drop_unused_tensors(model)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp)
    return Path(path)


# ----------------------------------------------------------------------------- eager int8 Conv3d
def _conv_kind(conv: nn.Conv3d) -> str:
    if conv.groups > 1 and conv.groups == conv.in_channels:
        return "depthwise " + "x".join(map(str, conv.kernel_size))
    return ("pointwise " if conv.kernel_size == (1, 1, 1) else "dense ") + "x".join(map(str, conv.kernel_size))


def eager_int8_conv3d_report(model: nn.Module, example: torch.Tensor, *, threads: int | None = None,
                             repeats: int = 20, max_layers: int = 4) -> list[dict[str, Any]]:
    """Time the eager int8 ``Conv3d`` kernel of the quantized backend (fbgemm / x86,
    ``torch.ao.nn.quantized.Conv3d``: quint8 activations, per-channel qint8 weights) against the
    float ``Conv3d`` on the inputs ``model``'s own layers see for ``example`` ``(B, C, T, H, W)``.

    One row per kind of layer and channel count (pointwise, depthwise, dense; at most
    ``max_layers``, first found first): ``layer``, ``kind``, ``fp32_ms``, ``int8_ms`` (the int8 kernel on an
    already-quantized input: quantizing the input costs extra).
    """
    import torch.ao.nn.quantized as nnq

    from vidlab.compress.latency import measure_latency

    chosen: dict[str, tuple[str, nn.Conv3d]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv3d) and len(chosen) < max_layers:
            chosen.setdefault(f"{_conv_kind(module)} {module.in_channels}->{module.out_channels}", (name, module))
    inputs: dict[str, torch.Tensor] = {}

    def keep(key: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            inputs.setdefault(key, args[0].detach())
        return hook

    hooks = [m.register_forward_hook(keep(k)) for k, (_, m) in chosen.items()]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    engine = torch.backends.quantized.engine
    if "fbgemm" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "fbgemm"
    rows = []
    try:
        for kind, (name, conv) in chosen.items():
            x = inputs[kind]
            w = conv.weight.detach()
            w_scale = torch.clamp(w.abs().amax(dim=(1, 2, 3, 4)) / 127.0, min=1e-8)
            qweight = torch.quantize_per_channel(w, w_scale.double(), torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
            qconv = nnq.Conv3d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                               padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)
            qconv.set_weight_bias(qweight, None if conv.bias is None else conv.bias.detach())
            with torch.no_grad():
                y = conv(x)
            out_scale, out_zp = affine_qparams(y, qmin=0, qmax=255)
            qconv.scale, qconv.zero_point = float(out_scale), int(out_zp)
            s, z = affine_qparams(x, qmin=0, qmax=255)
            xq = torch.quantize_per_tensor(x, float(s), int(z), torch.quint8)
            fp32 = measure_latency(conv, x, repeats=repeats, threads=threads)
            int8 = measure_latency(qconv, xq, repeats=repeats, threads=threads)
            rows.append({"layer": name, "kind": kind, "input": "x".join(map(str, x.shape)),
                         "fp32_ms": fp32.median_ms, "int8_ms": int8.median_ms})
    finally:
        torch.backends.quantized.engine = engine
    return rows
