"""Knowledge distillation as an engine step function.

The student matches the teacher's softened class distribution and the labels:

    L = alpha * tau^2 * KL(p_t || p_s) + (1 - alpha) * CE(z_s, y),
    p_t = softmax(z_t / tau),  p_s = softmax(z_s / tau),
    KL(p_t || p_s) = sum_k p_t,k (log p_t,k - log p_s,k)   (averaged over the batch).

The KL divergence is taken *from the teacher's distribution*: the expectation is under p_t, so
the student pays wherever the teacher puts mass (the forward KL of Hinton et al.). In
``torch.nn.functional.kl_div(input, target)`` the *target* is the distribution the expectation
is under and ``input`` is the log-probabilities being fitted, so the call is
``kl_div(log_softmax(z_s / tau), softmax(z_t / tau))``. ``tau^2`` keeps the gradient scale of the
soft term independent of ``tau``.

Logits are ``(B, K)``; the step reads ``batch["video"]`` ``(B, C, T, H, W)`` and ``batch["label"]`` ``(B,)``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidlab.train.engine import StepContext, StepOutput


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
            temperature: float = 4.0, alpha: float = 0.5, label_smoothing: float = 0.0) -> torch.Tensor:
    """``alpha * tau^2 * KL(softmax(z_t/tau) || softmax(z_s/tau)) + (1 - alpha) * CE(z_s, y)``, batch mean."""
    if temperature <= 0:
        raise ValueError(f"kd_loss: temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"kd_loss: alpha must be in [0, 1], got {alpha}")
    tau = float(temperature)
    soft = F.kl_div(F.log_softmax(student_logits.float() / tau, dim=-1),
                    F.softmax(teacher_logits.float() / tau, dim=-1), reduction="batchmean")
    hard = F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)
    return alpha * tau * tau * soft + (1.0 - alpha) * hard


class DistillStep:
    """``step_fn`` for :func:`vidlab.train.fit`: the frozen ``teacher`` (eval mode, no gradients)
    labels each batch with its logits and the student learns from :func:`kd_loss`.

    ``teacher_input`` maps the student's batch to the teacher's input when they expect different
    clips (default: the same ``batch["video"]``).
    """

    def __init__(self, teacher: nn.Module, *, temperature: float = 4.0, alpha: float = 0.5,
                 teacher_input: Any = None) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature = temperature
        self.alpha = alpha
        self.teacher_input = teacher_input

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> StepOutput:
        video = batch["video"].to(ctx.device, non_blocking=True)
        label = batch["label"].to(ctx.device, non_blocking=True)
        self.teacher.to(ctx.device).eval()
        with torch.no_grad(), ctx.autocast():
            teacher_logits = self.teacher(self.teacher_input(video) if self.teacher_input else video)
        with ctx.autocast():
            logits = model(video)
        loss = kd_loss(logits, teacher_logits, label, temperature=self.temperature, alpha=self.alpha,
                       label_smoothing=ctx.cfg.label_smoothing)
        return StepOutput(loss=loss, logits=logits)
