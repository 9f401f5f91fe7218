"""White-box attacks on video classifiers, in pixel space.

Every attack takes a model that maps clips in [0, 1] ``(B, C, T, H, W)`` to logits ``(B, K)``
(wrap a model trained on normalised clips with :class:`vidlab.models.Normalized`), the clean
clips and their labels, and returns adversarial clips of the same shape, clamped to [0, 1]
and within ``eps`` of the clean clips (L-inf: every pixel moves at most ``eps``; L2: the
whole clip's perturbation has norm at most ``eps``). ``eps`` is in pixel units, e.g. ``4/255``.

* :func:`fgsm`: one signed-gradient step (Goodfellow et al. 2015), optionally from a random
  start (the attack inside "fast" adversarial training).
* :func:`pgd`: projected gradient ascent (Madry et al. 2018), L-inf or L2, with random start,
  step size, steps and restarts; it keeps the worst case per sample over every iterate and
  restart (misclassified beats correct, then the higher loss wins). A ``mask`` limits the
  pixels it may touch and ``delta_shape`` shares one perturbation across dimensions.
* :func:`frame_sparse_attack`: PGD on only ``k`` of the ``T`` frames, chosen where the loss
  gradient is largest.
* :func:`temporal_attack`: one perturbation shared by every frame (``"static"``), or one colour
  shift per frame and none within a frame (``"flicker"``).

The model's mode is left as it is: call ``model.eval()`` before attacking a trained model.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LossFn",
    "cross_entropy",
    "project",
    "fgsm",
    "pgd",
    "frame_scores",
    "top_frames",
    "frame_mask",
    "frame_sparse_attack",
    "temporal_attack",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(logits (B, K), labels (B,)) -> (B,)`` per-sample loss the attacker maximises."""


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross entropy ``(B,)``: the default loss every attack maximises."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


def _check(clips: torch.Tensor, labels: torch.Tensor, eps: float, norm: str, where: str) -> None:
    if clips.ndim != 5:
        raise ValueError(f"{where}: clips must be (B, C, T, H, W), got shape {tuple(clips.shape)}")
    if labels.shape != clips.shape[:1]:
        raise ValueError(f"{where}: labels must be (B,) = ({clips.shape[0]},), got {tuple(labels.shape)}")
    if not eps >= 0:
        raise ValueError(f"{where}: eps must be >= 0 (pixel units, e.g. 4/255), got {eps!r}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"{where}: norm must be 'linf' or 'l2', got {norm!r}")
    if clips.numel() and (clips.min() < 0 or clips.max() > 1):
        raise ValueError(
            f"{where}: clips must be pixels in [0, 1] (got {clips.min().item():.3f}..{clips.max().item():.3f}); "
            "attack the model wrapped in vidlab.models.Normalized and pass un-normalised clips"
        )


def _per_sample_norm(delta: torch.Tensor) -> torch.Tensor:
    """L2 norm of each sample's perturbation, shaped ``(B, 1, ..., 1)`` to broadcast."""
    return delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (delta.ndim - 1)))


def project(delta: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project perturbations ``(B, ...)`` onto the ``eps``-ball: clamp each entry (L-inf) or
    shrink each sample whose L2 norm exceeds ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        return delta * (eps / _per_sample_norm(delta)).clamp(max=1.0)
    raise ValueError(f"project: norm must be 'linf' or 'l2', got {norm!r}")


def _ascent(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit size: sign (L-inf) or normalised gradient (L2)."""
    if norm == "linf":
        return grad.sign()
    return grad / _per_sample_norm(grad)


def _random_start(shape: Sequence[int], eps: float, norm: str, like: torch.Tensor,
                  generator: torch.Generator | None) -> torch.Tensor:
    """A uniform draw from the ``eps``-ball (L-inf: each entry uniform; L2: uniform in the ball)."""
    if norm == "linf":
        u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
        return (2 * u - 1) * eps
    g = torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
    direction = g / _per_sample_norm(g)
    dims = int(torch.tensor(shape[1:]).prod())
    radius = torch.rand(shape[0], generator=generator, device=like.device, dtype=like.dtype) ** (1.0 / dims)
    return direction * (eps * radius).view(-1, *([1] * (len(shape) - 1)))


def _apply(clips: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Clean clips plus the (broadcast, masked) perturbation, clamped to the [0, 1] box."""
    d = delta if mask is None else delta * mask
    return (clips + d).clamp(0.0, 1.0)


def fgsm(
    model: nn.Module,
    clips: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    alpha: float | None = None,
    random_start: bool = False,
    loss_fn: LossFn = cross_entropy,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fast gradient sign method: ``clip(x + alpha * sign(grad_x loss))`` projected to the L-inf ball.

    ``clips`` ``(B, C, T, H, W)`` in [0, 1], ``labels`` ``(B,)``. ``alpha`` defaults to ``eps``
    (the classic one-step attack). With ``random_start=True`` the step starts from a uniform
    draw in the ball (FGSM-RS of Wong et al. 2020, who step ``alpha = 1.25 * eps``).
    Returns adversarial clips ``(B, C, T, H, W)`` in [0, 1] with ``|x_adv - x| <= eps``.
    """
    _check(clips, labels, eps, "linf", "fgsm")
    alpha = eps if alpha is None else alpha
    clips = clips.detach()
    delta = _random_start(clips.shape, eps, "linf", clips, generator) if random_start else torch.zeros_like(clips)
    delta = ((clips + delta).clamp(0, 1) - clips).requires_grad_(True)
    loss = loss_fn(model(clips + delta), labels).sum()
    (grad,) = torch.autograd.grad(loss, delta)
    delta = project(delta.detach() + alpha * grad.sign(), eps, "linf")
    return _apply(clips, delta, None).detach()


def pgd(
    model: nn.Module,
    clips: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    alpha: float | None = None,
    steps: int = 10,
    restarts: int = 1,
    norm: str = "linf",
    random_start: bool = True,
    loss_fn: LossFn = cross_entropy,
    mask: torch.Tensor | None = None,
    delta_shape: Sequence[int] | None = None,
    skip_fooled: bool = True,
    keep_best: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent on the loss, ascending: the strongest first-order attack here.

    Args:
        model: maps ``(B, C, T, H, W)`` clips in [0, 1] to logits ``(B, K)``.
        clips: clean clips ``(B, C, T, H, W)`` in [0, 1]; labels ``(B,)``.
        eps: radius of the ball (pixel units): per pixel for ``"linf"``, per clip for ``"l2"``.
        alpha: step size; default ``2.5 * eps / steps`` (Madry et al.'s rule of thumb).
        steps, restarts: ascent steps per restart; independent restarts (each from a fresh random
            start; the first from zero when ``random_start=False``).
        mask: ``0/1`` tensor broadcastable to the perturbation: pixels it zeroes stay clean
            (:func:`frame_mask` picks frames).
        delta_shape: the perturbation's own shape when it is shared across dimensions, e.g.
            ``(B, C, 1, H, W)`` (one pattern for every frame); it broadcasts onto the clip. For
            ``"l2"``, ``eps`` then bounds the shared pattern's norm, not the whole clip's.
        skip_fooled: later restarts only attack samples no earlier restart has misclassified
            (their worst case for accuracy is already found), which saves time.
        keep_best: score the clean clip and every iterate and keep the worst for the model
            (default); ``False`` scores only each restart's last iterate (the textbook algorithm).

    Returns the worst adversarial clips found ``(B, C, T, H, W)``, in [0, 1] and within ``eps``.
    Every iterate is scored (the forward pass of the next step scores it for free) and so is
    the clean clip: a misclassified clip beats a correct one, then the higher loss wins.
    """
    _check(clips, labels, eps, norm, "pgd")
    if steps < 1 or restarts < 1:
        raise ValueError(f"pgd: steps and restarts must be >= 1, got steps={steps}, restarts={restarts}")
    alpha = 2.5 * eps / steps if alpha is None else alpha
    clips = clips.detach()
    shape = tuple(delta_shape) if delta_shape is not None else tuple(clips.shape)
    if len(shape) != clips.ndim or shape[0] != clips.shape[0]:
        raise ValueError(f"pgd: delta_shape {shape} must be (B, ...) with {clips.ndim} dims, B={clips.shape[0]}")
    full = shape == tuple(clips.shape)
    best = clips.clone()
    if keep_best:  # the clean clip is the first candidate: the result is never better for the model
        with torch.no_grad():
            logits = model(clips)
            best_loss = loss_fn(logits, labels).float()
            best_fooled = logits.argmax(1) != labels
    else:
        best_loss = torch.full((clips.shape[0],), -float("inf"), device=clips.device)
        best_fooled = torch.zeros(clips.shape[0], dtype=torch.bool, device=clips.device)

    def keep(idx: torch.Tensor, adv: torch.Tensor, logits: torch.Tensor) -> None:
        loss = loss_fn(logits, labels[idx]).detach().float()
        fooled = logits.argmax(1) != labels[idx]
        better = (fooled & ~best_fooled[idx]) | ((fooled == best_fooled[idx]) & (loss > best_loss[idx]))
        chosen = idx[better]
        best[chosen] = adv[better].detach()
        best_loss[chosen] = loss[better]
        best_fooled[chosen] = fooled[better]

    for restart in range(restarts):
        idx = torch.nonzero(~best_fooled).flatten() if (skip_fooled and restart > 0) else torch.arange(clips.shape[0], device=clips.device)
        if idx.numel() == 0:
            break
        x, y = clips[idx], labels[idx]
        m = mask[idx] if (mask is not None and mask.shape[0] == clips.shape[0]) else mask
        sub_shape = (idx.numel(), *shape[1:])
        if random_start or restart > 0:
            delta = _random_start(sub_shape, eps, norm, x, generator)
        else:
            delta = torch.zeros(sub_shape, device=x.device, dtype=x.dtype)
        for _ in range(steps):
            if full:  # keep x + delta in the box
                delta = (x + delta).clamp(0, 1) - x
            delta.requires_grad_(True)
            # a full-shape delta is already inside the box; clamping again would zero the gradient of
            # pixels sitting exactly on its edge and freeze them there
            adv = x + (delta if m is None else delta * m) if full else _apply(x, delta, m)
            logits = model(adv)
            if keep_best:
                keep(idx, adv, logits.detach())
            (grad,) = torch.autograd.grad(loss_fn(logits, y).sum(), delta)
            delta = project(delta.detach() + alpha * _ascent(grad, norm), eps, norm)
        with torch.no_grad():
            adv = _apply(x, delta, m)
            keep(idx, adv, model(adv))
    return best.detach()


def frame_scores(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, *,
                 loss_fn: LossFn = cross_entropy) -> torch.Tensor:
    """How much each frame matters to the loss: the L1 norm of the input gradient per frame, ``(B, T)``."""
    clips = clips.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model(clips), labels).sum(), clips)
    return grad.abs().sum(dim=(1, 3, 4))


def top_frames(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, k)`` of the ``k`` highest-scoring frames of each clip (``scores`` ``(B, T)``)."""
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"top_frames: k must be in 1..T={scores.shape[1]}, got {k}")
    return scores.topk(k, dim=1).indices


def frame_mask(frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """A ``(B, 1, T, 1, 1)`` float mask that is 1 on the chosen ``frames`` ``(B, k)`` and 0 elsewhere."""
    mask = torch.zeros(frames.shape[0], num_frames, device=frames.device)
    mask.scatter_(1, frames, 1.0)
    return mask.view(frames.shape[0], 1, num_frames, 1, 1)


def frame_sparse_attack(
    model: nn.Module,
    clips: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int,
    eps: float,
    select: str = "gradient",
    generator: torch.Generator | None = None,
    **pgd_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD that may only change ``k`` of the ``T`` frames of each clip.

    ``select="gradient"`` perturbs the frames with the largest input-gradient norm at the clean
    clip (:func:`frame_scores`); ``"random"`` picks them at random (the baseline that shows
    whether choosing matters). Other keyword arguments go to :func:`pgd` (``steps``, ``alpha``,
    ``restarts``, ``norm``). Returns ``(adversarial clips (B, C, T, H, W), frames (B, k))``.
    """
    _check(clips, labels, eps, pgd_kwargs.get("norm", "linf"), "frame_sparse_attack")
    t = clips.shape[2]
    if select == "gradient":
        frames = top_frames(frame_scores(model, clips, labels, loss_fn=pgd_kwargs.get("loss_fn", cross_entropy)), k)
    elif select == "random":
        if not 1 <= k <= t:
            raise ValueError(f"frame_sparse_attack: k must be in 1..T={t}, got {k}")
        noise = torch.rand(clips.shape[0], t, generator=generator,
                           device=generator.device if generator is not None else clips.device)
        frames = noise.to(clips.device).topk(k, dim=1).indices
    else:
        raise ValueError(f"frame_sparse_attack: select must be 'gradient' or 'random', got {select!r}")
    adv = pgd(model, clips, labels, eps=eps, mask=frame_mask(frames, t), generator=generator, **pgd_kwargs)
    return adv, frames


def temporal_attack(
    model: nn.Module,
    clips: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    pattern: str = "static",
    **pgd_kwargs,
) -> torch.Tensor:
    """PGD with a perturbation shaped by time.

    ``pattern="static"``: one ``(C, H, W)`` perturbation added to every frame (a fixed overlay:
    the attacker cannot adapt it to the motion). ``"flicker"``: one colour offset per frame,
    uniform within the frame, ``(C, T)`` (a flickering light; Pony et al. 2021). Keyword
    arguments go to :func:`pgd`. Returns adversarial clips ``(B, C, T, H, W)`` in [0, 1].
    """
    b, c, t, h, w = clips.shape
    shapes = {"static": (b, c, 1, h, w), "flicker": (b, c, t, 1, 1)}
    if pattern not in shapes:
        raise ValueError(f"temporal_attack: pattern must be one of {sorted(shapes)}, got {pattern!r}")
    return pgd(model, clips, labels, eps=eps, delta_shape=shapes[pattern], **pgd_kwargs)
