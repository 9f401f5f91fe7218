"""Adversarial training as step functions for the engine's ``step_fn`` hook.

Adversarial training minimises the loss at the worst perturbation in the ``eps``-ball,
``min_theta E[max_{||delta|| <= eps} L(f_theta(x + delta), y)]`` (Madry et al. 2018): each step
first attacks the batch, then takes the ordinary gradient step on the adversarial clips::

    fit(Normalized(model, mean, std), train_loader, val_loader, cfg, step_fn=pgd_at(eps=4/255))

* :func:`pgd_at`: the inner maximum by PGD (``steps`` gradient steps of ``2.5 * eps / steps``
  from a random start), about ``steps + 1`` times the cost of a clean step.
* :func:`fgsm_rs`: "fast" adversarial training (Wong, Rice and Kolter 2020): one FGSM step of
  ``alpha = 1.25 * eps`` from a uniform random start in the ball, about twice a clean step.
* :func:`fgsm_at`: plain FGSM training (zero start, ``alpha = eps``), the variant prone to
  catastrophic overfitting.

Every step can ramp ``eps`` up linearly from 0 over its first ``ramp_steps`` optimizer steps,
so the model first learns the task and then its robustness.

The batches must hold clips in [0, 1] ``(B, C, T, H, W)`` and the model must take them (wrap
it in :class:`vidlab.models.Normalized`): ``eps`` is then in pixel units. The attack runs with
the model in training mode, as in the reference implementations (batch-norm statistics are
updated by the attack's forward passes too).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidlab.robust.attacks import fgsm, pgd
from vidlab.train.engine import StepContext, StepOutput

__all__ = ["AdversarialStep", "PGDTrainingStep", "FGSMTrainingStep", "pgd_at", "fgsm_rs", "fgsm_at", "ramped_eps"]


def ramped_eps(eps: float, global_step: int, ramp_steps: int) -> float:
    """``eps`` grown linearly from ``eps / ramp_steps`` at step 0 to ``eps`` at step ``ramp_steps - 1``,
    then constant (``ramp_steps=0``: always ``eps``)."""
    if ramp_steps <= 0:
        return float(eps)
    return float(eps) * min(1.0, (global_step + 1) / ramp_steps)


@dataclass
class AdversarialStep:
    """Base of the adversarial step functions: attack the batch, then a clean-style step on it.

    Subclasses implement :meth:`perturb`. Calling the object is a ``step_fn`` for
    :func:`vidlab.train.fit`; ``last_eps`` holds the ``eps`` of the latest step.
    """

    eps: float
    ramp_steps: int = 0

    def __post_init__(self) -> None:
        if not self.eps >= 0:
            raise ValueError(f"{type(self).__name__}: eps must be >= 0 (pixel units), got {self.eps!r}")
        if self.ramp_steps < 0:
            raise ValueError(f"{type(self).__name__}: ramp_steps must be >= 0, got {self.ramp_steps}")
        self.last_eps = 0.0

    def eps_at(self, global_step: int) -> float:
        """The ``eps`` used at optimizer step ``global_step`` (see :func:`ramped_eps`)."""
        return ramped_eps(self.eps, global_step, self.ramp_steps)

    def perturb(self, model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        """Adversarial clips ``(B, C, T, H, W)`` in [0, 1] for this training method."""
        raise NotImplementedError(f"{type(self).__name__} must implement perturb()")

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], ctx: StepContext) -> StepOutput:
        clips = batch["video"].to(ctx.device, non_blocking=True)
        labels = batch["label"].to(ctx.device, non_blocking=True)
        eps = self.eps_at(ctx.global_step)
        self.last_eps = eps
        with ctx.autocast():
            adv = self.perturb(model, clips, labels, eps) if eps > 0 else clips
            logits = model(adv)
        loss = ctx.criterion(logits.float(), labels)
        return StepOutput(loss=loss, logits=logits)


@dataclass
class PGDTrainingStep(AdversarialStep):
    """PGD adversarial training (Madry et al. 2018): ``steps`` L-inf PGD steps of
    ``alpha_factor * eps`` (default ``2.5 / steps``) from a uniform random start."""

    steps: int = 7
    alpha_factor: float | None = None
    random_start: bool = True

    def perturb(self, model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        factor = 2.5 / self.steps if self.alpha_factor is None else self.alpha_factor
        return pgd(model, clips, labels, eps=eps, alpha=factor * eps, steps=self.steps, restarts=1,
                   random_start=self.random_start)


@dataclass
class FGSMTrainingStep(AdversarialStep):
    """FGSM adversarial training: one signed-gradient step of ``alpha_factor * eps``, from a
    uniform random start in the ball (``random_start=True``) or from the clean clip."""

    alpha_factor: float = 1.25
    random_start: bool = True

    def perturb(self, model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        return fgsm(model, clips, labels, eps=eps, alpha=self.alpha_factor * eps, random_start=self.random_start)


def pgd_at(eps: float, *, steps: int = 7, alpha_factor: float | None = None, ramp_steps: int = 0) -> PGDTrainingStep:
    """PGD-AT step function: ``steps`` PGD steps (default step ``2.5 * eps / steps``), random start."""
    return PGDTrainingStep(eps=eps, ramp_steps=ramp_steps, steps=steps, alpha_factor=alpha_factor)


def fgsm_rs(eps: float, *, alpha_factor: float = 1.25, ramp_steps: int = 0) -> FGSMTrainingStep:
    """FGSM-RS ("fast") step function of Wong et al. 2020: uniform random start, step ``1.25 * eps``."""
    return FGSMTrainingStep(eps=eps, ramp_steps=ramp_steps, alpha_factor=alpha_factor, random_start=True)


def fgsm_at(eps: float, *, alpha_factor: float = 1.0, ramp_steps: int = 0) -> FGSMTrainingStep:
    """Plain FGSM training: zero start, step ``alpha_factor * eps`` (default ``eps``)."""
    return FGSMTrainingStep(eps=eps, ramp_steps=ramp_steps, alpha_factor=alpha_factor, random_start=False)
