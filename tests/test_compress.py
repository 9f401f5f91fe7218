"""vidlab.compress: the int8 mapping, pruning, structured pruning, 2:4, distillation, latency, Pareto."""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vidlab as vl
from vidlab.compress import distill, evaluate, measure_latency, pruning, quantization, semi_structured


# ----------------------------------------------------------------------------- int8 mapping
def test_affine_mapping_matches_torch_quantize_per_tensor():
    torch.manual_seed(0)
    x = torch.randn(500) * 2 + 0.7
    scale, zp = quantization.affine_qparams(x)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    assert float(scale) == pytest.approx((hi - lo) / 255, rel=1e-6)
    q = quantization.quantize(x, scale, zp)
    ref = torch.quantize_per_tensor(x, float(scale), int(zp), torch.qint8)
    assert q.dtype == torch.int8 and torch.equal(q, ref.int_repr())
    assert torch.allclose(quantization.dequantize(q, scale, zp), ref.dequantize())
    assert (x - quantization.dequantize(q, scale, zp)).abs().max() <= float(scale) / 2 + 1e-6
    assert int(q.min()) == -128 or int(q.max()) == 127  # the range is used up to an end


def test_affine_mapping_per_channel_matches_torch():
    torch.manual_seed(0)
    w = torch.randn(6, 10) * torch.tensor([0.01, 0.1, 1.0, 3.0, 0.5, 2.0])[:, None]
    scale, zp = quantization.affine_qparams(w, axis=0)
    q = quantization.quantize(w, scale, zp, axis=0)
    ref = torch.quantize_per_channel(w, scale.double(), zp, 0, torch.qint8)
    assert torch.equal(q, ref.int_repr())
    assert torch.allclose(quantization.dequantize(q, scale, zp, axis=0), ref.dequantize(), atol=1e-7)
    # rows of very different magnitude: with one scale for the tensor the small rows lose almost everything
    s_t, z_t = quantization.affine_qparams(w)
    per_tensor = quantization.dequantize(quantization.quantize(w, s_t, z_t), s_t, z_t)
    per_channel = quantization.dequantize(q, scale, zp, axis=0)
    small = w[0]
    assert (per_channel[0] - small).norm() < 0.05 * (per_tensor[0] - small).norm()
    assert quantization.roundtrip_error(w, axis=0) <= quantization.roundtrip_error(w)


def test_zero_is_exact_and_all_positive_range_includes_zero():
    x = torch.rand(100) + 1.0  # all positive: the range still includes 0
    scale, zp = quantization.affine_qparams(x)
    assert int(zp) == -128
    assert quantization.dequantize(quantization.quantize(torch.zeros(3), scale, zp), scale, zp).abs().max() == 0


# ----------------------------------------------------------------------------- pruning
def test_global_magnitude_pruning_masks_the_globally_smallest_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    weights = torch.cat([model[0].weight.detach().flatten(), model[2].weight.detach().flatten()]).abs()
    k = int(round(0.6 * weights.numel()))
    threshold = weights.kthvalue(k).values
    pruning.magnitude_prune(model, 0.6)
    for layer in (model[0], model[2]):
        assert not hasattr(layer, "weight_orig") and not hasattr(layer, "weight_mask")  # permanent
        w = layer.weight.detach()
        assert (w[w != 0].abs() > threshold).all()  # every survivor is above the global threshold
    assert pruning.sparsity(model) == pytest.approx(0.6, abs=1e-3)
    # per-layer sparsities differ: the threshold is global, not per layer
    assert (model[0].weight == 0).float().mean() != (model[2].weight == 0).float().mean()


def test_masks_stay_attached_until_made_permanent():
    model = nn.Sequential(nn.Linear(8, 8))
    pruning.magnitude_prune(model, 0.5, permanent=False)
    assert hasattr(model[0], "weight_mask")
    pruning.make_permanent(model)
    assert not hasattr(model[0], "weight_mask") and pruning.sparsity(model) == 0.5


def test_sparse_storage_shrinks_with_sparsity_and_dense_does_not():
    model = vl.models.create_model("vit_test", num_classes=5)
    dense = pruning.state_bytes(model)
    pruning.magnitude_prune(model, 0.9)
    assert pruning.state_bytes(model) == dense
    assert pruning.sparse_bytes(model) < 0.35 * dense


def test_structured_pruning_keeps_x3d_valid_and_smaller():
    torch.manual_seed(0)
    model = vl.models.create_model("test_x3d", num_classes=5).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    params, macs = vl.models.count_params(model), vl.models.count_macs(model, (1, 3, 4, 32, 32))
    pruning.prune_channels(model, x[:1], 0.5)
    assert model(x).shape == (2, 5)
    assert model.head.out_features == 5  # the classifier keeps its classes
    assert vl.models.count_params(model) < 0.5 * params
    assert vl.models.count_macs(model, (1, 3, 4, 32, 32)) < 0.5 * macs
    torch.export.export(model, (x,))  # still one clean graph


def test_structured_pruning_removes_the_weakest_channels_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(), nn.Conv3d(8, 4, 1)).eval()
    dead = [1, 2, 5, 6]
    with torch.no_grad():  # channels that contribute nothing: zero filters, zero BatchNorm affine
        model[0].weight[dead] = 0
        model[0].bias[dead] = 0
        model[1].weight[dead] = 0
        model[1].bias[dead] = 0
        model[3].weight[:, dead] = 0
    x = torch.randn(2, 3, 4, 8, 8)
    before = model(x)
    pruning.prune_channels(model, x, 0.5, ignored_layers=[model[3]])
    assert model[0].out_channels == 4 and model[1].num_features == 4 and model[3].in_channels == 4
    assert torch.allclose(model(x), before, atol=1e-5)


def test_structured_pruning_of_vit_heads():
    model = vl.models.create_model("vit_test", num_classes=5, num_heads=4).eval()
    x = torch.randn(2, 3, 4, 32, 32)
    pruning.prune_channels(model, x, 0.5)
    attn = model.blocks[0].attn
    assert attn.num_heads == 2 and attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim
    assert attn.proj.in_features == attn.num_heads * attn.head_dim
    assert model(x).shape == (2, 5) and model.embed_dim == 32


# ----------------------------------------------------------------------------- 2:4
def test_mask_2_4_keeps_the_two_largest_of_every_four():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.5, -0.2, 0.0]])
    mask = semi_structured.mask_2_4(w)
    assert mask.tolist() == [[False, True, True, False, True, True, False, False]]
    torch.manual_seed(0)
    big = torch.randn(16, 32)
    assert semi_structured.is_2_4(big * semi_structured.mask_2_4(big)) and not semi_structured.is_2_4(big)


def test_apply_2_4_survives_training_and_made_permanent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    layers = semi_structured.apply_2_4(model, exclude=[model[2]])
    assert layers == [model[0]]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 8)).sum().backward()
        opt.step()
    semi_structured.make_permanent(model)
    assert semi_structured.is_2_4(model[0].weight) and (model[0].weight == 0).float().mean() == 0.5


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_gpu_speedup_refuses_without_cuda():
    with pytest.raises(RuntimeError, match="CUDA"):
        semi_structured.gpu_speedup((64, 64), 16)


# ----------------------------------------------------------------------------- distillation
def test_kd_loss_matches_a_hand_computation():
    torch.manual_seed(0)
    zs, zt, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 3, 1, 4])
    tau, alpha = 3.0, 0.6
    pt = torch.exp(zt / tau) / torch.exp(zt / tau).sum(-1, keepdim=True)
    ps = torch.exp(zs / tau) / torch.exp(zs / tau).sum(-1, keepdim=True)
    kl = (pt * torch.log(pt / ps)).sum(-1).mean()  # KL(teacher || student): expectation under the teacher
    ce = -torch.log(torch.softmax(zs, -1)[torch.arange(4), y]).mean()
    expected = alpha * tau**2 * kl + (1 - alpha) * ce
    got = distill.kd_loss(zs, zt, y, temperature=tau, alpha=alpha)
    assert torch.allclose(got, expected, atol=1e-6)
    reverse = (ps * torch.log(ps / pt)).sum(-1).mean()
    assert not torch.allclose(got, alpha * tau**2 * reverse + (1 - alpha) * ce, atol=1e-4)
    assert torch.allclose(distill.kd_loss(zs, zt, y, alpha=0.0), F.cross_entropy(zs, y))
    assert distill.kd_loss(zt, zt, y, alpha=1.0).abs() < 1e-6  # a student equal to its teacher pays nothing


def test_distill_step_trains_with_the_engine():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 4))
    student = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, 4))
    student.num_classes = 4
    batches = [{"video": torch.randn(8, 3, 2, 4, 4), "label": torch.randint(0, 4, (8,))} for _ in range(3)]
    before = [p.clone() for p in teacher.parameters()]
    cfg = vl.train.TrainConfig(epochs=2, lr=1e-2)
    history = vl.train.fit(student, batches, None, cfg, device="cpu", step_fn=distill.DistillStep(teacher, alpha=1.0),
                           progress=False, num_classes=4)
    assert len(history) == 2
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))  # the teacher is frozen
    with torch.no_grad():
        x = torch.cat([b["video"] for b in batches])
        gap = F.kl_div(student(x).log_softmax(-1), teacher(x).softmax(-1), reduction="batchmean")
    assert gap < 0.5


# ----------------------------------------------------------------------------- PT2E int8
def test_static_int8_quantizes_every_linear_not_conv3d_and_saves(tmp_path):
    torch.manual_seed(0)
    model = vl.models.create_model("vit_test", num_classes=5).eval()
    calib = [torch.randn(4, 3, 4, 32, 32) for _ in range(2)]
    converted = quantization.quantize_static(model, calib)
    cover = {r["op"]: r for r in quantization.int8_coverage(converted)}
    assert cover["Linear"]["int8"] == cover["Linear"]["count"] > 0
    assert cover["Conv3d"]["int8"] == 0  # the x86 quantizer does not annotate Conv3d
    x = calib[0]
    with torch.no_grad():
        ref, out = model(x), converted(x)
    assert (ref - out).abs().max() < 0.2 * ref.abs().max()
    path = quantization.save_exported(converted, x, tmp_path / "int8.pt2")
    loaded = quantization.load_exported(path)
    with torch.no_grad():
        assert torch.allclose(loaded(x[:3]), converted(x[:3]), atol=1e-5)  # batch stays dynamic
    # the Linear weights (most of the model but its fp32 Conv3d patch embedding) are stored as int8, without float copies
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert quantization.stored_tensor_bytes(path) < pruning.state_bytes(model) - 2.5 * linear


# ----------------------------------------------------------------------------- latency, evaluation
def test_measure_latency_counts_and_restores_threads():
    threads = torch.get_num_threads()
    calls = []

    def slow(x):
        calls.append(1)
        time.sleep(0.002)
        return x

    lat = measure_latency(slow, torch.zeros(3, 2), warmup=2, repeats=5, threads=1)
    assert lat.repeats == 5 and len(calls) == 1 + 2 + 5 and lat.batch_size == 3 and lat.threads == 1
    assert lat.min_ms >= 2.0 and lat.min_ms <= lat.median_ms <= lat.p95_ms
    assert lat.items_per_s == pytest.approx(3000 / lat.median_ms)
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError):
        measure_latency(slow, torch.zeros(1), repeats=0)


def test_predict_logits_pads_to_a_fixed_batch():
    seen = []

    def fn(x):
        seen.append(x.shape[0])
        return x.flatten(1)[:, :3] * 2

    clips = torch.randn(11, 3, 1, 1, 1)
    out = evaluate.predict_logits(fn, clips, batch_size=4)
    assert seen == [4, 4, 4] and torch.allclose(out, clips.flatten(1) * 2)
    labels = torch.tensor([0, 1])
    logits = torch.tensor([[5.0, 0], [0, 1.0], [0, 5.0], [1.0, 0]])  # video 0: views vote 0; video 1: 1
    assert evaluate.video_top1(logits, labels, views=2) == 1.0


def test_pareto_front():
    latency = [1.0, 2.0, 3.0, 2.5, 1.0]
    accuracy = [0.5, 0.8, 0.9, 0.7, 0.4]
    assert evaluate.pareto_front(latency, accuracy) == [True, True, True, False, False]


def test_quantization_aware_training_runs_in_the_engine():
    torch.manual_seed(0)
    model = vl.models.create_model("vit_test", num_classes=3, depth=1).eval()
    batches = [{"video": torch.randn(4, 3, 4, 32, 32), "label": torch.randint(0, 3, (4,))} for _ in range(2)]
    prepared = quantization.prepare_qat(model, batches[0]["video"])
    assert any("fakequant" in type(m).__name__.lower() for m in prepared.modules())
    history = vl.train.fit(prepared, batches, None, vl.train.TrainConfig(epochs=1, lr=1e-3), device="cpu",
                           progress=False, num_classes=3)
    assert len(history) == 1
    converted = quantization.convert_qat(prepared)
    cover = {r["op"]: r for r in quantization.int8_coverage(converted)}
    assert cover["Linear"]["int8"] == cover["Linear"]["count"]
    with torch.no_grad():
        assert converted(batches[1]["video"]).shape == (4, 3)


def test_compare_latency_interleaves_and_ranks():
    order = []

    def make(name, seconds):
        def fn(x):
            order.append(name)
            time.sleep(seconds)
            return x
        return fn

    out = vl.compress.compare_latency({"slow": make("slow", 0.004), "fast": make("fast", 0.001)}, torch.zeros(2, 1),
                                      warmup=1, repeats=4, threads=1)
    assert out["slow"].median_ms > out["fast"].median_ms and out["fast"].repeats == 4 and out["slow"].batch_size == 2
    assert order[4:] == ["slow", "fast"] * 4  # after the cold + warm-up calls, one call of each per round
