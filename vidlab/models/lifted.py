"""timm image backbones lifted to video: TSN, TSM and I3D inflation.

* **TSN** (Wang et al. 2016): run the 2D backbone on every frame, average over time, classify.
  Averaging features before the linear classifier equals TSN's average of per-frame scores.
* **TSM** (Lin et al. 2019): TSN plus a zero-cost temporal shift in the residual branch of every
  ResNet block: 1/8 of the channels take the next frame's values, 1/8 the previous frame's
  (zero at the clip ends), the rest stay; the shortcut is not shifted.
* **I3D inflation** (Carreira & Zisserman 2017): every Conv2d becomes a Conv3d whose weights are the
  2D kernel repeated ``kt`` times over time and divided by ``kt``. Temporal padding replicates the
  edge frames, so on a "boring" video (one frame repeated) the inflated network computes exactly
  what the 2D network computes on that frame, at every time step.

The backbone is any timm ResNet (``resnet18`` default; ``test_resnet`` for tests). 2D weights
(``backbone_checkpoint=``, a timm ``.safetensors``/``.pth`` file) are loaded into the 2D model
before it is lifted. ``forward_features`` returns ``(B, F, T, h, w)`` for all three.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from vidlab.models.registry import register_model
from vidlab.models.weights import (
    PretrainedWeightsError,
    load_state_dict_file,
    register_backbone_source,
    timm_cached_weights,
)

__all__ = ["TSN", "TSM", "I3D", "TemporalShift", "temporal_shift", "inflate_2d_to_3d", "InflatedConv3d",
           "small_input_stem_"]


# ----------------------------------------------------------------------------- backbone helpers

def small_input_stem_(resnet: nn.Module) -> nn.Module:
    """Drop a timm ResNet's stem max-pool (in place), as ResNets for tiny (CIFAR-size) images do:
    feature maps keep twice the resolution. Returns ``resnet``."""
    if not isinstance(getattr(resnet, "maxpool", None), nn.MaxPool2d):
        raise ValueError(f"small_input_stem needs a timm ResNet with a stem max-pool; {type(resnet).__name__} has none")
    resnet.maxpool = nn.Identity()
    return resnet


def _create_backbone(backbone: str | nn.Module, backbone_checkpoint: str | os.PathLike | None,
                     small_input_stem: bool = False) -> nn.Module:
    """A timm model without classifier (``num_classes=0``), 2D weights loaded from a local file if given;
    ``small_input_stem`` drops its stem max-pool (:func:`small_input_stem_`)."""
    if isinstance(backbone, nn.Module):
        if backbone_checkpoint is not None:
            raise ValueError("backbone_checkpoint only applies when backbone is a timm model name")
        return small_input_stem_(backbone) if small_input_stem else backbone
    model = timm.create_model(backbone, pretrained=False, num_classes=0)
    if small_input_stem:
        small_input_stem_(model)
    if backbone_checkpoint is not None:
        path = Path(backbone_checkpoint)
        state = load_state_dict_file(path)
        classifier = model.pretrained_cfg.get("classifier", "fc")
        state = {k: v for k, v in state.items() if not (k == classifier or k.startswith(classifier + "."))}
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise PretrainedWeightsError(
                f"{path} does not fit timm backbone {backbone!r}: missing {result.missing_keys[:8]}, "
                f"unexpected {result.unexpected_keys[:8]}"
            )
    return model


def _frames_to_batch(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(B, C, T, H, W)`` -> ``(B*T, C, H, W)`` (frames of a clip adjacent), and ``T``.

    The frames are laid out channels-last (NHWC) in memory, the layout oneDNN and cuDNN run 2D
    convolutions fastest in (``benchmarks/training.py`` measures it).
    """
    if x.ndim != 5:
        raise ValueError(f"expected a clip batch (B, C, T, H, W), got shape {tuple(x.shape)}")
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w).contiguous(memory_format=torch.channels_last), t


def _batch_to_clip(y: torch.Tensor, t: int) -> torch.Tensor:
    """``(B*T, F, h, w)`` -> ``(B, F, T, h, w)``."""
    bt, f, h, w = y.shape
    return y.reshape(bt // t, t, f, h, w).transpose(1, 2)


class _LiftedBase(nn.Module):
    """Shared head: global mean over ``(T, h, w)`` -> dropout -> linear classifier."""

    def _init_head(self, num_features: int, num_classes: int, drop_rate: float, num_frames: int,
                   img_size: int, arch: str, backbone_name: str) -> None:
        self.num_features = num_features
        self.num_classes = num_classes
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()
        cfg = getattr(self.backbone, "pretrained_cfg", {}) or {}
        self.default_cfg = {
            "architecture": arch,
            "backbone": backbone_name,
            "num_frames": num_frames,
            "img_size": img_size,
            "in_chans": 3,
            "classifier": "fc",
            "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        }

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, F, T, h, w)`` -> ``(B, num_classes)`` (``(B, F)`` if ``pre_logits``)."""
        x = self.head_drop(feats.mean(dim=(2, 3, 4)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Fresh ``Linear(num_features, num_classes)`` (0 -> Identity)."""
        self.num_classes = num_classes
        device = next(self.backbone.parameters()).device
        self.fc = nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()


# ----------------------------------------------------------------------------------------- TSN

class TSN(_LiftedBase):
    """Temporal Segment Network: per-frame 2D features averaged over time.

    ``forward``: ``(B, 3, T, H, W)`` -> ``(B, num_classes)``.
    """

    def __init__(self, backbone: str | nn.Module = "resnet18", num_classes: int = 400, drop_rate: float = 0.5,
                 num_frames: int = 8, img_size: int = 224, backbone_checkpoint: str | os.PathLike | None = None,
                 small_input_stem: bool = False) -> None:
        super().__init__()
        self.backbone = _create_backbone(backbone, backbone_checkpoint, small_input_stem)
        name = backbone if isinstance(backbone, str) else type(backbone).__name__
        self._init_head(self.backbone.num_features, num_classes, drop_rate, num_frames, img_size, "tsn", name)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> per-frame feature maps ``(B, F, T, h, w)``."""
        frames, t = _frames_to_batch(x)
        return _batch_to_clip(self.backbone.forward_features(frames), t)


# ----------------------------------------------------------------------------------------- TSM

def temporal_shift(x: torch.Tensor, num_segments: int, fold_div: int = 8) -> torch.Tensor:
    """Shift channels along time (Lin et al. 2019). ``x``: ``(B*T, C, H, W)`` with the T frames of a clip adjacent.

    Channels ``[0, C/fold_div)`` take the value of the NEXT frame (zero at the last frame),
    channels ``[C/fold_div, 2C/fold_div)`` the PREVIOUS frame (zero at the first), the rest are kept.
    """
    bt, c, h, w = x.shape
    if bt % num_segments:
        raise ValueError(f"temporal_shift: batch*time {bt} is not a multiple of num_segments={num_segments}")
    x = x.view(bt // num_segments, num_segments, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]  # from the future
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]  # from the past
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return out.view(bt, c, h, w)


class TemporalShift(nn.Module):
    """Wraps a layer so its input is temporally shifted first (``net`` keeps the wrapped conv).

    ``num_segments`` (frames per clip) is set by :class:`TSM` before each forward.
    """

    def __init__(self, net: nn.Module, num_segments: int = 8, fold_div: int = 8) -> None:
        super().__init__()
        self.net = net
        self.num_segments = num_segments
        self.fold_div = fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(temporal_shift(x, self.num_segments, self.fold_div))

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, fold_div={self.fold_div}"


def insert_temporal_shift(resnet: nn.Module, num_segments: int, fold_div: int = 8) -> int:
    """Put a :class:`TemporalShift` before ``conv1`` of every timm ResNet block (residual branch only).

    Returns the number of blocks changed; raises if the model has no timm ResNet blocks.
    """
    count = 0
    for module in resnet.modules():
        if isinstance(module, (BasicBlock, Bottleneck)) and not isinstance(module.conv1, TemporalShift):
            module.conv1 = TemporalShift(module.conv1, num_segments, fold_div)
            count += 1
    if count == 0:
        raise ValueError(f"TSM needs a timm ResNet backbone (BasicBlock/Bottleneck); got {type(resnet).__name__}")
    return count


class TSM(TSN):
    """Temporal Shift Module network: TSN on a ResNet whose blocks shift 2/8 of their channels in time."""

    def __init__(self, backbone: str | nn.Module = "resnet18", num_classes: int = 400, drop_rate: float = 0.5,
                 num_frames: int = 8, img_size: int = 224, fold_div: int = 8,
                 backbone_checkpoint: str | os.PathLike | None = None, small_input_stem: bool = False) -> None:
        super().__init__(backbone, num_classes, drop_rate, num_frames, img_size, backbone_checkpoint, small_input_stem)
        self.num_shifted_blocks = insert_temporal_shift(self.backbone, num_frames, fold_div)
        self.default_cfg["architecture"] = "tsm"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, F, T, h, w)``; the shift uses this clip's ``T``."""
        frames, t = _frames_to_batch(x)
        for m in self.backbone.modules():
            if isinstance(m, TemporalShift):
                m.num_segments = t
        return _batch_to_clip(self.backbone.forward_features(frames), t)


# ------------------------------------------------------------------------------ I3D inflation

class InflatedConv3d(nn.Conv3d):
    """Conv3d whose temporal padding replicates the edge frames (spatial padding stays zeros)."""

    def __init__(self, *args, temporal_pad: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.temporal_pad = temporal_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal_pad:
            x = F.pad(x, (0, 0, 0, 0, self.temporal_pad, self.temporal_pad), mode="replicate")
        return super().forward(x)


def _inflate_conv(conv: nn.Conv2d, time_kernel: int) -> InflatedConv3d:
    if isinstance(conv.padding, str):
        raise ValueError(f"cannot inflate a Conv2d with padding={conv.padding!r}")
    if time_kernel % 2 == 0:
        raise ValueError(f"temporal kernel must be odd to keep T, got {time_kernel}")
    conv3d = InflatedConv3d(
        conv.in_channels, conv.out_channels,
        kernel_size=(time_kernel, *conv.kernel_size), stride=(1, *conv.stride),
        padding=(0, *conv.padding), dilation=(1, *conv.dilation), groups=conv.groups,
        bias=conv.bias is not None, padding_mode=conv.padding_mode, temporal_pad=time_kernel // 2,
        device=conv.weight.device, dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        conv3d.weight.copy_(conv.weight.unsqueeze(2).repeat(1, 1, time_kernel, 1, 1) / time_kernel)
        if conv.bias is not None:
            conv3d.bias.copy_(conv.bias)
    return conv3d


def _inflate_bn(bn: nn.BatchNorm2d) -> nn.BatchNorm3d:
    bn3d = nn.BatchNorm3d(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                          track_running_stats=bn.track_running_stats,
                          device=bn.weight.device if bn.affine else None)
    bn3d.load_state_dict(bn.state_dict())
    return bn3d


def _inflate_module(module: nn.Module, time_kernel: int) -> nn.Module | None:
    """The 3D counterpart of a 2D layer, ``None`` if it works unchanged on 5D tensors."""
    if isinstance(module, nn.Conv2d):
        return _inflate_conv(module, time_kernel)
    if isinstance(module, nn.BatchNorm2d):
        return _inflate_bn(module)
    if isinstance(module, nn.MaxPool2d):
        k, s, p, d = (nn.modules.utils._pair(v) for v in (module.kernel_size, module.stride or module.kernel_size,
                                                          module.padding, module.dilation))
        return nn.MaxPool3d((1, *k), (1, *s), (0, *p), (1, *d), ceil_mode=module.ceil_mode)
    if isinstance(module, nn.AvgPool2d):
        k, s, p = (nn.modules.utils._pair(v) for v in (module.kernel_size, module.stride or module.kernel_size,
                                                       module.padding))
        return nn.AvgPool3d((1, *k), (1, *s), (0, *p), ceil_mode=module.ceil_mode,
                            count_include_pad=module.count_include_pad)
    return None


_ELEMENTWISE_OK = (nn.ReLU, nn.SiLU, nn.GELU, nn.Identity, nn.Sequential, nn.ModuleList, nn.Dropout, BasicBlock, Bottleneck)


def inflate_2d_to_3d(model: nn.Module, stem_time_kernel: int = 5, block_time_kernel: int = 3,
                     stem_conv: str = "conv1") -> nn.Module:
    """I3D inflation of a timm ResNet (in place; pass a copy to keep the 2D model).

    The first stem conv gets a ``stem_time_kernel`` temporal kernel, ``conv1`` of every residual
    block ``block_time_kernel``, all other convs 1; pools get temporal size/stride 1; BatchNorm2d
    becomes BatchNorm3d with the same statistics. Raises for layers it cannot inflate.
    """
    first_conv = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None or not first_conv.startswith(stem_conv):
        raise ValueError(f"expected the first conv of the backbone under {stem_conv!r}, got {first_conv!r}")
    block_convs = {f"{n}.conv1" for n, m in model.named_modules() if isinstance(m, (BasicBlock, Bottleneck))}
    unsupported = []
    for name, module in list(model.named_modules()):
        if not name:
            continue
        if name == first_conv:
            time_kernel = stem_time_kernel
        elif name in block_convs:
            time_kernel = block_time_kernel
        else:
            time_kernel = 1
        new = _inflate_module(module, time_kernel)
        if new is not None:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, new)
        elif not isinstance(module, _ELEMENTWISE_OK) and not list(module.children()) and any(
            p for p in module.parameters(recurse=False)
        ):
            unsupported.append(f"{name} ({type(module).__name__})")
    if unsupported:
        raise ValueError(f"inflate_2d_to_3d: do not know how to inflate {', '.join(unsupported)}")
    return model


class I3D(_LiftedBase):
    """Inflated 3D ResNet from a timm 2D ResNet. ``forward``: ``(B, 3, T, H, W)`` -> ``(B, num_classes)``.

    ``backbone`` may be a timm name or an existing 2D timm ResNet (it is deep-copied, then inflated).
    """

    def __init__(self, backbone: str | nn.Module = "resnet18", num_classes: int = 400, drop_rate: float = 0.5,
                 num_frames: int = 8, img_size: int = 224, stem_time_kernel: int = 5, block_time_kernel: int = 3,
                 backbone_checkpoint: str | os.PathLike | None = None, small_input_stem: bool = False) -> None:
        super().__init__()
        if isinstance(backbone, nn.Module):
            backbone = copy.deepcopy(backbone)  # the caller's 2D model stays as it is
        source = _create_backbone(backbone, backbone_checkpoint, small_input_stem)
        source.reset_classifier(0, global_pool="")  # we pool over (T, H, W) ourselves
        self.backbone = inflate_2d_to_3d(source, stem_time_kernel, block_time_kernel)
        name = backbone if isinstance(backbone, str) else type(backbone).__name__
        self._init_head(self.backbone.num_features, num_classes, drop_rate, num_frames, img_size, "i3d", name)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, F, T, h, w)`` (time is never strided).

        The clip is laid out channels-last (NDHWC) in memory, where oneDNN's 3D convolutions run
        faster.
        """
        if x.ndim != 5:
            raise ValueError(f"expected a clip batch (B, C, T, H, W), got shape {tuple(x.shape)}")
        return self.backbone.forward_features(x.contiguous(memory_format=torch.channels_last_3d))


# ------------------------------------------------------------------------------ registration

def _register(name: str, cls: type, backbone: str, num_frames: int, img_size: int, default_classes: int) -> None:
    def entry(num_classes: int = default_classes, **kwargs) -> nn.Module:
        kwargs = {"backbone": backbone, "num_frames": num_frames, "img_size": img_size, **kwargs}
        return cls(num_classes=num_classes, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"{cls.__name__} on timm ``{backbone}`` (override with ``backbone=``); default clips "
                     f"{num_frames}x{img_size}x{img_size}.")
    register_model(entry)
    register_backbone_source(name, lambda backbone=backbone, **_: timm_cached_weights(backbone))


for _cls, _prefix in ((TSN, "tsn"), (TSM, "tsm"), (I3D, "i3d")):
    _register(f"{_prefix}_resnet18", _cls, "resnet18", 8, 224, 400)
    _register(f"{_prefix}_resnet10t", _cls, "resnet10t", 8, 112, 400)
    _register(f"test_{_prefix}", _cls, "test_resnet", 4, 32, 10)
