"""Export paths from one model: ``torch.export``, AOTInductor, ONNX Runtime, ``torch.compile``.

Every path takes the same input as the eager model, a batch of NORMALISED clips
``(B, C, T, H, W)`` float32, and returns logits ``(B, num_classes)``:

* **torch.export** (``.pt2``): the model's graph as an ``ExportedProgram``, saved and reloaded
  without the model's Python code. It runs the same ATen kernels as eager, so it is as fast.
* **AOTInductor** (``*_aoti.pt2``): the exported graph compiled ahead of time by Inductor into a
  shared library (weights inside); loading it runs no Python model code and no compiler. A
  package holds native code: load only packages you built or trust.
* **ONNX** (``.onnx``): ``torch.onnx.export(..., dynamo=True)``, run with ONNX Runtime.
* **torch.compile**: Inductor just in time, in this process (nothing to save); ``freezing``
  folds the weights in as constants, which lets it pre-pack them for the CPU kernels.

Each file carries the deployment metadata (:func:`deploy_info`: class names, normalisation,
clip geometry) so ``python -m vidlab predict`` needs nothing else (:mod:`vidlab.infer.runtime`).
The batch dimension is dynamic (1 to ``max_batch``) for every saved path.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "META_KEY",
    "ExportPath",
    "deploy_info",
    "export_program",
    "compile_aoti",
    "export_onnx",
    "compile_model",
    "build_paths",
    "max_abs_diff",
]

META_KEY = "vidlab.json"  # name of the metadata entry in every exported file
PATHS = ("eager", "torch.export", "torch.compile", "aoti", "onnx")


@dataclass
class ExportPath:
    """One way of running the model: ``fn(clips) -> logits``, where it lives, what it cost to build."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    path: Path | None
    build_s: float
    size_bytes: int | None
    dynamic_batch: bool

    @property
    def size_mb(self) -> float:
        return float("nan") if self.size_bytes is None else self.size_bytes / 2**20


def deploy_info(info: Any = None, **overrides: Any) -> dict[str, Any]:
    """The metadata every exported file carries, from a :class:`~vidlab.models.ModelInfo` (or keywords):
    ``name``, ``class_names``, ``mean``, ``std``, ``num_frames``, ``img_size``, ``frame_stride``."""
    keys = ("name", "class_names", "mean", "std", "num_frames", "img_size", "frame_stride")
    meta = {k: getattr(info, k) for k in keys if info is not None and hasattr(info, k)}
    meta.update(overrides)
    missing = [k for k in keys if meta.get(k) is None and k != "class_names"]
    if missing:
        raise ValueError(f"deploy_info: missing {', '.join(missing)} (pass a ModelInfo or keywords)")
    meta["mean"], meta["std"] = [float(v) for v in meta["mean"]], [float(v) for v in meta["std"]]
    return meta


def _file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) if path.exists() else 0


def _batch_dims(dynamic_batch: bool, max_batch: int) -> tuple[dict[int, Any], ...] | None:
    if not dynamic_batch:
        return None
    return ({0: torch.export.Dim("batch", min=1, max=max_batch)},)


def export_program(model: nn.Module, example: torch.Tensor, path: str | os.PathLike | None = None, *,
                   meta: Mapping[str, Any] | None = None, dynamic_batch: bool = True,
                   max_batch: int = 64) -> torch.export.ExportedProgram:
    """``torch.export`` the eval-mode ``model`` on ``example`` clips ``(B, C, T, H, W)``; save it to
    ``path`` (a ``.pt2``) with ``meta`` as the ``vidlab.json`` extra file when given."""
    model = model.eval()
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=_batch_dims(dynamic_batch, max_batch))
    if path is not None:
        extra = {META_KEY: json.dumps(dict(meta or {}))}
        torch.export.save(program, Path(path), extra_files=extra)
    return program


def compile_aoti(program: torch.export.ExportedProgram, path: str | os.PathLike, *,
                 meta: Mapping[str, Any] | None = None, freezing: bool = True) -> Path:
    """Compile an ``ExportedProgram`` with AOTInductor into the package ``path`` (must end in ``.pt2``).

    ``freezing`` lets Inductor treat the weights as constants (pre-packed for the CPU kernels).
    ``meta`` is stored in the package (``AOTICompiledModel.get_metadata()["vidlab.json"]``).
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"compile_aoti: an AOTInductor package must end in .pt2, got {path}")
    configs = {"freezing": freezing, "aot_inductor.compile_wrapper_opt_level": "O0",
               "aot_inductor.metadata": {META_KEY: json.dumps(dict(meta or {}))}}
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=configs))


def export_onnx(program_or_model: torch.export.ExportedProgram | nn.Module, example: torch.Tensor,
                path: str | os.PathLike, *, meta: Mapping[str, Any] | None = None, dynamic_batch: bool = True,
                max_batch: int = 64) -> Path:
    """``torch.onnx.export(..., dynamo=True)`` to one ``.onnx`` file (weights inside), input ``clips``,
    output ``logits``, ``meta`` in the model's ``metadata_props`` under ``vidlab.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = None
    if isinstance(program_or_model, nn.Module):
        program_or_model = program_or_model.eval()
        dynamic = _batch_dims(dynamic_batch, max_batch)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates each step
        onnx_program = torch.onnx.export(program_or_model, (example,), dynamo=True, dynamic_shapes=dynamic,
                                         input_names=["clips"], output_names=["logits"], verbose=False)
    proto = onnx_program.model
    proto.metadata_props[META_KEY] = json.dumps(dict(meta or {}))
    onnx_program.save(str(path), external_data=False)
    return path


def compile_model(model: nn.Module, *, freezing: bool = True, mode: str | None = None,
                  dynamic: bool | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` for inference (Inductor). Compilation happens at the first call per shape."""
    options = {"freezing": True} if freezing else None
    if mode is not None and options is not None:  # torch.compile takes mode OR options
        compiled = torch.compile(model.eval(), mode=mode, dynamic=dynamic)
    else:
        compiled = torch.compile(model.eval(), options=options, dynamic=dynamic)
    return compiled


def max_abs_diff(fn: Callable[[torch.Tensor], torch.Tensor], reference: Callable[[torch.Tensor], torch.Tensor],
                 clips: torch.Tensor) -> float:
    """``max |fn(clips) - reference(clips)|`` over every logit of the batch ``(B, C, T, H, W)``."""
    with torch.inference_mode():
        return float((fn(clips).float() - reference(clips).float()).abs().max())


def build_paths(model: nn.Module, example: torch.Tensor, out_dir: str | os.PathLike, *,
                meta: Mapping[str, Any], paths: Sequence[str] = PATHS, warm_batches: Sequence[int] = (1, 8),
                max_batch: int = 64, dynamic_compile: bool = False, stem: str = "model",
                progress: bool = True) -> dict[str, ExportPath]:
    """Build every path in ``paths`` from the eval-mode ``model`` and load it back from its file.

    ``example`` is one batch of clips ``(B, C, T, H, W)`` used for tracing. Files go to
    ``out_dir``: ``{stem}.pt2`` (torch.export), ``{stem}_aoti.pt2`` (AOTInductor), ``{stem}.onnx``.
    ``build_s`` counts exporting / compiling and, for ``torch.compile``, the first call at each of
    ``warm_batches`` (that is when it compiles): one graph per batch size, or with
    ``dynamic_compile`` one graph with a symbolic batch size (less compiling, often slower code;
    batch 1 still gets its own graph). Returns ``{name: ExportPath}`` in ``paths`` order.
    """
    from tqdm.auto import tqdm

    from vidlab.infer.runtime import load_runtime

    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        raise ValueError(f"build_paths: unknown paths {unknown}; choose from {', '.join(PATHS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    built: dict[str, ExportPath] = {}
    program = None
    bar = tqdm(list(paths), desc="building export paths", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        if name == "eager":
            built[name] = ExportPath(name, model, None, 0.0, None, True)
            continue
        if name == "torch.compile":
            fn = compile_model(model, dynamic=True if dynamic_compile else None)
            with torch.inference_mode():
                for b in warm_batches:
                    fn(example[:1].expand(b, *example.shape[1:]).contiguous())
            built[name] = ExportPath(name, fn, None, time.perf_counter() - start, None, True)
            continue
        if program is None or name == "torch.export":
            pt2 = out_dir / f"{stem}.pt2"
            program = export_program(model, example, pt2, meta=meta, max_batch=max_batch)
            if name == "torch.export":
                runtime = load_runtime(pt2)
                built[name] = ExportPath(name, runtime, pt2, time.perf_counter() - start, _file_size(pt2), True)
                continue
            start = time.perf_counter()  # export time is charged to torch.export
        if name == "aoti":
            target = compile_aoti(program, out_dir / f"{stem}_aoti.pt2", meta=meta)
        else:
            target = export_onnx(program, example, out_dir / f"{stem}.onnx", meta=meta)
        runtime = load_runtime(target, threads=torch.get_num_threads())  # ONNX Runtime: as many threads as torch
        built[name] = ExportPath(name, runtime, target, time.perf_counter() - start, _file_size(target), True)
    return built
