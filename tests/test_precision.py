"""vidlab.train.precision: number formats, the hand-written GradScaler against torch's, skipping an
overflowed step, autocast op dtypes, gradient accumulation, checkpointing and step timing."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from vidlab.models import create_model
from vidlab.train import TrainConfig
from vidlab.train.memory import accumulation_difference, checkpoint_blocks, peak_step_memory, training_memory
from vidlab.train.precision import (
    TeachingGradScaler,
    TimedRun,
    batches_from,
    crossover,
    format_table,
    gradient_values,
    round_to,
    step_gradients,
    time_training_steps,
    trace_op_dtypes,
    train_with_scaler,
    underflow_fraction,
)


def _batches(n: int, size: int = 4, classes: int = 5, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"video": torch.randn(size, 3, 4, 32, 32, generator=g), "label": torch.randint(0, classes, (size,), generator=g)}
            for _ in range(n)]


def _model(name: str = "vit_test") -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=5)


def test_format_table_matches_finfo_and_known_formats():
    rows = {r["format"]: r for r in format_table()}
    assert rows["float16"]["max"] == 65504.0 and rows["float16"]["mantissa_bits"] == 10
    assert rows["float16"]["smallest_subnormal"] == 2.0**-24
    assert rows["bfloat16"]["exponent_bits"] == 8 and rows["bfloat16"]["mantissa_bits"] == 7
    assert rows["float8_e4m3fn"]["max"] == 448.0 and rows["float8_e5m2"]["max"] == 57344.0
    assert rows["tf32"]["bits"] == 19 and rows["tf32"]["max"] == rows["float32"]["max"]
    for r in rows.values():
        assert r["bits"] == 1 + r["exponent_bits"] + r["mantissa_bits"], r["format"]


def test_round_to_tf32_rounds_to_nearest_even_on_ten_mantissa_bits():
    x = torch.tensor([1 + 2**-11, 1 + 3 * 2**-11, -(1 + 3 * 2**-11), 1 + 2**-10, float("inf")])
    assert round_to(x, "tf32").tolist() == [1.0, 1 + 2**-9, -(1 + 2**-9), 1 + 2**-10, float("inf")]
    v = torch.randn(1000) * 100
    r = round_to(v, "tf32")
    assert (r.view(torch.int32) & ((1 << 13) - 1) == 0).all()  # 13 low mantissa bits cleared
    assert ((r - v).abs() <= v.abs() * 2**-11 * 1.0001).all()  # within half a tf32 ulp
    assert torch.equal(round_to(v, "float16"), v.half().float())
    with pytest.raises(ValueError, match="unknown format"):
        round_to(v, "float12")


def test_underflow_fraction_with_and_without_scale():
    values = torch.tensor([1e-9, 1e-8, 1e-3, 0.0])  # zeros are not counted
    assert underflow_fraction(values) == pytest.approx(2 / 3)
    assert underflow_fraction(values, scale=2.0**10) == 0.0
    assert underflow_fraction(values, dtype=torch.bfloat16) == 0.0  # bf16 has fp32's range


def test_teaching_scaler_matches_torch_and_skips_the_overflow():
    batches = _batches(8)
    a, b = _model(), _model()
    ours = TeachingGradScaler(init_scale=2.0**10, growth_interval=3)
    theirs = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    ra = train_with_scaler(a, batches, theirs, overflow_at=[5])
    rb = train_with_scaler(b, batches, ours, overflow_at=[5])
    assert ra["scales"] == rb["scales"]
    assert ra["scales"][3] == 2.0**11  # grew after 3 clean steps
    assert ra["scales"][6] == ra["scales"][5] / 2  # backed off after the overflow
    assert ra["skipped"] == rb["skipped"] and ra["skipped"][5] and sum(ra["skipped"]) == 1
    assert ra["skipped_steps"] == rb["skipped_steps"] == 1
    assert ours.history[5] == (ra["scales"][5], True)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_an_overflowed_step_changes_no_weight():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    scaler = TeachingGradScaler()
    out = train_with_scaler(model, _batches(1), scaler, overflow_at=[0])
    assert out["skipped"] == [True] and scaler.get_scale() == 2.0**15
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    model2 = _model()
    train_with_scaler(model2, _batches(1), TeachingGradScaler())
    assert not torch.equal(model2.head.weight, before["head.weight"])  # a clean step does change them


def test_scaler_unscale_twice_is_an_error():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(_batches(1)[0]["video"]).sum().backward()
    scaler = TeachingGradScaler()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already"):
        scaler.unscale_(opt)


def test_gradient_values_needs_a_backward():
    model = _model()
    with pytest.raises(ValueError, match="no gradients"):
        gradient_values(model)
    model(_batches(1)[0]["video"]).sum().backward()
    assert gradient_values(model).numel() == sum(p.numel() for p in model.parameters())


def test_autocast_trace_lowers_matmuls_and_keeps_norms_and_loss_in_fp32():
    batch = _batches(1)[0]
    rows = trace_op_dtypes(_model(), batch["video"], labels=batch["label"])
    out = {r["op"]: r["output_dtypes"] for r in rows}
    assert out["addmm"] == "bfloat16" and out["convolution"] == "bfloat16"
    assert out["native_layer_norm"] == "float32" and out["_log_softmax"] == "float32"
    plain = {r["op"]: r["output_dtypes"] for r in trace_op_dtypes(_model(), batch["video"], amp_dtype=None)}
    assert plain["addmm"] == "float32" and "_to_copy" not in plain


def test_accumulation_equals_large_batch_without_batchnorm_only():
    big = _batches(1, size=8)[0]
    assert accumulation_difference(_model(), big, 4) < 1e-6
    assert accumulation_difference(_model("test_x3d"), big, 4) > 1e-4  # BatchNorm sees 2 clips, not 8
    with pytest.raises(ValueError, match="equal slices"):
        accumulation_difference(_model(), big, 3)


def test_checkpointing_keeps_outputs_and_gradients_and_saves_activation_memory():
    model = _model()
    ckpt = checkpoint_blocks(model)
    x = _batches(1)[0]["video"]
    torch.testing.assert_close(ckpt(x), model(x))
    model(x).sum().backward()
    ckpt(x).sum().backward()
    for (name, p), q in zip(model.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert training_memory(ckpt, x)["activations"] < training_memory(model, x)["activations"]
    cfg = TrainConfig(epochs=1)
    batch = _batches(1)[0]
    plain, saved = peak_step_memory(model, batch, cfg), peak_step_memory(ckpt, batch, cfg)
    assert saved["activations"] < plain["activations"]
    assert plain["weights"] == pytest.approx(saved["weights"]) and plain["optimizer"] > 0
    with pytest.raises(ValueError, match="no module list"):
        checkpoint_blocks(model, attr="stages")


def test_time_training_steps_interleaves_every_run():
    batches = _batches(1)
    runs = {"fp32": TimedRun(_model(), TrainConfig(epochs=1)),
            "bf16": TimedRun(_model(), TrainConfig(epochs=1, amp=True)),
            "fp16": TimedRun(_model(), TrainConfig(epochs=1, amp=True, amp_dtype="float16"), repeats=1)}
    out = time_training_steps(runs, batches, repeats=2, warmup=1)
    for name in ("fp32", "bf16"):
        assert len(out[name]["steps_s"]) == 2 and out[name]["step_s"] > 0
    assert len(out["fp16"]["steps_s"]) == 1


def test_crossover():
    assert crossover([64, 128, 256], [0.8, 0.9, 1.3]) == pytest.approx(128 + 0.1 / 0.4 * 128)
    assert crossover([64, 128], [1.2, 1.5]) == 64
    assert crossover([64, 128], [0.5, 0.7]) is None
    assert math.isfinite(crossover([1, 2, 3], [0.0, 1.0, 2.0]))


def test_step_gradients_returns_weight_and_activation_gradients_and_clears_them():
    model = _model()
    batch = _batches(1)[0]
    grads = step_gradients(model, batch["video"], batch["label"], modules=model.blocks)
    assert grads["weights"].numel() == sum(p.numel() for p in model.parameters())
    tokens = model.num_patches * model.embed_dim * len(batch["label"])
    assert grads["activations"].numel() == len(model.blocks) * tokens
    assert all(p.grad is None for p in model.parameters())


def test_batches_from_passes_over_a_short_loader_again():
    loader = _batches(3)
    out = batches_from(loader, 7)
    assert len(out) == 7 and out[3]["video"] is loader[0]["video"]
    with pytest.raises(ValueError, match="no batches"):
        batches_from([], 2)
