"""Load any deployable model file and call it the same way: ``runtime(clips) -> logits``.

:func:`load_runtime` recognises four kinds of file by their contents, not their names:

* ``vidlab`` - a :func:`vidlab.models.save_model` file (weights + how to rebuild the model);
* ``torch.export`` - a ``.pt2`` ``ExportedProgram`` (:func:`torch.export.save`);
* ``aoti`` - an AOTInductor package (a ``.pt2`` holding a compiled shared library: native code,
  so load only packages you built or trust);
* ``onnx`` - an ``.onnx`` model, run with ONNX Runtime.

Every runtime takes NORMALISED clips ``(B, C, T, H, W)`` float32 and returns logits
``(B, num_classes)`` on the CPU, and carries ``meta`` (:func:`vidlab.infer.export.deploy_info`:
class names, mean / std, clip geometry) for preprocessing.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from vidlab.infer.export import META_KEY

__all__ = ["Runtime", "ModelFileError", "detect_kind", "load_runtime"]

KINDS = ("vidlab", "torch.export", "aoti", "onnx")


class ModelFileError(ValueError):
    """A model file that cannot be recognised or loaded; names the file and the reason."""

    def __init__(self, path: Any, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def detect_kind(path: str | os.PathLike) -> str:
    """Which of ``vidlab``, ``torch.export``, ``aoti``, ``onnx`` the file is (from its contents)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "no such model file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any("/data/aotinductor/" in n for n in names):
            return "aoti"
        if any(n.endswith("/archive_format") for n in names) and any("/models/" in n for n in names):
            return "torch.export"
        if any(n.endswith("/data.pkl") for n in names):
            return "vidlab"
        raise ModelFileError(path, "a zip archive that is neither a vidlab model, an ExportedProgram nor an AOTInductor package")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":  # ONNX protobuf: field 1 (ir_version), varint
        return "onnx"
    raise ModelFileError(path, "not a vidlab model, .pt2 ExportedProgram, AOTInductor package or .onnx file")


class Runtime:
    """A loaded model file: ``runtime(clips) -> logits``; ``kind``, ``path``, ``meta``, ``device``."""

    def __init__(self, fn: Any, kind: str, path: Path, meta: dict[str, Any], device: torch.device) -> None:
        self._fn, self.kind, self.path, self.meta, self.device = fn, kind, path, meta, device

    @property
    def class_names(self) -> list[str] | None:
        return self.meta.get("class_names")

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.ndim != 5:
            raise ValueError(f"{self.path}: expected clips (B, C, T, H, W), got shape {tuple(clips.shape)}")
        return self._fn(clips)

    def __repr__(self) -> str:
        return f"Runtime(kind={self.kind!r}, path={str(self.path)!r}, device={self.device})"


class _OnnxFn:
    def __init__(self, path: Path, threads: int | None, device: torch.device) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        array = clips.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


def _json(text: Any, path: Path) -> dict[str, Any]:
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelFileError(path, f"its {META_KEY} metadata is not valid JSON ({err})") from None


def load_runtime(path: str | os.PathLike, *, device: str | torch.device = "cpu", threads: int | None = None) -> Runtime:
    """Load a model file of any kind in :data:`KINDS` as a :class:`Runtime` on ``device``.

    ``threads`` sets ONNX Runtime's intra-op threads (torch paths use ``torch.set_num_threads``).
    Raises :class:`ModelFileError` naming the file when it cannot be recognised or loaded.
    """
    path = Path(path)
    device = torch.device(device)
    kind = detect_kind(path)
    try:
        if kind == "vidlab":
            from vidlab.infer.export import deploy_info
            from vidlab.models import load_model

            model, info = load_model(path, map_location=device, with_info=True)
            return Runtime(model, kind, path, deploy_info(info), device)
        if kind == "torch.export":
            extra = {META_KEY: ""}
            try:
                program = torch.export.load(path, extra_files=extra)
            except RuntimeError:  # e.g. a PT2E int8 program: its quantize ops live in torchao
                import torchao.quantization.pt2e  # noqa: F401  (registers them)

                program = torch.export.load(path, extra_files=extra)
            module = program.module()
            if device.type != "cpu":
                module = module.to(device)
            return Runtime(module, kind, path, _json(extra[META_KEY], path), device)
        if kind == "aoti":
            compiled = torch._inductor.aoti_load_package(str(path), device_index=device.index if device.index is not None else -1)
            meta = _json(compiled.get_metadata().get(META_KEY), path)
            return Runtime(compiled, kind, path, meta, device)
        fn = _OnnxFn(path, threads, device)
        meta = _json(fn.session.get_modelmeta().custom_metadata_map.get(META_KEY), path)
        return Runtime(fn, kind, path, meta, device)
    except ModelFileError:
        raise
    except Exception as err:  # a damaged or foreign file: say which and why
        raise ModelFileError(path, f"cannot load as {kind}: {type(err).__name__}: {err}") from None
