"""vidlab model zoo: a timm-style registry of video models taking ``(B, C, T, H, W)`` float clips.

    >>> import vidlab.models as vm
    >>> vm.list_models("x3d_*")
    >>> model = vm.create_model("x3d_xs", num_classes=10)

Families: X3D (``x3d_*``), video ViT with tubelet embedding (``vit_*``), torchvision's video
models under their torchvision names (``r3d_18``, ``r2plus1d_18``, ``s3d``, ...), timm image
backbones lifted to video (``tsn_*``, ``tsm_*``, ``i3d_*``), online (causal) TSM (``tsm_online_*``); ``test_*`` / ``vit_test`` are tiny.
Every model maps ``(B, C, T, H, W)`` float clips to ``(B, num_classes)`` logits.
"""
from __future__ import annotations

from vidlab.models.registry import (
    UnknownModelError,
    create_model,
    is_model,
    list_models,
    register_model,
)
from vidlab.models.flops import count_macs, count_params
from vidlab.models.saving import ModelInfo, Normalized, load_model, read_model_info, save_model
from vidlab.models.weights import PretrainedWeightsError, PretrainedWeightsNotFoundError, load_pretrained

# Importing the family modules registers their models.
from vidlab.models import x3d as x3d  # noqa: E402
from vidlab.models import vit as vit  # noqa: E402
from vidlab.models import torchvision_models as torchvision_models  # noqa: E402
from vidlab.models import lifted as lifted  # noqa: E402
from vidlab.models import cnn3d as cnn3d  # noqa: E402
from vidlab.models import online_tsm as online_tsm  # noqa: E402
from vidlab.models.x3d import X3D
from vidlab.models.vit import VideoViT
from vidlab.models.lifted import I3D, TSM, TSN, TemporalShift, inflate_2d_to_3d, temporal_shift
from vidlab.models.online_tsm import OnlineTSM
from vidlab.models.torchvision_models import TorchvisionVideoModel

__all__ = [
    "I3D",
    "ModelInfo",
    "Normalized",
    "OnlineTSM",
    "PretrainedWeightsError",
    "PretrainedWeightsNotFoundError",
    "TSM",
    "TSN",
    "TemporalShift",
    "TorchvisionVideoModel",
    "UnknownModelError",
    "VideoViT",
    "X3D",
    "count_macs",
    "count_params",
    "create_model",
    "inflate_2d_to_3d",
    "is_model",
    "list_models",
    "load_model",
    "load_pretrained",
    "read_model_info",
    "register_model",
    "save_model",
    "temporal_shift",
]
