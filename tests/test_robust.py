"""vidlab.robust: attacks stay in the eps-ball and the [0, 1] box, PGD is never weaker than FGSM,
a linear model's worst case is found exactly, the adversarial step functions, the gradient-masking
checks, corruptions (H.264 re-encoding included) and pixel-space model files."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vidlab as vl
from vidlab import robust as R
from vidlab.train.engine import StepContext, TrainConfig, default_step

SHAPE = (6, 3, 4, 8, 8)  # (B, C, T, H, W)
D = 3 * 4 * 8 * 8


def _clips(seed: int = 0, lo: float = 0.0, hi: float = 1.0, shape=SHAPE) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(shape, generator=g)


class Linear(nn.Module):
    """Logits ``W x + b`` of the flattened clip (the model whose worst case is known in closed form)."""

    def __init__(self, classes: int = 2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(D, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _small_cnn(seed: int = 0, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, classes),
    ).eval()


def _self_labels(model: nn.Module, clips: torch.Tensor) -> torch.Tensor:
    """The model's own predictions: clean accuracy is 1, so every drop is the attack's doing."""
    with torch.no_grad():
        return model(clips).argmax(1)


ATTACKS = {
    "fgsm": lambda m, x, y, eps: R.fgsm(m, x, y, eps=eps),
    "fgsm_rs": lambda m, x, y, eps: R.fgsm(m, x, y, eps=eps, alpha=1.25 * eps, random_start=True),
    "pgd": lambda m, x, y, eps: R.pgd(m, x, y, eps=eps, steps=5, restarts=2),
    "sparse": lambda m, x, y, eps: R.frame_sparse_attack(m, x, y, k=2, eps=eps, steps=3)[0],
    "static": lambda m, x, y, eps: R.temporal_attack(m, x, y, eps=eps, pattern="static", steps=3),
    "flicker": lambda m, x, y, eps: R.temporal_attack(m, x, y, eps=eps, pattern="flicker", steps=3),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_linf_attacks_stay_in_ball_and_box(name):
    model = _small_cnn()
    x = _clips(1)  # uniform in [0, 1]: many pixels next to the box edges
    y = _self_labels(model, x)
    eps = 8 / 255
    adv = ATTACKS[name](model, x, y, eps)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= eps + 1e-6
    assert (adv - x).abs().max() > eps / 2  # it did move


def test_l2_pgd_stays_in_ball_and_box():
    model = _small_cnn()
    x = _clips(2)
    y = _self_labels(model, x)
    eps = 0.5
    adv = R.pgd(model, x, y, eps=eps, norm="l2", steps=5, restarts=2)
    assert adv.min() >= 0 and adv.max() <= 1
    norms = (adv - x).flatten(1).norm(dim=1)
    assert norms.max() <= eps + 1e-5 and norms.max() > eps / 2


def test_attacks_refuse_normalised_clips():
    model = _small_cnn()
    x = _clips(0) * 4 - 2  # a normalised batch, not pixels
    with pytest.raises(ValueError, match="Normalized"):
        R.pgd(model, x, torch.zeros(len(x), dtype=torch.long), eps=0.1)


def test_sparse_attack_changes_only_the_chosen_frames():
    model = _small_cnn()
    x = _clips(3, 0.2, 0.8)
    y = _self_labels(model, x)
    adv, frames = R.frame_sparse_attack(model, x, y, k=1, eps=0.05, steps=3)
    scores = R.frame_scores(model, x, y)
    assert torch.equal(frames[:, 0], scores.argmax(1))  # the frame with the largest gradient
    changed = (adv - x).abs().amax(dim=(1, 3, 4)) > 0  # (B, T)
    chosen = torch.zeros_like(changed).scatter_(1, frames, True)
    assert not (changed & ~chosen).any()


def test_temporal_patterns_share_the_perturbation():
    model = _small_cnn()
    x = _clips(4, 0.2, 0.8)  # far from the box edges: no clamping, the perturbation shows as added
    y = _self_labels(model, x)
    static = R.temporal_attack(model, x, y, eps=0.05, pattern="static", steps=3) - x
    assert torch.allclose(static, static[:, :, :1].expand_as(static), atol=1e-6)
    flicker = R.temporal_attack(model, x, y, eps=0.05, pattern="flicker", steps=3) - x
    assert torch.allclose(flicker, flicker[..., :1, :1].expand_as(flicker), atol=1e-6)
    assert flicker.abs().amax(dim=(1, 3, 4)).std() >= 0  # one value per frame and channel


def _margin(model: Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = model(x)
    return z.gather(1, y[:, None]).squeeze(1) - z.gather(1, (1 - y)[:, None]).squeeze(1)


def test_linear_model_linf_worst_case_is_exact():
    """Two classes, logits W x + b: the loss falls with the margin v.x + c (v = w_y - w_other), so the
    worst clip in the L-inf ball and the box moves every pixel to its extreme against sign(v)."""
    model = Linear()
    x = _clips(5)
    with torch.no_grad():
        y = model(x).argmax(1)
        eps = 6 / 255
        v = (model.fc.weight[y] - model.fc.weight[1 - y]).view_as(x)
        worst = torch.where(v > 0, (x - eps).clamp(min=0), (x + eps).clamp(max=1))
        exact = _margin(model, worst, y)
    for adv in (R.fgsm(model, x, y, eps=eps), R.pgd(model, x, y, eps=eps, steps=10, restarts=1)):
        with torch.no_grad():
            assert torch.allclose(_margin(model, adv, y), exact, atol=1e-4)
    with torch.no_grad():  # and nothing in the ball does better: random points have larger margins
        for seed in range(5):
            g = torch.Generator().manual_seed(seed)
            other = (x + eps * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
            assert (_margin(model, other, y) >= exact - 1e-5).all()


def test_linear_model_l2_worst_case_is_exact():
    """Without the box in play, the L2 worst case moves the clip by eps along -v / ||v||: the margin
    drops by exactly eps * ||v||_2."""
    model = Linear(seed=1)
    x = _clips(6, 0.3, 0.7)
    eps = 0.5
    with torch.no_grad():
        y = model(x).argmax(1)
        v = (model.fc.weight[y] - model.fc.weight[1 - y])
        exact = _margin(model, x, y) - eps * v.norm(dim=1)
    adv = R.pgd(model, x, y, eps=eps, norm="l2", steps=10, random_start=False)
    adv_rs = R.pgd(model, x, y, eps=eps, norm="l2", steps=20, alpha=eps / 4, random_start=True)
    with torch.no_grad():
        assert torch.allclose(_margin(model, adv, y), exact, atol=1e-4)
        assert torch.allclose(_margin(model, adv_rs, y), exact, atol=2e-2)  # from a random start it converges


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pgd_never_weaker_than_fgsm(seed):
    model = _small_cnn(seed)
    x = _clips(10 + seed, shape=(24, 3, 4, 8, 8))
    y = _self_labels(model, x)
    for eps in (1 / 255, 4 / 255):
        fg = R.fgsm(model, x, y, eps=eps)
        pg = R.pgd(model, x, y, eps=eps, steps=10, restarts=2)
        with torch.no_grad():
            assert R.accuracy(model, pg, y) <= R.accuracy(model, fg, y)
            # the worst case kept per sample is never better for the model than the clean clip
            assert (R.cross_entropy(model(pg), y) >= R.cross_entropy(model(x), y) - 1e-6).all()


def test_pgd_last_iterate_is_the_textbook_algorithm():
    model = _small_cnn(4)
    x = _clips(21, shape=(8, 3, 4, 8, 8))
    y = _self_labels(model, x)
    eps, alpha, steps = 4 / 255, 1 / 255, 5
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y, reduction="sum"), delta)
        delta = (delta + alpha * grad.sign()).clamp(-eps, eps).detach()
    textbook = (x + delta).clamp(0, 1)
    ours = R.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False, keep_best=False)
    assert torch.allclose(ours, textbook, atol=1e-7)


def test_pgd_restarts_keep_the_worst_case_per_sample():
    model = _small_cnn(3)
    x = _clips(20, shape=(32, 3, 4, 8, 8))
    y = _self_labels(model, x)
    eps = 2 / 255
    one = R.pgd(model, x, y, eps=eps, steps=3, restarts=1, generator=torch.Generator().manual_seed(0))
    more = R.pgd(model, x, y, eps=eps, steps=3, restarts=4, skip_fooled=False, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # restart 1 of both runs draws the same start; more restarts can only raise each sample's loss
        assert (R.cross_entropy(model(more), y) >= R.cross_entropy(model(one), y) - 1e-6).all()


# --- adversarial training steps -------------------------------------------------------------------

def _ctx(global_step: int = 0) -> StepContext:
    return StepContext(device=torch.device("cpu"), cfg=TrainConfig(epochs=1), epoch=0, step=0, global_step=global_step,
                       criterion=nn.CrossEntropyLoss(), amp_enabled=False, amp_dtype=torch.bfloat16)


def test_ramped_eps():
    assert R.ramped_eps(0.1, 0, 0) == pytest.approx(0.1)
    assert R.ramped_eps(0.1, 0, 10) == pytest.approx(0.01)
    assert R.ramped_eps(0.1, 4, 10) == pytest.approx(0.05)
    assert R.ramped_eps(0.1, 9, 10) == pytest.approx(0.1) and R.ramped_eps(0.1, 50, 10) == pytest.approx(0.1)
    step = R.fgsm_rs(8 / 255, ramp_steps=4)
    assert step.eps_at(1) == pytest.approx(4 / 255) and step.alpha_factor == 1.25 and step.random_start


def test_fgsm_step_trains_on_the_exact_worst_case_of_a_linear_model():
    model = Linear()
    x = _clips(7)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 4 / 255
    out = R.fgsm_at(eps)(model, {"video": x, "label": y}, _ctx())
    worst = R.pgd(model, x, y, eps=eps, steps=10)
    assert out.logits.shape == (len(x), 2)
    assert torch.allclose(out.loss, F.cross_entropy(model(worst), y), atol=1e-5)
    assert out.loss > F.cross_entropy(model(x), y)


@pytest.mark.parametrize("make", [lambda e, r: R.pgd_at(e, steps=3, ramp_steps=r), lambda e, r: R.fgsm_rs(e, ramp_steps=r)])
def test_adversarial_steps(make):
    model = _small_cnn()
    x = _clips(8)
    y = _self_labels(model, x)
    batch = {"video": x, "label": y}
    clean = default_step(model, batch, _ctx())
    assert torch.allclose(make(0.0, 0)(model, batch, _ctx()).loss, clean.loss)  # eps 0: a clean step
    step = make(8 / 255, 10)
    out = step(model, batch, _ctx(global_step=4))
    assert step.last_eps == pytest.approx(4 / 255)
    assert out.loss > clean.loss and out.loss.requires_grad
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_adversarial_step_plugs_into_fit():
    model = _small_cnn()
    g = torch.Generator().manual_seed(0)
    batches = [{"video": torch.rand(SHAPE, generator=g), "label": torch.randint(0, 4, (SHAPE[0],), generator=g)}
               for _ in range(3)]
    cfg = TrainConfig(epochs=2, lr=1e-2, warmup_epochs=0)
    step = R.pgd_at(4 / 255, steps=2, ramp_steps=4)
    history = vl.train.fit(model, batches, batches, cfg, device="cpu", step_fn=step, progress=False, num_classes=4)
    assert len(history) == 2 and all(math.isfinite(v) for v in history.train_loss)
    assert step.last_eps == pytest.approx(4 / 255)  # 6 steps: the ramp is over


# --- evaluation and the gradient-masking checks -----------------------------------------------------

class Quantised(nn.Module):
    """A gradient-masking 'defence': the input is rounded to 4 levels, so its gradient is zero."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 3) / 3)


def test_gradient_masking_checks_pass_a_linear_model_and_catch_a_masked_one():
    model = Linear(seed=2)
    x = _clips(9, shape=(16, 3, 4, 8, 8))
    y = _self_labels(model, x)
    eps = 2 / 255
    transfer = {"self": R.attack_all(model, x, y, lambda m, a, b: R.pgd(m, a, b, eps=eps, steps=10))}
    report = R.gradient_masking_checks(model, x, y, eps=eps, eps_values=[0, eps, 0.5], steps_values=[1, 5, 10],
                                       transfer_clips=transfer, num_classes=2, steps=10)
    assert report.falls_to_zero and report.steps_never_help and report.transfer_weaker and report.passed
    assert report.eps_accuracy[0] == 1.0 and report.eps_accuracy[-1] == 0.0

    masked = Quantised(model)
    y_m = _self_labels(masked, x)
    source = R.attack_all(model, x, y_m, lambda m, a, b: R.pgd(m, a, b, eps=0.2, steps=10))
    masked_report = R.gradient_masking_checks(masked, x, y_m, eps=0.2, eps_values=[0, 0.2, 0.5], steps_values=[1, 5],
                                              transfer_clips={"linear": source}, num_classes=2, steps=5)
    assert not masked_report.falls_to_zero  # zero gradients: PGD cannot move
    assert not masked_report.transfer_weaker  # the other model's clips fool it better than its own gradients
    assert not masked_report.passed
    assert masked_report.as_dict()["passed"] is False


def test_steps_check_can_fail():
    report = R.MaskingReport(eps_values=[0, 1], eps_accuracy=[1.0, 0.0], steps_values=[1, 5, 20],
                             steps_accuracy=[0.3, 0.2, 0.4], white_box=0.2, tolerance=0.0)
    assert not report.steps_never_help
    assert R.MaskingReport([0], [0.0], [1, 5], [0.3, 0.3], 0.3).steps_never_help


# --- corruptions --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs", [("gaussian_noise", {"sigma": 0.1}), ("blur", {"sigma": 1.0}),
                                         ("frame_drop", {"drop": 0.5}), ("temporal_jitter", {"max_shift": 1}),
                                         ("h264", {"crf": 40})])
def test_corruptions_shape_range_and_seed(name, kwargs):
    x = _clips(11, shape=(2, 3, 8, 16, 16))
    a = R.corrupt(x, name, seed=1, **kwargs)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, x)
    if name != "h264":  # x264 is deterministic on one machine, but that is not what this checks
        assert torch.equal(a, R.corrupt(x, name, seed=1, **kwargs))


def test_frame_drop_and_jitter_only_reuse_frames():
    x = _clips(12, shape=(3, 3, 8, 4, 4))
    dropped = R.frame_drop(x, drop=0.6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(dropped[:, :, 0], x[:, :, 0])
    for b in range(3):
        source = 0
        for t in range(8):
            if torch.equal(dropped[b, :, t], x[b, :, t]):
                source = t
            else:  # a lost frame repeats the last frame received
                assert torch.equal(dropped[b, :, t], x[b, :, source])
    jittered = R.temporal_jitter(x, max_shift=1, generator=torch.Generator().manual_seed(0))
    for b in range(3):
        for t in range(8):
            assert any(torch.equal(jittered[b, :, t], x[b, :, s]) for s in range(max(0, t - 1), min(8, t + 2)))


def test_blur_and_noise():
    flat = torch.full((1, 3, 2, 16, 16), 0.4)
    assert torch.allclose(R.gaussian_blur(flat, sigma=2.0), flat, atol=1e-6)
    x = torch.full((1, 3, 8, 32, 32), 0.5)
    noisy = R.gaussian_noise(x, sigma=0.1, generator=torch.Generator().manual_seed(0))
    assert (noisy - x).std().item() == pytest.approx(0.1, rel=0.05)


def test_h264_reencode_quality_follows_crf():
    # a smooth moving pattern, like real video (noise would be destroyed at any quality)
    t = torch.arange(8).view(1, 1, 8, 1, 1).float()
    h = torch.arange(32).view(1, 1, 1, 32, 1).float()
    w = torch.arange(32).view(1, 1, 1, 1, 32).float()
    x = (0.5 + 0.4 * torch.sin((h + 2 * t) / 4) * torch.cos((w - t) / 5)).expand(2, 3, 8, 32, 32).clone()
    x[:, 1] = x[:, 1].flip(-1)
    good = R.h264_reencode(x, crf=5)
    bad = R.h264_reencode(x, crf=50)
    err_good, err_bad = (good - x).abs().mean(), (bad - x).abs().mean()
    assert err_good < 0.02 < err_bad
    with pytest.raises(ValueError, match="even"):
        R.h264_reencode(torch.rand(1, 3, 4, 15, 16))


# --- model files --------------------------------------------------------------------------------------

def test_load_pixel_model_round_trip(tmp_path):
    inner = vl.models.create_model("test_cnn3d", num_classes=5, widths=(4, 8, 8, 8)).eval()  # kwargs travel in the file
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    path = vl.models.save_model(inner, tmp_path / "m.pt", mean=mean, std=std, num_frames=4, img_size=32,
                                class_names=[str(i) for i in range(5)])
    model = R.load_pixel_model(path)
    x = torch.rand(2, 3, 4, 32, 32)
    with torch.no_grad():
        expected = inner((x - torch.tensor(mean).view(1, 3, 1, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1, 1))
        assert torch.allclose(model(x), expected, atol=1e-5)
    assert not model.training and model.class_names == [str(i) for i in range(5)]
