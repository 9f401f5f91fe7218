"""Robust evaluation: accuracy under attack, against ``eps`` and steps, and the gradient-masking checks.

A defence can look robust because its gradients are useless to the attacker (gradient
masking) rather than because no adversarial clip exists nearby. Three checks catch the usual
cases (Carlini et al. 2019, "On evaluating adversarial robustness"):

1. accuracy falls to (about) 0 as ``eps`` grows: with a large enough budget every clip can be
   turned into anything;
2. more PGD steps never raise accuracy: a stronger optimiser of the same attack cannot do worse;
3. a transfer (black-box) attack, made on another model, is weaker than the white-box one: if
   a model resists its own gradients better than someone else's, its gradients are broken.

Clips are ``(N, C, T, H, W)`` float in [0, 1]; models take them (see :class:`vidlab.models.Normalized`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from vidlab.robust.attacks import pgd

__all__ = [
    "Attack",
    "predict",
    "accuracy",
    "attack_all",
    "accuracy_vs_eps",
    "accuracy_vs_steps",
    "MaskingReport",
    "gradient_masking_checks",
]

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""``attack(model, clips (B, C, T, H, W), labels (B,)) -> adversarial clips (B, C, T, H, W)``."""


@torch.no_grad()
def predict(model: nn.Module, clips: torch.Tensor, *, batch_size: int = 64,
            device: torch.device | str | None = None) -> torch.Tensor:
    """Predicted classes ``(N,)`` (on the CPU) of clips ``(N, C, T, H, W)``, in batches."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    out = [model(clips[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(clips), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 64) -> float:
    """Top-1 accuracy of ``model`` on clips ``(N, C, T, H, W)`` with labels ``(N,)``."""
    if len(clips) == 0:
        raise ValueError("accuracy: no clips")
    return float((predict(model, clips, batch_size=batch_size) == labels.cpu()).float().mean())


def attack_all(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, attack: Attack, *,
               batch_size: int = 64, progress: bool = False, desc: str = "attack") -> torch.Tensor:
    """Run ``attack`` over clips ``(N, C, T, H, W)`` in batches; returns the adversarial clips (CPU)."""
    device = next(model.parameters()).device
    out = []
    starts = range(0, len(clips), batch_size)
    for i in tqdm(starts, desc=desc, disable=not progress, leave=False):
        x, y = clips[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
        out.append(attack(model, x, y).detach().cpu())
    return torch.cat(out)


def _pgd_attack(eps: float, **kwargs: Any) -> Attack:
    return lambda model, x, y: pgd(model, x, y, eps=eps, **kwargs)


def accuracy_vs_eps(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, eps_values: Sequence[float], *,
                    batch_size: int = 64, progress: bool = False, **pgd_kwargs: Any) -> list[float]:
    """PGD accuracy at each ``eps`` (``eps=0`` is the clean accuracy). ``pgd_kwargs``: steps, restarts, norm."""
    accs = []
    for eps in tqdm(eps_values, desc="accuracy vs eps", disable=not progress, leave=False):
        if eps == 0:
            accs.append(accuracy(model, clips, labels, batch_size=batch_size))
            continue
        adv = attack_all(model, clips, labels, _pgd_attack(eps, **pgd_kwargs), batch_size=batch_size)
        accs.append(accuracy(model, adv, labels, batch_size=batch_size))
    return accs


def accuracy_vs_steps(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, steps_values: Sequence[int], *,
                      eps: float, batch_size: int = 64, seed: int = 0, progress: bool = False,
                      **pgd_kwargs: Any) -> list[float]:
    """PGD accuracy at ``eps`` for each number of steps (step size ``2.5 * eps / steps`` unless given).
    Each run starts from the same random draws (``seed``), so only the optimiser's strength differs."""
    accs = []
    for steps in tqdm(steps_values, desc="accuracy vs steps", disable=not progress, leave=False):
        g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
        adv = attack_all(model, clips, labels, _pgd_attack(eps, steps=steps, generator=g, **pgd_kwargs),
                         batch_size=batch_size)
        accs.append(accuracy(model, adv, labels, batch_size=batch_size))
    return accs


@dataclass
class MaskingReport:
    """The three gradient-masking checks of one model (see the module docstring).

    ``eps_values`` / ``eps_accuracy``: PGD accuracy against ``eps`` up to a large budget;
    ``steps_values`` / ``steps_accuracy``: accuracy against PGD steps at the evaluation ``eps``;
    ``white_box``: PGD accuracy at that ``eps``; ``transfer``: accuracy on clips attacked on each
    other model (name -> accuracy). ``tolerance``: slack for sampling noise (a fraction of clips).
    """

    eps_values: list[float]
    eps_accuracy: list[float]
    steps_values: list[int]
    steps_accuracy: list[float]
    white_box: float
    transfer: dict[str, float] = field(default_factory=dict)
    chance: float = 0.0
    tolerance: float = 0.0

    @property
    def falls_to_zero(self) -> bool:
        """The accuracy at the largest ``eps`` is at most chance level (plus tolerance)."""
        return self.eps_accuracy[-1] <= self.chance + self.tolerance

    @property
    def steps_never_help(self) -> bool:
        """No run with more PGD steps scores higher than one with fewer (within tolerance)."""
        acc = self.steps_accuracy
        return all(later <= min(acc[: i + 1]) + self.tolerance for i, later in enumerate(acc[1:], start=0))

    @property
    def transfer_weaker(self) -> bool:
        """Every transfer attack leaves at least the white-box accuracy (within tolerance)."""
        return all(acc + self.tolerance >= self.white_box for acc in self.transfer.values())

    @property
    def passed(self) -> bool:
        return self.falls_to_zero and self.steps_never_help and self.transfer_weaker

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers and flags (JSON-ready)."""
        return {
            "eps_values": list(self.eps_values), "eps_accuracy": list(self.eps_accuracy),
            "steps_values": list(self.steps_values), "steps_accuracy": list(self.steps_accuracy),
            "white_box": self.white_box, "transfer": dict(self.transfer),
            "falls_to_zero": self.falls_to_zero, "steps_never_help": self.steps_never_help,
            "transfer_weaker": self.transfer_weaker, "passed": self.passed,
        }


def gradient_masking_checks(
    model: nn.Module,
    clips: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    eps_values: Sequence[float],
    steps_values: Sequence[int] = (1, 5, 20),
    transfer_clips: dict[str, torch.Tensor] | None = None,
    white_box: float | None = None,
    eps_accuracy: Sequence[float] | None = None,
    num_classes: int | None = None,
    batch_size: int = 64,
    tolerance: float | None = None,
    seed: int = 0,
    progress: bool = False,
    **pgd_kwargs: Any,
) -> MaskingReport:
    """Run the three checks on ``model`` (in eval mode) with clips ``(N, C, T, H, W)`` and labels ``(N,)``.

    ``eps_values`` should end at a large budget (e.g. ``64/255``). ``transfer_clips`` maps a
    source model's name to the clips PGD made on that model (same clips and order as ``clips``).
    ``white_box`` (PGD accuracy at ``eps``) and ``eps_accuracy`` (accuracy at each of ``eps_values``)
    are computed when not given (pass them if you have them). ``tolerance`` defaults to
    two clips' worth (``2 / N``); chance is ``1 / num_classes`` (0 when not given).
    """
    model.eval()
    n = len(clips)
    tol = 2.0 / n if tolerance is None else tolerance
    if eps_accuracy is None:
        eps_acc = accuracy_vs_eps(model, clips, labels, eps_values, batch_size=batch_size, progress=progress,
                                  **pgd_kwargs)
    else:
        eps_acc = [float(a) for a in eps_accuracy]
        if len(eps_acc) != len(eps_values):
            raise ValueError(f"gradient_masking_checks: {len(eps_acc)} eps_accuracy values for {len(eps_values)} eps_values")
    steps_kwargs = {k: v for k, v in pgd_kwargs.items() if k not in ("steps", "alpha")}
    steps_acc = accuracy_vs_steps(model, clips, labels, steps_values, eps=eps, batch_size=batch_size, seed=seed,
                                  progress=progress, **steps_kwargs)
    if white_box is None:
        white_box = accuracy_vs_eps(model, clips, labels, [eps], batch_size=batch_size, **pgd_kwargs)[0]
    transfer = {name: accuracy(model, adv, labels, batch_size=batch_size) for name, adv in (transfer_clips or {}).items()}
    return MaskingReport(
        eps_values=[float(e) for e in eps_values], eps_accuracy=eps_acc, steps_values=list(steps_values),
        steps_accuracy=steps_acc, white_box=float(white_box), transfer=transfer,
        chance=1.0 / num_classes if num_classes else 0.0, tolerance=tol,
    )
