"""Self-supervised pretraining library: masks, patches, VideoMAE loss/encoder contract,
NT-Xent, probes, and short optimisation checks through the one training loop (accumulation,
fp16 with a non-finite step)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidlab.models import create_model
from vidlab.train import TrainConfig, ssl

GEOM = dict(img_size=32, num_frames=8, patch_size=8, tubelet_size=2)  # grid (4, 4, 4) = 64 tokens


def _encoder(num_classes: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("vit_test", num_classes=num_classes, **GEOM)


def _mae(**kw) -> ssl.VideoMAE:
    kw = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, **kw}
    return ssl.VideoMAE(_encoder(), **kw)


# ----------------------------------------------------------------------------- masks
@pytest.mark.parametrize("ratio", [0.9, 0.75, 0.5])
def test_tube_mask_same_spatial_mask_every_time_step(ratio):
    grid = (4, 3, 5)
    g = torch.Generator().manual_seed(1)
    mask = ssl.tube_mask(6, grid, ratio, generator=g)
    assert mask.shape == (6, 60) and mask.dtype == torch.bool
    per_time = mask.view(6, 4, 15)
    assert (per_time == per_time[:, :1]).all()  # tube: identical at every t
    assert (per_time.sum(-1) == round(ratio * 15)).all()
    assert len({tuple(m.tolist()) for m in per_time[:, 0]}) > 1  # samples differ


def test_random_and_frame_masks():
    grid = (4, 4, 4)
    r = ssl.random_mask(8, grid, 0.75, generator=torch.Generator().manual_seed(0))
    assert r.shape == (8, 64) and (r.sum(1) == 48).all()
    assert not (r.view(8, 4, 16) == r.view(8, 4, 16)[:, :1]).all()  # not a tube
    f = ssl.frame_mask(8, grid, 0.5, generator=torch.Generator().manual_seed(0))
    per_time = f.view(8, 4, 16)
    assert (per_time.all(-1) | ~per_time.any(-1)).all()  # whole time steps
    assert (per_time.all(-1).sum(1) == 2).all()


def test_mask_is_reproducible_with_generator_and_rejects_bad_ratio():
    a = ssl.tube_mask(3, (2, 4, 4), 0.9, generator=torch.Generator().manual_seed(5))
    b = ssl.tube_mask(3, (2, 4, 4), 0.9, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="ratio"):
        ssl.tube_mask(2, (2, 4, 4), 1.0)
    with pytest.raises(ValueError, match="visible"):
        ssl.frame_mask(2, (2, 4, 4), 0.9)  # round(0.9 * 2) = 2 of 2 time steps
    with pytest.raises(ValueError, match="mask_type"):
        ssl.make_mask("blocks", 2, (2, 4, 4), 0.5)


# ----------------------------------------------------------------------------- patches
def test_patchify_unpatchify_round_trip_and_token_order():
    x = torch.randn(2, 3, 8, 32, 24)
    p = ssl.patchify(x, tubelet=2, patch=8)
    assert p.shape == (2, 4 * 4 * 3, 2 * 8 * 8 * 3)
    assert torch.equal(ssl.unpatchify(p, (4, 4, 3), 2, 8, 3), x)
    one = torch.zeros(1, 3, 8, 32, 32)
    one[0, 1, 5, 9, 17] = 1.0  # t=5 -> t'=2, h=9 -> h'=1, w=17 -> w'=2
    token = ssl.patchify(one, 2, 8)[0].abs().sum(-1).nonzero().flatten().tolist()
    assert token == [2 * 16 + 1 * 4 + 2]
    with pytest.raises(ValueError, match="divisible"):
        ssl.patchify(torch.zeros(1, 3, 7, 32, 32), 2, 8)


def test_patch_order_matches_encoder_tokens():
    """Token i of patchify is the tubelet the encoder's token i sees (Conv3d patch embedding)."""
    enc = _encoder()
    x = torch.randn(1, 3, 8, 32, 32)
    base = enc.tokenize(x)
    bumped = x.clone()
    bumped[0, :, 4:6, 16:24, 8:16] += 1.0  # exactly the tubelet at (t'=2, h'=2, w'=1)
    changed = (enc.tokenize(bumped) - base).abs().sum(-1)[0].nonzero().flatten().tolist()
    target_changed = (ssl.patchify(bumped, 2, 8) - ssl.patchify(x, 2, 8)).abs().sum(-1)[0].nonzero().flatten()
    assert changed == target_changed.tolist() == [2 * 16 + 2 * 4 + 1]


# ----------------------------------------------------------------------------- VideoMAE
def test_loss_uses_only_masked_tokens():
    mae = _mae(mask_ratio=0.75)
    x = torch.randn(2, 3, 8, 32, 32)
    loss, pred, mask = mae(x)
    assert pred.shape == (2, 64, 2 * 8 * 8 * 3) and mask.shape == (2, 64)
    target = mae.targets(x)
    changed_visible = pred.detach().clone()
    changed_visible[~mask] += 10.0
    changed_masked = pred.detach().clone()
    changed_masked[mask] += 10.0
    base = ssl.VideoMAE.loss(pred.detach(), target, mask)
    torch.testing.assert_close(base, loss.detach())
    torch.testing.assert_close(ssl.VideoMAE.loss(changed_visible, target, mask), base)
    assert ssl.VideoMAE.loss(changed_masked, target, mask) > base + 50
    # gradient reaches only masked predictions
    pred_leaf = pred.detach().clone().requires_grad_(True)
    ssl.VideoMAE.loss(pred_leaf, target, mask).backward()
    assert pred_leaf.grad[~mask].abs().max() == 0 and pred_leaf.grad[mask].abs().max() > 0


def test_targets_are_per_patch_normalised_pixels_of_unnormalised_clip():
    mae = _mae()
    pixels = torch.rand(2, 3, 8, 32, 32)
    x = (pixels - mae.mean) / mae.std
    t = mae.targets(x)
    raw = ssl.patchify(pixels, 2, 8)
    expected = (raw - raw.mean(-1, keepdim=True)) / (raw.var(-1, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(t, expected)
    mae.norm_pix_loss = False
    torch.testing.assert_close(mae.targets(x), raw, atol=1e-5, rtol=1e-5)


def test_frame_diff_targets_are_motion_only():
    mae = _mae(target="frame_diff")
    pixels = torch.rand(2, 3, 1, 32, 32).expand(-1, -1, 8, -1, -1).clone()  # a still clip
    pixels[:, :, 5, :8, :8] += 0.5  # one change between frames 4 and 5 (same tubelet, t'=2)
    t = mae.targets((pixels - mae.mean) / mae.std)
    assert t.shape == (2, 64, 8 * 8 * 3)
    moving = t.abs().sum(-1).gt(1e-4).nonzero()[:, 1].unique().tolist()
    assert moving == [2 * 16]
    with pytest.raises(ValueError, match="pixels"):
        mae.reconstruct(pixels)


def test_motion_weights_favour_moving_tubelets_and_keep_visible_tokens_out():
    mae = _mae(motion_weight=4.0, mask_ratio=0.75)
    pixels = torch.rand(2, 3, 1, 32, 32).expand(-1, -1, 8, -1, -1).clone()
    pixels[:, :, 5, :8, :8] += 0.5  # motion in token t'=2, h'=0, w'=0 only
    w = mae.motion_weights((pixels - mae.mean) / mae.std)
    assert w.shape == (2, 64) and (w[:, 32] > 4.0).all() and torch.allclose(w[:, :32], torch.ones(2, 32))
    x = (pixels - mae.mean) / mae.std
    loss, pred, mask = mae(x)
    changed = pred.detach().clone()
    changed[~mask] += 10.0
    torch.testing.assert_close(ssl.VideoMAE.loss(changed, mae.targets(x), mask, w), loss.detach())


def test_mae_normalises_latents_with_the_encoders_own_norm_when_it_has_one():
    """An ``fc_norm=False`` encoder's per-token ``norm`` is the one pretraining learns (so fine-tuning
    keeps it); an encoder without one gets a LayerNorm in the wrapper. One norm either way."""
    torch.manual_seed(0)
    own = ssl.VideoMAE(create_model("vit_test", num_classes=0, fc_norm=False, **GEOM),
                       decoder_dim=32, decoder_depth=1, decoder_heads=2)
    assert isinstance(own.encoder_norm, torch.nn.Identity) and isinstance(own.encoder.norm, torch.nn.LayerNorm)
    x, mask = torch.randn(2, 3, 8, 32, 32), own.make_mask(2)
    with torch.no_grad():
        tokens = own.encoder.tokenize(x)[~mask].reshape(2, -1, own.encoder.embed_dim)
        expected = own.encoder.norm(own.encoder.blocks(tokens))
        torch.testing.assert_close(own.encode_visible(x, mask), expected)
    loss, _, _ = own(x, mask)
    loss.backward()
    assert own.encoder.norm.weight.grad is not None and own.encoder.norm.weight.grad.abs().sum() > 0
    assert isinstance(_mae().encoder_norm, torch.nn.LayerNorm)


def test_encoder_sees_only_visible_tokens():
    mae = _mae(mask_ratio=0.75, mask_type="tube")
    seen: list[int] = []
    mae.encoder.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[1]))
    original = mae.encoder.forward_tokens
    calls: list[tuple[int, ...]] = []
    mae.encoder.forward_tokens = lambda t: (calls.append(tuple(t.shape)), original(t))[1]
    mae(torch.randn(3, 3, 8, 32, 32))
    n_visible = 4 * (16 - round(0.75 * 16))
    assert calls == [(3, n_visible, mae.encoder.embed_dim)]
    assert seen == [n_visible]


def test_reconstruct_copies_visible_tubelets():
    mae = _mae(mask_ratio=0.5, mask_type="random")
    pixels = torch.rand(2, 3, 8, 32, 32)
    x = (pixels - mae.mean) / mae.std
    out = mae.reconstruct(x)
    assert out["reconstruction"].shape == x.shape
    vis = ~out["mask"]
    torch.testing.assert_close(ssl.patchify(out["reconstruction"], 2, 8)[vis], ssl.patchify(pixels, 2, 8)[vis])
    torch.testing.assert_close(out["original"], pixels)
    assert (ssl.patchify(out["masked"], 2, 8)[out["mask"]] == 0.5).all()


def _smooth_clip(batch: int) -> torch.Tensor:
    """``batch`` copies of one smooth, learnable clip (a moving sinusoid per channel)."""
    g = torch.Generator().manual_seed(0)
    t, h, w = torch.meshgrid(torch.arange(8.0), torch.arange(32.0), torch.arange(32.0), indexing="ij")
    freq = torch.rand(3, 3, generator=g) * 0.5 + 0.1
    clip = torch.stack([torch.sin(f[0] * h + f[1] * w + f[2] * t) for f in freq])
    return clip.expand(batch, -1, -1, -1, -1).contiguous()


def test_a_few_mae_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    mae = _mae(mask_ratio=0.75)
    x = _smooth_clip(4)
    fixed = ssl.tube_mask(4, mae.grid, 0.75, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = float(mae(x, mask=fixed)[0])
    cfg = TrainConfig(lr=5e-3, warmup_steps=3, betas=(0.9, 0.95), clip_grad_norm=1.0)
    out = ssl.pretrain(mae, [{"video": x}], cfg, steps=30, device="cpu", progress=False)
    with torch.no_grad():
        after = float(mae(x, mask=fixed)[0])
    assert len(out["history"]) == 30 and out["seconds"] > 0 and out["peak_memory_bytes"] > 0
    assert out["skipped_steps"] == 0 and math.isnan(out["top1"])  # no labels, no logits: no accuracy
    assert after < 0.75 * before, (before, after)


def test_gradient_accumulation_matches_a_large_batch():
    """Two half batches with accum_steps=2 give the update of one full batch (same masks)."""
    x = torch.randn(4, 3, 8, 32, 32)
    mask = ssl.random_mask(4, (4, 4, 4), 0.75, generator=torch.Generator().manual_seed(0))

    def run(batches, masks, accum):
        mae = _mae(mask_ratio=0.75, mask_type="random")
        masks = iter(masks)
        forward = mae.forward
        mae.forward = lambda v: forward(v, mask=next(masks))
        cfg = TrainConfig(lr=1e-2, warmup_steps=1, accum_steps=accum, weight_decay=0.0, betas=(0.0, 0.0))
        ssl.pretrain(mae, batches, cfg, steps=1, device="cpu", progress=False)  # betas 0: update = lr * g/|g|
        return torch.cat([p.detach().flatten() for p in mae.parameters()])

    whole = run([{"video": x}], [mask], 1)
    halves = run([{"video": x[:2]}, {"video": x[2:]}], [mask[:2], mask[2:]], 2)
    first_half_only = run([{"video": x[:2]}], [mask[:2]], 1)
    torch.testing.assert_close(whole, halves, atol=1e-5, rtol=1e-4)
    assert (whole - first_half_only).abs().max() > 1e-3  # the check can fail


# ----------------------------------------------------------------------------- contrastive
def _nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, t: float, negatives=None) -> torch.Tensor:
    """The SimCLR formula written out: -log(exp(s_ij/t) / sum_{k != i} exp(s_ik/t)), averaged."""
    z = torch.cat([F.normalize(z1, dim=1), F.normalize(z2, dim=1)])
    extra = F.normalize(negatives, dim=1) if negatives is not None else torch.zeros(0, z.shape[1])
    n = len(z)
    b = n // 2
    losses = []
    for i in range(n):
        j = (i + b) % n
        num = torch.exp(z[i] @ z[j] / t)
        den = sum(torch.exp(z[i] @ z[k] / t) for k in range(n) if k != i)
        den = den + sum(torch.exp(z[i] @ e / t) for e in extra)
        losses.append(-torch.log(num / den))
    return torch.stack(losses).mean()


def test_nt_xent_matches_reference():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    for t in (0.1, 0.5):
        torch.testing.assert_close(ssl.nt_xent_loss(z1, z2, t), _nt_xent_reference(z1, z2, t))
    neg = torch.randn(3, 7, generator=g)
    torch.testing.assert_close(ssl.nt_xent_loss(z1, z2, 0.2, neg), _nt_xent_reference(z1, z2, 0.2, neg))
    # identical views are easier than random pairs
    assert ssl.nt_xent_loss(z1, z1, 0.1) < ssl.nt_xent_loss(z1, z2, 0.1)


def test_simclr_video_two_views_and_pretrain_step():
    model = ssl.SimCLRVideo(_encoder(), proj_dim=16, temperature=0.2)
    views = torch.randn(4, 2, 3, 8, 32, 32)
    loss = model(views)
    assert loss.ndim == 0 and torch.isfinite(loss)
    torch.testing.assert_close(model(views[:, 0], views[:, 1]), loss)
    out = ssl.pretrain(model, [{"video": views}], TrainConfig(lr=1e-3, warmup_steps=1), steps=2, device="cpu",
                       progress=False)
    assert len(out["history"]) == 2
    with pytest.raises(ValueError, match="views"):
        model(torch.randn(4, 3, 8, 32, 32))
    rev = ssl.SimCLRVideo(_encoder(), proj_dim=16, temperature=0.2, reverse_negatives=True)
    seen = []
    rev.encoder.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[0]))
    assert torch.isfinite(rev(views)) and seen == [12]  # both views + the reversed first view


def test_two_views_draws_twice():
    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"video": torch.rand(3, 2, 4, 4), "label": i}

    item = ssl.TwoViews(Noisy())[1]
    assert item["video"].shape == (2, 3, 2, 4, 4) and item["label"] == 1
    assert not torch.equal(item["video"][0], item["video"][1])


# ----------------------------------------------------------------------------- fp16 and non-finite steps
def test_fp16_mae_pretraining_skips_a_nonfinite_step_and_goes_on():
    """fp16 autocast + GradScaler: a batch whose loss is inf is skipped and counted (no scaler
    error), the other steps are applied and the run finishes."""
    torch.manual_seed(0)
    mae = _mae(mask_ratio=0.75)
    x = _smooth_clip(2)
    bad = x.clone()
    bad[0, 0, 0, 0, 0] = float("inf")  # the loss of this batch is not finite
    batches = [{"video": x}, {"video": bad}, {"video": x}, {"video": x}]
    before = [p.detach().clone() for p in mae.parameters()]
    applied: list[int] = []
    original = mae.forward
    mae.forward = lambda v, mask=None: (applied.append(int(torch.isfinite(v).all())), original(v, mask))[1]
    cfg = TrainConfig(lr=1e-3, warmup_steps=1, amp=True, amp_dtype="float16", clip_grad_norm=1.0)
    out = ssl.pretrain(mae, batches, cfg, steps=4, device="cpu", progress=False)
    assert applied == [1, 0, 1, 1]  # every batch was seen, in order
    assert out["skipped_steps"] == 1 and out["nonfinite_losses"] == 1
    assert len(out["history"]) == 3 and all(math.isfinite(v) for v in out["history"])
    assert out["grad_scale"] is not None and out["grad_scale"] > 0
    after = list(mae.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(b, a.detach()) for b, a in zip(before, after))  # the good steps were applied


def test_fp16_overflowing_gradient_is_skipped_by_the_scaler():
    """An inf in the gradients (not the loss) is caught when unscaling: the step is not applied."""
    torch.manual_seed(0)
    mae = _mae(mask_ratio=0.75)
    x = _smooth_clip(2)
    hook = mae.decoder.head.weight.register_hook(lambda g: torch.full_like(g, float("inf")))
    before = mae.decoder.head.weight.detach().clone()
    cfg = TrainConfig(lr=1e-3, warmup_steps=1, amp=True, amp_dtype="float16")
    out = ssl.pretrain(mae, [{"video": x}], cfg, steps=2, device="cpu", progress=False)
    hook.remove()
    assert out["skipped_steps"] == 2 and out["history"] == []
    assert torch.equal(mae.decoder.head.weight.detach(), before)


# ----------------------------------------------------------------------------- probes
def test_knn_and_linear_probe_on_separable_and_random_features():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 5
    ytr, yte = torch.arange(4).repeat(10), torch.arange(4).repeat(5)
    xtr = centers[ytr] + torch.randn(40, 16, generator=g)
    xte = centers[yte] + torch.randn(20, 16, generator=g)
    assert ssl.knn_accuracy(xtr, ytr, xte, yte, k=5) == 1.0
    assert ssl.linear_probe_accuracy(xtr, ytr, xte, yte) == 1.0
    noise_te = torch.randn(400, 16, generator=g)
    noise_y = torch.randint(0, 4, (400,), generator=g)
    assert ssl.knn_accuracy(xtr, ytr, noise_te, noise_y, k=5) < 0.4


def test_extract_features_pools_like_the_head_and_averages_views():
    enc = _encoder()
    single = torch.randn(3, 3, 8, 32, 32)
    multi = torch.randn(2, 2, 3, 8, 32, 32)
    loader = [{"video": single, "label": torch.tensor([0, 1, 2])},
              {"video": multi, "label": torch.tensor([1, 0])}]  # multi-view
    feats, labels = ssl.extract_features(enc, loader)
    assert feats.shape == (5, enc.embed_dim) and labels.tolist() == [0, 1, 2, 1, 0]
    enc.eval()
    with torch.no_grad():
        head_input = enc.forward_head(enc.forward_features(single), pre_logits=True)
        views = enc.forward_head(enc.forward_features(multi.flatten(0, 1)), pre_logits=True).view(2, 2, -1).mean(1)
    torch.testing.assert_close(feats[:3], head_input)
    torch.testing.assert_close(feats[3:], views)
