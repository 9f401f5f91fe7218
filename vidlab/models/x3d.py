"""X3D (Feichtenhofer, "X3D: Expanding Architectures for Efficient Video Recognition", CVPR 2020).

Written here to match the reference builder ``pytorchvideo.models.x3d.create_x3d`` layer for
layer (pytorchvideo itself no longer installs on current torch/torchvision):

* stem: 1x3x3 spatial conv (3 -> 24 channels, stride 1x2x2), 5x1x1 depthwise temporal conv, BN, ReLU
* 4 stages of residual bottleneck blocks: 1x1x1 conv (expansion 2.25) -> BN -> ReLU ->
  depthwise 3x3x3 conv (spatial stride 2 in the first block of a stage) -> BN ->
  squeeze-excitation (ratio 1/16, on every other block, starting with the first) -> Swish ->
  1x1x1 conv -> BN; shortcut (1x1x1 conv when shape changes), sum, ReLU
* stage widths 24/48/96/192 (x width factor 2 of 12/24/48/96) and depths 1/2/5/3 x depth factor
  (2.2 for XS/S/M, 5.0 for L)
* head: 1x1x1 conv to 432 channels -> BN -> ReLU -> global average pool -> 2048-d "fc" (a
  1x1x1 conv without bias) -> ReLU -> dropout -> linear classifier

One deliberate difference: the reference pools with a fixed ``AvgPool3d`` sized for its training
crop; here the pool is global (adaptive), which is identical at that crop and also works at
other sizes. The model returns logits (the reference appends a softmax).

Reference figures (400 classes): X3D-XS 3.79M params, 0.605 GMACs at 4x160x160; X3D-S 1.96 GMACs
at 13x160x160; X3D-M 3.76M params, 4.73 GMACs at 16x224x224; X3D-L 6.15M params, 18.4 GMACs at
16x312x312. ``tests/test_models.py`` checks them with :func:`vidlab.models.count_macs`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from vidlab.models.registry import register_model

__all__ = ["X3D", "round_width", "round_repeats"]


def round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
    """Scale a channel count by ``multiplier`` and round to a multiple of ``divisor`` (reference rule)."""
    if not multiplier:
        return int(width)
    width *= multiplier
    width_out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if width_out < 0.9 * width:
        width_out += divisor
    return int(width_out)


def round_repeats(repeats: int, multiplier: float) -> int:
    """Scale a block count by ``multiplier``, rounding up (reference rule)."""
    if not multiplier:
        return repeats
    return int(math.ceil(multiplier * repeats))


class SqueezeExcite3d(nn.Module):
    """Squeeze-excitation for ``(B, C, T, H, W)``: global mean -> 1x1x1 conv -> ReLU -> 1x1x1 conv -> sigmoid gate."""

    def __init__(self, channels: int, reduced_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv3d(channels, reduced_channels, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv3d(reduced_channels, channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3, 4), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(scale))))


class X3DStem(nn.Module):
    """Spatial 1xkxk conv then depthwise temporal kx1x1 conv, BN, ReLU. ``(B, 3, T, H, W) -> (B, C, T, H/s, W/s)``."""

    def __init__(self, in_chans: int, out_chans: int, temporal_kernel: int = 5, spatial_stride: int = 2) -> None:
        super().__init__()
        self.conv_xy = nn.Conv3d(in_chans, out_chans, kernel_size=(1, 3, 3),
                                 stride=(1, spatial_stride, spatial_stride), padding=(0, 1, 1), bias=False)
        self.conv_t = nn.Conv3d(out_chans, out_chans, kernel_size=(temporal_kernel, 1, 1),
                                padding=(temporal_kernel // 2, 0, 0), groups=out_chans, bias=False)
        self.bn = nn.BatchNorm3d(out_chans)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv_t(self.conv_xy(x))))


class X3DBlock(nn.Module):
    """Residual bottleneck block with a depthwise 3x3x3 conv, optional SE and Swish (see module docstring)."""

    def __init__(self, dim_in: int, dim_inner: int, dim_out: int, spatial_stride: int, use_se: bool,
                 se_ratio: float = 1 / 16, temporal_kernel: int = 3) -> None:
        super().__init__()
        stride = (1, spatial_stride, spatial_stride)
        self.conv_a = nn.Conv3d(dim_in, dim_inner, kernel_size=1, bias=False)
        self.bn_a = nn.BatchNorm3d(dim_inner)
        self.act_a = nn.ReLU(inplace=True)
        self.conv_b = nn.Conv3d(dim_inner, dim_inner, kernel_size=(temporal_kernel, 3, 3), stride=stride,
                                padding=(temporal_kernel // 2, 1, 1), groups=dim_inner, bias=False)
        self.bn_b = nn.BatchNorm3d(dim_inner)
        self.se = SqueezeExcite3d(dim_inner, round_width(dim_inner, se_ratio)) if use_se else nn.Identity()
        self.act_b = nn.SiLU(inplace=True)  # Swish
        self.conv_c = nn.Conv3d(dim_inner, dim_out, kernel_size=1, bias=False)
        self.bn_c = nn.BatchNorm3d(dim_out)
        # The reference adds a BN to the shortcut only when the channel count changes.
        needs_projection = dim_in != dim_out or spatial_stride > 1
        self.shortcut = (
            nn.Sequential(
                nn.Conv3d(dim_in, dim_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(dim_out) if dim_in != dim_out else nn.Identity(),
            )
            if needs_projection
            else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act_a(self.bn_a(self.conv_a(x)))
        y = self.act_b(self.se(self.bn_b(self.conv_b(y))))
        y = self.bn_c(self.conv_c(y))
        return self.act(self.shortcut(x) + y)


class X3D(nn.Module):
    """X3D video classifier. Input ``(B, C, T, H, W)`` float, output logits ``(B, num_classes)``.

    ``forward_features`` returns the head's pre-pool map ``(B, 432*w/2, T, H/32, W/32)`` (after the
    1x1x1 "conv5" projection); ``forward_head(feats, pre_logits=True)`` returns the pooled
    ``(B, num_features)`` vector (2048 for the reference sizes) before the classifier.
    """

    def __init__(
        self,
        num_classes: int = 400,
        in_chans: int = 3,
        width_factor: float = 2.0,
        depth_factor: float = 2.2,
        stage_depths: Sequence[int] | None = None,
        stem_dim_in: int = 12,
        stem_spatial_stride: int = 2,
        stem_temporal_kernel: int = 5,
        bottleneck_factor: float = 2.25,
        se_ratio: float = 1 / 16,
        head_dim_out: int = 2048,
        drop_rate: float = 0.5,
        num_frames: int = 16,
        img_size: int = 224,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        stem_dim_out = round_width(stem_dim_in, width_factor)
        self.stem = X3DStem(in_chans, stem_dim_out, stem_temporal_kernel, stem_spatial_stride)

        base_depths = (1, 2, 5, 3)
        if stage_depths is None:
            stage_depths = [round_repeats(d, depth_factor) for d in base_depths]
        elif len(stage_depths) != 4:
            raise ValueError(f"stage_depths must list 4 stage depths, got {list(stage_depths)}")
        base_dims = [stem_dim_in]
        for _ in range(3):
            base_dims.append(round_width(base_dims[-1], 2.0, divisor=8))

        stages = []
        dim_in = stem_dim_out
        dim_inner = dim_in
        for depth, base_dim in zip(stage_depths, base_dims):
            dim_out = round_width(base_dim, width_factor)
            dim_inner = int(bottleneck_factor * dim_out)
            blocks = [
                X3DBlock(
                    dim_in if i == 0 else dim_out, dim_inner, dim_out,
                    spatial_stride=2 if i == 0 else 1,
                    use_se=se_ratio > 0 and (i + 1) % 2 == 1,  # blocks 1, 3, 5, ... (reference)
                    se_ratio=se_ratio,
                )
                for i in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            dim_in = dim_out
        self.stages = nn.Sequential(*stages)
        self.stage_depths = list(stage_depths)

        # Head: "conv5" projection, global pool, "fc" (1x1x1 conv without bias), dropout, classifier.
        self.head_dim_inner = dim_inner
        self.conv5 = nn.Conv3d(dim_in, dim_inner, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm3d(dim_inner)
        self.act5 = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.lin5 = nn.Conv3d(dim_inner, head_dim_out, kernel_size=1, bias=False)
        self.act_lin5 = nn.ReLU(inplace=True)
        self.head_drop = nn.Dropout(drop_rate)
        self.num_features = head_dim_out
        self.head = nn.Linear(head_dim_out, num_classes) if num_classes > 0 else nn.Identity()
        self.default_cfg = {
            "architecture": "x3d",
            "num_frames": num_frames,
            "img_size": img_size,
            "in_chans": in_chans,
            "classifier": "head",
            "mean": (0.45, 0.45, 0.45),
            "std": (0.225, 0.225, 0.225),
        }
        self._init_weights()

    def _init_weights(self) -> None:
        # As in the reference (SlowFast init_helper): kaiming fan-out convs, BN weight 1 (0 on the
        # last BN of each residual branch), linear std 0.01.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, X3DBlock):
                nn.init.zeros_(m.bn_c.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(B, head_dim_inner, T, H/32, W/32)``."""
        x = self.stages(self.stem(x))
        return self.act5(self.bn5(self.conv5(x)))

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, C', T', H', W')`` -> logits ``(B, num_classes)`` (or ``(B, num_features)`` if ``pre_logits``)."""
        x = self.act_lin5(self.lin5(self.pool(feats))).flatten(1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh ``Linear(num_features, num_classes)`` (Identity if 0)."""
        self.num_classes = num_classes
        device = self.lin5.weight.device
        if num_classes > 0:
            self.head = nn.Linear(self.num_features, num_classes, device=device)
            nn.init.normal_(self.head.weight, std=0.01)
            nn.init.zeros_(self.head.bias)
        else:
            self.head = nn.Identity()


def _x3d(num_classes: int, **kwargs) -> X3D:
    return X3D(num_classes=num_classes, **kwargs)


@register_model
def x3d_xs(num_classes: int = 400, **kwargs) -> X3D:
    """X3D-XS: 4 frames at 160x160 (3.79M params, 0.605 GMACs with 400 classes)."""
    kwargs = {"num_frames": 4, "img_size": 160, **kwargs}
    return _x3d(num_classes, width_factor=2.0, depth_factor=2.2, **kwargs)


@register_model
def x3d_s(num_classes: int = 400, **kwargs) -> X3D:
    """X3D-S: 13 frames at 160x160 (1.96 GMACs)."""
    kwargs = {"num_frames": 13, "img_size": 160, **kwargs}
    return _x3d(num_classes, width_factor=2.0, depth_factor=2.2, **kwargs)


@register_model
def x3d_m(num_classes: int = 400, **kwargs) -> X3D:
    """X3D-M: 16 frames at 224x224 (3.76M params, 4.73 GMACs)."""
    kwargs = {"num_frames": 16, "img_size": 224, **kwargs}
    return _x3d(num_classes, width_factor=2.0, depth_factor=2.2, **kwargs)


@register_model
def x3d_l(num_classes: int = 400, **kwargs) -> X3D:
    """X3D-L: 16 frames at 312x312 (6.15M params, 18.4 GMACs)."""
    kwargs = {"num_frames": 16, "img_size": 312, **kwargs}
    return _x3d(num_classes, width_factor=2.0, depth_factor=5.0, **kwargs)


@register_model
def x3d_mini(num_classes: int = 400, **kwargs) -> X3D:
    """CPU-sized X3D for 8-16 frames at 32-64 px: half width, depths 1/2/3/2, no stem stride, 512-d head.

    Without the stem's spatial stride a 64x64 input ends at a 4x4 map (2x2 at 32x32).
    """
    kwargs = {"num_frames": 8, "img_size": 64, "width_factor": 1.0, "stage_depths": (1, 2, 3, 2),
              "stem_spatial_stride": 1, "head_dim_out": 512, "drop_rate": 0.2, **kwargs}
    return _x3d(num_classes, **kwargs)


@register_model
def test_x3d(num_classes: int = 10, **kwargs) -> X3D:
    """Tiny X3D for unit tests (one block per stage, 64-d head)."""
    kwargs = {"num_frames": 4, "img_size": 32, "width_factor": 0.5, "stage_depths": (1, 1, 2, 1),
              "stem_spatial_stride": 1, "head_dim_out": 64, "drop_rate": 0.0, **kwargs}
    return _x3d(num_classes, **kwargs)
