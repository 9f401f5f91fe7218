"""torchvision's video classifiers behind the vidlab registry (wrapped, not forked).

Registered under torchvision's own names: ``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ``s3d``,
``mvit_v2_s``, ``swin3d_t`` (400 Kinetics classes by default). The torchvision network is
``model.net``; the wrapper adds ``forward_features`` / ``forward_head`` / ``reset_classifier``.
``pretrained=True`` uses torchvision's Kinetics-400 weights only if they are already in
``torch.hub.get_dir()/checkpoints`` (never downloaded).

Differences from calling torchvision directly: S3D pools globally when the feature map is
smaller than its fixed 2x7x7 pooling window (so small clips work). MViT-v2 only takes
16x224x224 clips (torchvision's builder fixes the size its relative-position tables are made for).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from vidlab.models.registry import register_model
from vidlab.models.weights import load_pretrained, register_backbone_source, torchvision_cached_weights

__all__ = ["TorchvisionVideoModel"]

# family, classifier path inside torchvision's model, feature width, default input (T, size),
# Kinetics-400 normalisation as torchvision's VideoClassification preset.
_SPECS = {
    "r3d_18": ("resnet", "fc", 512, (16, 112)),
    "mc3_18": ("resnet", "fc", 512, (16, 112)),
    "r2plus1d_18": ("resnet", "fc", 512, (16, 112)),
    "s3d": ("s3d", "classifier.1", 1024, (16, 224)),
    "mvit_v2_s": ("mvit", "head.1", 768, (16, 224)),
    "swin3d_t": ("swin", "head", 768, (16, 224)),
}
_KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
_KINETICS_STD = (0.22803, 0.22145, 0.216989)


class TorchvisionVideoModel(nn.Module):
    """A torchvision video classifier with the vidlab model interface.

    ``forward``: ``(B, 3, T, H, W)`` -> ``(B, num_classes)``. ``forward_features`` returns the
    last feature map ``(B, C, T', H', W')`` (MViT: tokens ``(B, 1 + N, C)`` with the class token
    first); ``forward_head(feats, pre_logits=True)`` the pooled ``(B, num_features)``.
    """

    def __init__(self, tv_name: str, num_classes: int = 400, num_frames: int | None = None,
                 img_size: int | None = None, **tv_kwargs) -> None:
        super().__init__()
        if tv_name not in _SPECS:
            raise ValueError(f"unknown torchvision video model {tv_name!r}; known: {sorted(_SPECS)}")
        family, classifier, width, (default_t, default_size) = _SPECS[tv_name]
        num_frames = num_frames or default_t
        img_size = img_size or default_size
        self.tv_name = tv_name
        self.family = family
        if family == "mvit" and (num_frames, img_size) != (default_t, default_size):
            # torchvision's mvit_v2_s hard-codes its clip size (relative-position tables depend on it)
            raise ValueError(f"{tv_name} only supports {default_t}x{default_size}x{default_size} clips "
                             f"(torchvision fixes its size); got num_frames={num_frames}, img_size={img_size}")
        # weights=None always: weights come only from local files (vidlab.models.weights).
        self.net = torchvision.models.get_model(tv_name, weights=None, num_classes=max(num_classes, 1), **tv_kwargs)
        self.num_features = width
        self.num_classes = num_classes
        if num_classes == 0:
            self._set_classifier(nn.Identity())
        self.default_cfg = {
            "architecture": tv_name,
            "num_frames": num_frames,
            "img_size": img_size,
            "in_chans": 3,
            "classifier": f"net.{classifier}",
            "mean": _KINETICS_MEAN,
            "std": _KINETICS_STD,
        }

    def _set_classifier(self, module: nn.Module) -> None:
        if self.family == "resnet":
            self.net.fc = module
        elif self.family == "s3d":
            self.net.classifier[1] = module
        elif self.family == "mvit":
            self.net.head[1] = module
        else:
            self.net.head = module

    def get_classifier(self) -> nn.Module:
        return self.net.get_submodule(self.default_cfg["classifier"][len("net."):])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> last feature map ``(B, C, T', H', W')`` (MViT: ``(B, 1 + N, C)`` tokens)."""
        net = self.net
        if self.family == "resnet":
            x = net.stem(x)
            return net.layer4(net.layer3(net.layer2(net.layer1(x))))
        if self.family == "s3d":
            return net.features(x)
        if self.family == "swin":
            x = net.norm(net.features(net.pos_drop(net.patch_embed(x))))  # (B, T', H', W', C)
            return x.permute(0, 4, 1, 2, 3)
        # MViT, as torchvision's forward up to the final norm
        if x.shape[2:] != (net.pos_encoding.temporal_size * net.conv_proj.stride[0],
                           net.pos_encoding.spatial_size[0] * net.conv_proj.stride[1],
                           net.pos_encoding.spatial_size[1] * net.conv_proj.stride[2]):
            raise ValueError(f"{self.tv_name} takes clips of {self.default_cfg['num_frames']}x"
                             f"{self.default_cfg['img_size']}x{self.default_cfg['img_size']} only, got "
                             f"{tuple(x.shape[2:])}")
        x = net.conv_proj(x).flatten(2).transpose(1, 2)
        x = net.pos_encoding(x)
        thw = (net.pos_encoding.temporal_size,) + net.pos_encoding.spatial_size
        for block in net.blocks:
            x, thw = block(x, thw)
        return net.norm(x)

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features -> pooled ``(B, num_features)`` -> logits ``(B, num_classes)`` (torchvision's head)."""
        net = self.net
        if self.family == "mvit":
            x = net.head[0](feats[:, 0])  # class token, dropout
            return x if pre_logits else net.head[1](x)
        if self.family == "s3d":
            window = net.avgpool.kernel_size
            if all(s >= k for s, k in zip(feats.shape[2:], window)):
                feats = net.avgpool(feats)  # torchvision's sliding 2x7x7 window (pretrained behaviour)
            x = net.classifier[0](feats.mean(dim=(2, 3, 4)))  # dropout
            if pre_logits:
                return x
            # classifier is a 1x1x1 conv; a mean after it equals the mean before it
            return net.classifier[1](x[:, :, None, None, None]).flatten(1)
        x = feats.mean(dim=(2, 3, 4))
        return x if pre_logits else (net.fc(x) if self.family == "resnet" else net.head(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Fresh classifier for ``num_classes`` (torchvision's default init); 0 -> Identity."""
        self.num_classes = num_classes
        device = next(self.net.parameters()).device
        if num_classes == 0:
            module: nn.Module = nn.Identity()
        elif self.family == "s3d":
            module = nn.Conv3d(self.num_features, num_classes, kernel_size=1, bias=True, device=device)
        else:
            module = nn.Linear(self.num_features, num_classes, device=device)
        self._set_classifier(module)


def _build(tv_name: str, num_classes: int, backbone_checkpoint: str | os.PathLike | None, kwargs: dict) -> TorchvisionVideoModel:
    model = TorchvisionVideoModel(tv_name, num_classes=num_classes, **kwargs)
    if backbone_checkpoint is not None:
        load_pretrained(model, Path(backbone_checkpoint), model_name=tv_name, key_prefix="net.")
    return model


def _register(tv_name: str, doc: str) -> None:
    def entry(num_classes: int = 400, backbone_checkpoint: str | os.PathLike | None = None, **kwargs) -> TorchvisionVideoModel:
        return _build(tv_name, num_classes, backbone_checkpoint, kwargs)

    entry.__name__ = entry.__qualname__ = tv_name
    entry.__doc__ = (f"torchvision ``{tv_name}``: {doc} ``backbone_checkpoint``: torchvision Kinetics-400 "
                     f"weights file to load (classifier dropped if num_classes differs).")
    register_model(entry)
    register_backbone_source(tv_name, lambda **_: torchvision_cached_weights(tv_name))


_register("r3d_18", "ResNet-18 with 3D convs (33M params; heavy on CPU).")
_register("mc3_18", "mixed 3D/2D convolution ResNet-18.")
_register("r2plus1d_18", "ResNet-18 with (2+1)D factorised convs.")
_register("s3d", "separable 3D Inception (S3D-G).")
_register("mvit_v2_s", "multiscale ViT v2 small; 16x224x224 clips only.")
_register("swin3d_t", "video Swin transformer, tiny.")
