"""A plain 3D CNN in the spirit of C3D (Tran et al. 2015): 3x3x3 convolutions, batch norm, ReLU.

Small and fast on a CPU, with no depthwise or (2+1)D factorisation: every layer is a dense
3x3x3 convolution, which oneDNN runs well, so many forward and backward passes per training
step (adversarial training) stay affordable. Each stage is ``depth`` conv-BN-ReLU layers; the
first layer of a stage may stride in time and space. A global average pool and a linear
classifier end it.

Input ``(B, C, T, H, W)`` float clips; output ``(B, num_classes)`` logits.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vidlab.models.registry import register_model

__all__ = ["CNN3D", "cnn3d_small", "test_cnn3d"]


def _conv_bn_relu(c_in: int, c_out: int, stride: Sequence[int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel_size=3, stride=tuple(stride), padding=1, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


class CNN3D(nn.Module):
    """Plain 3D CNN: ``len(widths)`` stages of ``depth`` 3x3x3 conv-BN-ReLU layers.

    Args:
        num_classes: classifier size (0: ``forward`` returns the pooled features).
        widths: channels of each stage.
        strides: ``(t, h, w)`` stride of the first layer of each stage.
        depth: layers per stage.
        drop_rate: dropout before the classifier.
        num_frames, img_size, in_chans: the clip geometry recorded in ``default_cfg``.
    """

    def __init__(
        self,
        num_classes: int = 400,
        *,
        widths: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[Sequence[int]] = ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 1, 1)),
        depth: int = 1,
        drop_rate: float = 0.0,
        num_frames: int = 8,
        img_size: int = 32,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if len(widths) != len(strides):
            raise ValueError(f"CNN3D: widths {tuple(widths)} and strides {tuple(strides)} need one entry per stage")
        if depth < 1:
            raise ValueError(f"CNN3D: depth must be >= 1, got {depth}")
        stages = []
        c = in_chans
        for width, stride in zip(widths, strides):
            layers = [_conv_bn_relu(c, width, stride)] + [_conv_bn_relu(width, width, (1, 1, 1)) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*layers))
            c = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.num_features = c
        self.num_classes = num_classes
        self.head = nn.Linear(c, num_classes) if num_classes > 0 else nn.Identity()
        self.default_cfg = {
            "architecture": "cnn3d",
            "num_frames": num_frames,
            "img_size": img_size,
            "in_chans": in_chans,
            "classifier": "head",
            "mean": (0.45, 0.45, 0.45),
            "std": (0.225, 0.225, 0.225),
        }
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(B, num_features, T', H', W')``."""
        if x.ndim != 5:
            raise ValueError(f"CNN3D expects clips (B, C, T, H, W), got shape {tuple(x.shape)}")
        return self.stages(x)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, F, T', H', W')`` -> logits ``(B, num_classes)`` (or pooled ``(B, F)`` if ``pre_logits``)."""
        x = self.head_drop(self.pool(feats).flatten(1))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh ``Linear(num_features, num_classes)`` (Identity if 0)."""
        self.num_classes = num_classes
        device = next(self.parameters()).device
        self.head = nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()


@register_model
def cnn3d_small(num_classes: int = 400, **kwargs) -> CNN3D:
    """Plain 3D CNN for 8 frames at 32x32: stages of 16/32/64/128 channels; the first two halve
    height and width, the last two halve time, and the third halves space once more (a 2x4x4
    map at the end)."""
    return CNN3D(num_classes=num_classes, **kwargs)


@register_model
def test_cnn3d(num_classes: int = 10, **kwargs) -> CNN3D:
    """Tiny plain 3D CNN for unit tests (4/8/8/16 channels, 4 frames at 32x32)."""
    kwargs = {"widths": (4, 8, 8, 16), "num_frames": 4, "img_size": 32, **kwargs}
    return CNN3D(num_classes=num_classes, **kwargs)
