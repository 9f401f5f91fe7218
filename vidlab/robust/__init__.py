"""Adversarial robustness for video models (notebook 05): attacks, adversarial training, corruptions.

Everything works in **pixel space**: models take clips in [0, 1] ``(B, C, T, H, W)`` and hold
their own normalisation (:class:`vidlab.models.Normalized`), so ``eps`` is in pixel units.

* :mod:`~vidlab.robust.attacks`: :func:`fgsm`, :func:`pgd` (L-inf / L2, restarts, worst case
  per sample), :func:`frame_sparse_attack` (k of T frames), :func:`temporal_attack` (static
  overlay or flicker).
* :mod:`~vidlab.robust.training`: step functions for ``vl.train.fit(..., step_fn=...)``:
  :func:`pgd_at`, :func:`fgsm_rs`, :func:`fgsm_at`, with an ``eps`` ramp-up.
* :mod:`~vidlab.robust.corruptions`: noise, blur, frame drops, temporal jitter, H.264 re-encoding.
* :mod:`~vidlab.robust.evaluation`: accuracy under attack, against ``eps`` and steps, and the
  gradient-masking checks.
* :func:`load_pixel_model`: a :func:`vidlab.models.save_model` file as a model taking [0, 1] clips.
"""
from __future__ import annotations

import os

from torch import nn

from vidlab.robust.attacks import (
    cross_entropy,
    fgsm,
    frame_mask,
    frame_scores,
    frame_sparse_attack,
    pgd,
    project,
    temporal_attack,
    top_frames,
)
from vidlab.robust.corruptions import (
    CORRUPTIONS,
    corrupt,
    frame_drop,
    gaussian_blur,
    gaussian_noise,
    h264_reencode,
    temporal_jitter,
)
from vidlab.robust.evaluation import (
    MaskingReport,
    accuracy,
    accuracy_vs_eps,
    accuracy_vs_steps,
    attack_all,
    gradient_masking_checks,
    predict,
)
from vidlab.robust.training import (
    AdversarialStep,
    FGSMTrainingStep,
    PGDTrainingStep,
    fgsm_at,
    fgsm_rs,
    pgd_at,
    ramped_eps,
)


def load_pixel_model(path: str | os.PathLike, *, map_location: str = "cpu") -> nn.Module:
    """Load a :func:`vidlab.models.save_model` file as a model that takes clips in [0, 1]
    ``(B, C, T, H, W)``: the saved network inside :class:`vidlab.models.Normalized` with the
    mean and std recorded in the file. Eval mode; ``.class_names`` / ``.clip_geometry`` kept."""
    from vidlab.models import Normalized, load_model

    inner = load_model(path, map_location=map_location)
    model = Normalized(inner, inner.mean, inner.std).to(map_location).eval()
    model.class_names = inner.class_names
    model.clip_geometry = inner.clip_geometry
    return model


__all__ = [
    "AdversarialStep",
    "CORRUPTIONS",
    "FGSMTrainingStep",
    "MaskingReport",
    "PGDTrainingStep",
    "accuracy",
    "accuracy_vs_eps",
    "accuracy_vs_steps",
    "attack_all",
    "corrupt",
    "cross_entropy",
    "fgsm",
    "fgsm_at",
    "fgsm_rs",
    "frame_drop",
    "frame_mask",
    "frame_scores",
    "frame_sparse_attack",
    "gaussian_blur",
    "gaussian_noise",
    "gradient_masking_checks",
    "h264_reencode",
    "load_pixel_model",
    "pgd",
    "pgd_at",
    "predict",
    "project",
    "ramped_eps",
    "temporal_attack",
    "temporal_jitter",
    "top_frames",
]
