"""Self-supervised video pretraining: masking, VideoMAE, a contrastive alternative, and probes.

Layouts: a batch of clips is ``(B, C, T, H, W)`` float (normalised with the dataset's
per-channel mean/std); two views of the same videos are ``(B, 2, C, T, H, W)``. The encoder is
a :class:`vidlab.models.vit.VideoViT` (``tokenize``, ``forward_tokens``, ``forward_features``,
``grid_size``); its token order is ``(T', H', W')`` flattened, time slowest.

* :mod:`~vidlab.train.ssl.masking`: tube / random / frame masks, patches, why masks must be heavy;
* :mod:`~vidlab.train.ssl.mae`: :class:`VideoMAE` (encoder on visible tubelets, light decoder);
* :mod:`~vidlab.train.ssl.contrastive`: :class:`SimCLRVideo`, NT-Xent, :class:`TwoViews`;
* :mod:`~vidlab.train.ssl.pretrain`: :func:`pretrain`, either objective with the one training loop;
* :mod:`~vidlab.train.ssl.probes`: kNN and linear probes on frozen features.
"""
from __future__ import annotations

from vidlab.train.ssl.contrastive import SimCLRVideo, TwoViews, nt_xent_loss
from vidlab.train.ssl.mae import MAEDecoder, VideoMAE, mask_ratio_losses
from vidlab.train.ssl.masking import (
    MASK_TYPES,
    copy_baseline_loss,
    frame_mask,
    make_mask,
    patchify,
    random_mask,
    temporal_redundancy,
    tube_mask,
    unpatchify,
)
from vidlab.train.ssl.pretrain import pretrain, ssl_step
from vidlab.train.ssl.probes import extract_features, knn_accuracy, linear_probe_accuracy, pooled_features

__all__ = [
    "MASK_TYPES",
    "MAEDecoder",
    "SimCLRVideo",
    "TwoViews",
    "VideoMAE",
    "copy_baseline_loss",
    "extract_features",
    "frame_mask",
    "knn_accuracy",
    "linear_probe_accuracy",
    "make_mask",
    "mask_ratio_losses",
    "nt_xent_loss",
    "patchify",
    "pooled_features",
    "pretrain",
    "random_mask",
    "ssl_step",
    "temporal_redundancy",
    "tube_mask",
    "unpatchify",
]
