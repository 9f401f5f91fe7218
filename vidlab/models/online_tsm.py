"""Online TSM: a Temporal Shift Module network whose shift looks only at the PAST.

The offline TSM (:mod:`vidlab.models.lifted`) mixes every frame with the previous AND the next
one, so it needs the whole clip before it can say anything. The online variant (Lin et al.
2019, section 4 "online video understanding") shifts ``1/fold_div`` of the channels of every
residual block from the previous frame only. Frame ``t``'s features then depend on frames
``<= t``: the model is *causal*, and it can run on a live stream one frame at a time. The
channels each block would have taken from the previous frame are exactly what that block saw
at the previous step, so keeping them (one small tensor per block) is the whole temporal
cache.

Two ways to run the same weights:

* clip mode, ``model(clips)``: ``(B, 3, T, H, W)`` -> ``(B, num_classes)``, like any vidlab
  model (training, export, the window baseline);
* stream mode, :meth:`OnlineTSM.reset_stream` then :meth:`OnlineTSM.stream_features` per frame
  ``(B, 3, H, W)`` -> pooled per-frame features ``(B, F)``; :class:`vidlab.infer.streaming.OnlineStream`
  averages the last ``window`` of them and classifies.
"""
from __future__ import annotations

import os

import torch
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from vidlab.models.lifted import TSN, _batch_to_clip, _frames_to_batch
from vidlab.models.registry import register_model

__all__ = ["OnlineTSM", "CausalTemporalShift", "causal_temporal_shift"]


def causal_temporal_shift(x: torch.Tensor, num_segments: int, fold_div: int = 8) -> torch.Tensor:
    """Shift ``C // fold_div`` channels forward in time by one frame (from the past only).

    ``x``: ``(B*T, C, H, W)`` with the ``T`` frames of a clip adjacent. Channels
    ``[0, C/fold_div)`` of frame ``t`` take the values of frame ``t-1`` (zeros at ``t = 0``);
    the other channels are kept.
    """
    bt, c, h, w = x.shape
    if bt % num_segments:
        raise ValueError(f"causal_temporal_shift: batch*time {bt} is not a multiple of num_segments={num_segments}")
    x = x.view(bt // num_segments, num_segments, c, h, w)
    fold = c // fold_div
    past = torch.cat([torch.zeros_like(x[:, :1, :fold]), x[:, :-1, :fold]], dim=1)
    return torch.cat([past, x[:, :, fold:]], dim=2).view(bt, c, h, w)


class CausalTemporalShift(nn.Module):
    """Wraps a block's first conv so its input is causally shifted first.

    Clip mode (``streaming=False``): shift within clips of ``num_segments`` frames.
    Stream mode: ``x`` is ONE frame per stream ``(B, C, H, W)``; the shifted channels come from
    ``cache`` (the previous frame's, zeros at the start) and the cache keeps this frame's.
    """

    def __init__(self, net: nn.Module, num_segments: int = 8, fold_div: int = 8) -> None:
        super().__init__()
        self.net = net
        self.num_segments = num_segments
        self.fold_div = fold_div
        self.streaming = False
        self.cache: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.streaming:
            return self.net(causal_temporal_shift(x, self.num_segments, self.fold_div))
        fold = x.shape[1] // self.fold_div
        previous = self.cache if self.cache is not None else torch.zeros_like(x[:, :fold])
        self.cache = x[:, :fold].detach().clone()
        return self.net(torch.cat([previous, x[:, fold:]], dim=1))

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, fold_div={self.fold_div}, causal=True"


class OnlineTSM(TSN):
    """TSN on a timm ResNet whose residual blocks shift ``1/fold_div`` of their channels from the previous frame.

    ``small_input_stem=True`` drops the stem max-pool (for tiny frames, as CIFAR ResNets do).
    ``forward``: ``(B, 3, T, H, W)`` -> ``(B, num_classes)``; ``forward_features`` -> ``(B, F, T, h, w)``.
    """

    def __init__(self, backbone: str = "resnet18", num_classes: int = 400, drop_rate: float = 0.5,
                 num_frames: int = 16, img_size: int = 224, fold_div: int = 8, small_input_stem: bool = False,
                 backbone_checkpoint: str | os.PathLike | None = None) -> None:
        super().__init__(backbone, num_classes, drop_rate, num_frames, img_size, backbone_checkpoint)
        if small_input_stem:
            if not isinstance(getattr(self.backbone, "maxpool", None), nn.MaxPool2d):
                raise ValueError(f"OnlineTSM: small_input_stem needs a stem max-pool; {backbone!r} has none")
            self.backbone.maxpool = nn.Identity()
        self.shifts: list[CausalTemporalShift] = []
        for module in self.backbone.modules():
            if isinstance(module, (BasicBlock, Bottleneck)):
                module.conv1 = CausalTemporalShift(module.conv1, num_frames, fold_div)
                self.shifts.append(module.conv1)
        if not self.shifts:
            raise ValueError(f"OnlineTSM needs a timm ResNet backbone (BasicBlock/Bottleneck); got {backbone!r}")
        self.default_cfg["architecture"] = "tsm_online"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, F, T, h, w)``; frame ``t``'s features see frames ``<= t`` only."""
        frames, t = _frames_to_batch(x)
        for shift in self.shifts:
            shift.streaming = False
            shift.num_segments = t
        return _batch_to_clip(self.backbone.forward_features(frames), t)

    def reset_stream(self) -> None:
        """Start a new stream: empty every block's cache (the next frame is a first frame)."""
        for shift in self.shifts:
            shift.cache = None

    @torch.no_grad()
    def stream_features(self, frame: torch.Tensor) -> torch.Tensor:
        """One new frame per stream ``(B, 3, H, W)`` (normalised) -> its pooled features ``(B, F)``.

        Updates the caches; equals ``forward_features`` of the whole stream so far at the last frame.
        """
        if frame.ndim != 4:
            raise ValueError(f"stream_features expects one frame per stream (B, 3, H, W), got {tuple(frame.shape)}")
        for shift in self.shifts:
            shift.streaming = True
        try:
            feats = self.backbone.forward_features(frame.contiguous(memory_format=torch.channels_last))
        finally:
            for shift in self.shifts:
                shift.streaming = False
        return feats.mean(dim=(2, 3))

    def cache_bytes(self) -> int:
        """Bytes held by the temporal cache right now (all blocks)."""
        return sum(s.cache.numel() * s.cache.element_size() for s in self.shifts if s.cache is not None)


def _register(name: str, backbone: str, num_frames: int, img_size: int, default_classes: int, **defaults) -> None:
    def entry(num_classes: int = default_classes, **kwargs) -> nn.Module:
        kwargs = {"backbone": backbone, "num_frames": num_frames, "img_size": img_size, **defaults, **kwargs}
        return OnlineTSM(num_classes=num_classes, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"Online (causal) TSM on timm ``{backbone}``; default clips {num_frames}x{img_size}x{img_size}.")
    register_model(entry)


_register("tsm_online_resnet18", "resnet18", 16, 224, 400)
_register("tsm_online_resnet10t", "resnet10t", 16, 112, 400)
_register("test_tsm_online", "test_resnet", 8, 32, 10)
