"""Training engine: metrics, optimizer groups, schedule, loop mechanics, AMP, skips, evaluation, plots."""
from __future__ import annotations

import io
import json
import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vidlab.train import (
    History,
    StepOutput,
    TrainConfig,
    aggregate_views,
    build_optimizer,
    confusion_matrix,
    cosine_with_warmup,
    default_step,
    evaluate,
    fit,
    per_class_accuracy,
    seed_loader_for_epoch,
    topk_accuracy,
    train_one_epoch,
)
from vidlab.viz.plots import plot_bars, plot_confusion, plot_history, plot_per_class

NUM_CLASSES = 3
CLIP = (3, 2, 4, 4)  # (C, T, H, W)


class ClipDataset(Dataset):
    """Separable random clips: class k adds +2 to channel k. Items are dicts like the real datasets."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
        self.videos = torch.randn(n, *CLIP, generator=g) * 0.5
        self.videos[torch.arange(n), self.labels] += 2.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"video": self.videos[i], "label": self.labels[i], "path": f"v{i}.mp4"}


class MeanLinear(nn.Module):
    """``(B, C, T, H, W)`` -> mean over T, H, W -> linear -> ``(B, 3)``."""

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = NUM_CLASSES
        self.head = nn.Linear(CLIP[0], NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3, 4)))


def _model(seed: int = 0) -> MeanLinear:
    torch.manual_seed(seed)
    return MeanLinear()


def _loader(n: int = 16, batch_size: int = 4, shuffle: bool = False, seed: int = 0) -> DataLoader:
    return DataLoader(ClipDataset(n, seed=seed), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator() if shuffle else None)


def _sgd(model: nn.Module, lr: float = 0.5) -> torch.optim.Optimizer:
    return build_optimizer(model, name="sgd", lr=lr, weight_decay=0.0, momentum=0.0)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- metrics


def test_topk_accuracy_hand_computed():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    target = torch.tensor([1, 1, 0])
    acc = topk_accuracy(logits, target, ks=(1, 2, 5))
    assert acc[1] == pytest.approx(1 / 3)
    assert acc[2] == pytest.approx(2 / 3)
    assert acc[5] == 1.0  # k clipped to the 3 classes
    with pytest.raises(ValueError, match="target must be"):
        topk_accuracy(logits, target[:2])


def test_confusion_matrix_and_per_class_accuracy():
    cm = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), num_classes=4)
    expected = torch.zeros(4, 4, dtype=torch.long)
    expected[0, 0] = expected[1, 1] = expected[2, 1] = expected[2, 2] = 1
    assert torch.equal(cm, expected)
    acc = per_class_accuracy(cm)
    assert acc[:3].tolist() == [1.0, 1.0, 0.5] and math.isnan(acc[3].item())
    with pytest.raises(ValueError, match="target has values outside"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), num_classes=4)


def test_aggregate_views_averages_softmax():
    logits = torch.randn(2, 3, 5)
    probs = aggregate_views(logits)
    assert probs.shape == (2, 5)
    torch.testing.assert_close(probs, logits.softmax(-1).mean(1))
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))


# ---------------------------------------------------------------- optimizer and schedule


def test_weight_decay_groups_skip_norms_biases_and_tokens():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
            self.proj = nn.Linear(4, 4)
            self.norm = nn.LayerNorm(4)
            self.frozen = nn.Linear(4, 4)
            self.frozen.requires_grad_(False)

    net = Net()
    optimizer = build_optimizer(net, name="adamw", lr=1e-3, weight_decay=0.1)
    groups = {g["group_name"]: g for g in optimizer.param_groups}
    assert [p is net.proj.weight for p in groups["decay"]["params"]] == [True]
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    no_decay_ids = {id(p) for p in groups["no_decay"]["params"]}
    assert no_decay_ids == {id(net.pos_embed), id(net.proj.bias), id(net.norm.weight), id(net.norm.bias)}
    sgd = build_optimizer(net, name="sgd", lr=0.1, weight_decay=0.1, momentum=0.8)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    with pytest.raises(ValueError, match="unknown optimizer name='lamb'"):
        build_optimizer(net, name="lamb", lr=0.1)


def test_cosine_with_warmup_shape():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = cosine_with_warmup(optimizer, warmup_steps=2, total_steps=6, min_lr_ratio=0.1)
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert all(a > b for a, b in zip(lrs[2:6], lrs[3:7]))
    assert lrs[6] == pytest.approx(0.1) and lrs[7] == pytest.approx(0.1)
    assert lrs[4] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the decay


def test_train_config_validates():
    with pytest.raises(ValueError, match="amp_dtype"):
        TrainConfig(amp_dtype="float8")
    with pytest.raises(ValueError, match="accum_steps"):
        TrainConfig(accum_steps=0)
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({"epochs": 1, "learning_rate": 0.1})


# ---------------------------------------------------------------- the loop


def test_fit_learns_and_records_history():
    cfg = TrainConfig(epochs=4, lr=0.05, weight_decay=0.0, warmup_epochs=1, label_smoothing=0.1, seed=1)
    history = fit(_model(), _loader(48, 8, shuffle=True), _loader(24, 8, seed=5), cfg, device="auto", progress=False)
    assert isinstance(history, History) and len(history) == 4
    assert history.val_top1[-1] >= 0.9
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.skipped_steps == [0, 0, 0, 0]
    assert history.best_epoch in history.epoch and history.best_metric == max(history.val_top1)
    assert json.loads(json.dumps(history.as_dict()))["epoch"] == [0, 1, 2, 3]
    assert History.from_dict(history.as_dict()) == history


def test_gradient_accumulation_equals_the_big_batch():
    cfg_big, cfg_accum = TrainConfig(accum_steps=1), TrainConfig(accum_steps=2)
    big, small = _model(), _model()
    # 12 clips: [8, 4] big batches vs [4, 4 | 4] accumulated (the last window is partial)
    out_big = train_one_epoch(big, _loader(12, 8), _sgd(big), None, cfg=cfg_big, device="cpu", epoch=0, progress=False)
    out_small = train_one_epoch(small, _loader(12, 4), _sgd(small), None, cfg=cfg_accum, device="cpu", epoch=0,
                                progress=False)
    assert out_big["steps"] == out_small["steps"] == 2
    for key, value in _weights(big).items():
        torch.testing.assert_close(_weights(small)[key], value, atol=1e-6, rtol=1e-5)


def test_loader_without_len_still_steps_on_the_last_partial_window():
    model = _model()
    before = _weights(model)["head.weight"]
    batches = iter(list(_loader(12, 4)))  # 3 batches, no len()
    out = train_one_epoch(model, batches, _sgd(model), None, cfg=TrainConfig(accum_steps=2), device="cpu", epoch=0,
                          progress=False)
    assert out["steps"] == 2 and out["skipped_steps"] == 0 and out["samples"] == 12
    assert not torch.equal(_weights(model)["head.weight"], before)


def test_gradient_clipping_bounds_the_update():
    model = _model()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    cfg = TrainConfig(clip_grad_norm=1e-3)
    train_one_epoch(model, _loader(4, 4), _sgd(model, lr=1.0), None, cfg=cfg, device="cpu", epoch=0, progress=False)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < (after - before).norm().item() <= 1e-3 + 1e-7


def test_nonfinite_loss_skips_exactly_that_step():
    def poisoned(kind):
        def step(model, batch, ctx):
            out = default_step(model, batch, ctx)
            if ctx.step == 1:
                factor = float("nan") if kind == "nan" else 0.0
                return StepOutput(loss=out.loss * factor, logits=out.logits)
            return out
        return step

    cfg = TrainConfig()
    skipped_model, zero_model = _model(), _model()
    result = train_one_epoch(skipped_model, _loader(12, 4), _sgd(skipped_model), None, cfg=cfg, device="cpu", epoch=0,
                             step_fn=poisoned("nan"), progress=False)
    train_one_epoch(zero_model, _loader(12, 4), _sgd(zero_model), None, cfg=cfg, device="cpu", epoch=0,
                    step_fn=poisoned("zero"), progress=False)
    assert result["skipped_steps"] == 1 and result["nonfinite_losses"] == 1 and result["steps"] == 3
    assert math.isfinite(result["loss"]) and result["samples"] == 8
    for key, value in _weights(zero_model).items():  # skipping == an update of exactly zero
        assert torch.equal(_weights(skipped_model)[key], value)


def test_nonfinite_gradient_with_finite_loss_is_skipped():
    def inf_grad_step(model, batch, ctx):
        out = default_step(model, batch, ctx)
        weight_sum = model.head.weight.sum()
        return StepOutput(loss=out.loss + torch.sqrt(weight_sum - weight_sum.detach()), logits=out.logits)  # d sqrt(0) = inf

    model = _model()
    before = _weights(model)
    result = train_one_epoch(model, _loader(8, 4), _sgd(model), None, cfg=TrainConfig(), device="cpu", epoch=0,
                             step_fn=inf_grad_step, progress=False)
    assert result["skipped_steps"] == 2 and result["nonfinite_losses"] == 0
    for key, value in before.items():
        assert torch.equal(_weights(model)[key], value)


def test_fp16_overflow_is_skipped_and_the_scale_shrinks():
    cfg = TrainConfig(amp=True, amp_dtype="float16")
    model = _model()
    before = _weights(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)  # fp16 gradients overflow at this scale
    result = train_one_epoch(model, _loader(8, 4), _sgd(model), None, cfg=cfg, device="cpu", epoch=0, scaler=scaler,
                             progress=False)
    assert result["skipped_steps"] == 2
    assert scaler.get_scale() == result["grad_scale"] == 2.0**58
    for key, value in before.items():
        assert torch.equal(_weights(model)[key], value)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    result = train_one_epoch(model, _loader(8, 4), _sgd(model), None, cfg=cfg, device="cpu", epoch=0, scaler=scaler,
                             progress=False)
    assert result["skipped_steps"] == 0
    assert not torch.equal(_weights(model)["head.weight"], before["head.weight"])


def test_step_fn_context_and_bf16_autocast():
    seen = []

    def step(model, batch, ctx):
        with ctx.autocast():
            logits = model(batch["video"].to(ctx.device))
        seen.append((ctx.epoch, ctx.step, ctx.global_step, ctx.device.type, logits.dtype))
        return StepOutput(loss=ctx.criterion(logits.float(), batch["label"]), logits=logits)

    cfg = TrainConfig(amp=True, amp_dtype="bfloat16", accum_steps=2, label_smoothing=0.2)
    model = _model()
    out = train_one_epoch(model, _loader(16, 4), _sgd(model), None, cfg=cfg, device="cpu", epoch=3, step_fn=step,
                          global_step=10, progress=False)
    assert seen == [(3, i, 10 + i // 2, "cpu", torch.bfloat16) for i in range(4)]
    assert out["steps"] == 2 and math.isfinite(out["loss"])


def test_evaluate_multi_view_clip_and_video_level():
    torch.manual_seed(3)
    model = _model()
    videos = torch.randn(4, 3, *CLIP)  # (B=4, V=3, C, T, H, W)
    labels = torch.tensor([0, 1, 2, 1])
    batch = {"video": videos, "label": labels, "path": [f"v{i}" for i in range(4)]}
    result = evaluate(model, [batch], device="cpu", num_classes=NUM_CLASSES, progress=False)
    with torch.no_grad():
        clip_logits = model(videos.flatten(0, 1)).view(4, 3, NUM_CLASSES)
    clip_label = labels.repeat_interleave(3)
    assert result["num_clips"] == 12 and result["num_videos"] == 4
    assert result["clip_top1"] == pytest.approx(topk_accuracy(clip_logits.flatten(0, 1), clip_label)[1])
    probs = clip_logits.softmax(-1).mean(1)
    assert result["video_top1"] == pytest.approx((probs.argmax(1) == labels).float().mean().item())
    assert result["top1"] == result["video_top1"] and result["video_top5"] == 1.0
    assert result["loss"] == pytest.approx(nn.functional.cross_entropy(clip_logits.flatten(0, 1), clip_label).item())
    torch.testing.assert_close(result["predictions"]["prob"], probs)
    assert result["predictions"]["path"] == ["v0", "v1", "v2", "v3"]
    assert result["confusion_matrix"].sum().item() == 4
    assert result["per_class_accuracy"].shape == (NUM_CLASSES,)
    single = evaluate(model, _loader(8, 4), device="cpu", num_classes=NUM_CLASSES, progress=False)
    assert single["clip_top1"] == pytest.approx(single["video_top1"]) and single["num_clips"] == 8


def test_early_stopping_stops_and_restores_the_best_weights():
    def gradient_ascent(model, batch, ctx):  # makes every epoch worse than the one before
        out = default_step(model, batch, ctx)
        return StepOutput(loss=-out.loss, logits=out.logits)

    snapshots = {}
    cfg = TrainConfig(epochs=10, lr=0.5, optimizer="sgd", weight_decay=0.0, early_stopping_patience=2,
                      early_stopping_metric="val_loss", scheduler="constant")
    model = _model()
    data = _loader(16, 8)
    history = fit(model, data, data, cfg, device="cpu", step_fn=gradient_ascent, progress=False,
                  on_epoch_end=lambda epoch, h: snapshots.setdefault(epoch, _weights(model)))
    assert history.epoch == [0, 1, 2] and history.stopped_early
    assert history.best_epoch == 0 and history.val_loss[0] < history.val_loss[1] < history.val_loss[2]
    for key, value in snapshots[0].items():
        assert torch.equal(_weights(model)[key], value)


def test_epoch_data_order_is_a_function_of_seed_and_epoch():
    def order(loader, seed, epoch):
        seed_loader_for_epoch(loader, seed, epoch)
        return [p for batch in loader for p in batch["path"]]

    a, b = _loader(16, 4, shuffle=True), _loader(16, 4, shuffle=True)
    torch.manual_seed(0)
    first = order(a, 1, 2)
    torch.manual_seed(99)  # the global RNG does not matter
    assert order(b, 1, 2) == first
    assert order(a, 1, 3) != first


# ---------------------------------------------------------------- plots


def _is_figure(fig) -> bool:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return isinstance(fig, Figure) and buffer.tell() > 0


def test_plots_return_figures():
    history = History(epoch=[0, 1, 2], train_loss=[1.0, 0.7, 0.5], train_top1=[0.3, 0.6, 0.8],
                      val_loss=[1.1, 0.8, 0.7], val_top1=[0.3, 0.5, 0.6], lr=[1e-3, 5e-4, 1e-4], best_epoch=2)
    fig = plot_history(history, show_lr=True)
    assert _is_figure(fig) and len(fig.axes) == 3
    assert _is_figure(plot_history([("full", history), ("lora", history.as_dict())]))
    cm = torch.tensor([[3, 1], [0, 4]])
    assert _is_figure(plot_confusion(cm, ["left", "right"]))
    assert _is_figure(plot_per_class(torch.tensor([0.5, float("nan"), 1.0]), ["a", "b", "c"]))
    fig = plot_bars({"linear probe": {"top1": 0.6, "params": 0.01}, "LoRA": {"top1": 0.8, "params": 0.05}})
    assert _is_figure(fig) and len(fig.axes[0].patches) == 4
    assert _is_figure(plot_bars([{"method": "full", "top1": 0.9}, {"method": "bitfit", "top1": 0.7}]))
    assert _is_figure(plot_bars({"a": 1.0, "b": 2.0}))
    with pytest.raises(ValueError, match="class_names"):
        plot_confusion(cm, ["only one"])


# ------------------------------------------------------------------------------ step-budgeted runs
def test_fit_steps_cycles_the_loader_to_exactly_the_budget_with_the_shared_schedule():
    """fit_steps runs train_one_epoch over the loader cycled to N optimizer steps (accumulation
    included), with the same warmup + cosine as fit, and records one loss per applied step."""
    from vidlab.train import fit_steps

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 3))
    batches = [{"video": torch.randn(4, 3, 2, 4, 4), "label": torch.tensor([0, 1, 2, 0])} for _ in range(3)]
    seen: list[int] = []
    global_steps: list[int] = []

    def step(m, batch, ctx):
        seen.append(id(batch))
        global_steps.append(ctx.global_step)
        logits = m(batch["video"])
        return StepOutput(loss=ctx.criterion(logits, batch["label"]), logits=logits)

    cfg = TrainConfig(lr=0.1, warmup_steps=2, accum_steps=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    out = fit_steps(model, batches, cfg, steps=4, device="cpu", step_fn=step, optimizer=optimizer, progress=False)
    assert out["steps"] == 4 and len(out["history"]) == 4 and out["skipped_steps"] == 0
    assert seen == [id(b) for b in (batches * 3)[:8]]  # 4 steps x 2 batches, the loader started again
    assert global_steps == [0, 0, 1, 1, 2, 2, 3, 3]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at min_lr_ratio 0
    assert 0.0 <= out["top1"] <= 1.0 and not model.training
    with pytest.raises(ValueError, match="no batches"):
        fit_steps(model, [], cfg, steps=1, device="cpu", progress=False)
