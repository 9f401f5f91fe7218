"""Notebook 02's recipe modules (vidlab.recipes.pretraining, vidlab.recipes.ssl_probes): presets,
the encoder file notebook 03 reuses, probes, the few-label fine-tune and the masking helpers."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import vidlab as vl
from vidlab.recipes import pretraining as pt
from vidlab.recipes import ssl_probes
from vidlab.train import TrainConfig, ssl

# a tiny recipe on the smoke data: 32 tokens, a 1-block encoder, two optimizer steps
TINY = dataclasses.replace(
    pt.PRETRAIN_PRESETS["smoke"], embed_dim=16, depth=1, num_heads=2, decoder_dim=16, decoder_heads=2,
    mask_ratio=0.75, mae_steps=2, contrastive_steps=2, batch_size=8, contrastive_batch_size=8,
    fewshot_per_class=1, fewshot_budgets=(1,), fewshot_steps=2, fewshot_batch_size=8, workers=1,
)


@pytest.mark.parametrize("preset", ["smoke", "cpu", "gpu"])
def test_presets_have_consistent_geometry(preset):
    s = vl.presets.resolve("02_self_supervised_pretraining", preset)
    assert isinstance(s, pt.PretrainSettings)
    assert s.img_size % s.patch_size == 0 and s.num_frames % s.tubelet_size == 0
    assert s.cache_size >= s.img_size and s.embed_dim % s.num_heads == 0
    grid = (s.num_frames // s.tubelet_size, s.img_size // s.patch_size, s.img_size // s.patch_size)
    ssl.make_mask(s.mask_type, 1, grid, s.mask_ratio)  # the preset's ratio leaves tokens visible
    enc = pt.build_encoder(s) if preset != "gpu" else None
    if enc is not None:
        assert tuple(enc.grid_size) == grid
        assert enc.global_pool == "avg" and pt.build_encoder(s, 12, global_pool="max").global_pool == "max"


def test_gpu_preset_is_16x224_vit_small():
    s = pt.PRETRAIN_PRESETS["gpu"]
    assert (s.num_frames, s.img_size, s.model) == (16, 224, "vit_small")


def test_build_mae_passes_the_preset_mask_and_motion_weight():
    cpu = pt.PRETRAIN_PRESETS["cpu"]
    assert (cpu.mask_type, cpu.mask_ratio, cpu.motion_weight) == ("frame", 0.5, 16.0)  # the measured recipe
    assert (pt.PretrainSettings.mask_type, pt.PretrainSettings.mask_ratio) == ("tube", 0.9)  # library default
    mae = pt.build_mae(pt.build_encoder(TINY), dataclasses.replace(TINY, motion_weight=3.0))
    assert (mae.motion_weight, mae.mask_type, mae.mask_ratio) == (3.0, TINY.mask_type, TINY.mask_ratio)
    assert pt.build_mae(pt.build_encoder(TINY), dataclasses.replace(TINY, motion_weight=0.0)).motion_weight == 0.0
    with pytest.raises(ValueError, match="motion_weight"):
        pt.build_mae(pt.build_encoder(TINY), dataclasses.replace(TINY, motion_weight=-1.0))


def test_resolve_overrides_and_rejects_unknown_names():
    s = vl.presets.resolve("02_self_supervised_pretraining", "cpu", MAE_STEPS=7, MASK_RATIO=None)
    assert s.mae_steps == 7 and s.mask_ratio == pt.PRETRAIN_PRESETS["cpu"].mask_ratio
    with pytest.raises(ValueError, match="unknown setting"):
        vl.presets.resolve("02_self_supervised_pretraining", "cpu", MASK_RATION=0.5)


def test_encoder_path_is_notebook_02s_sibling_folder(tmp_path):
    path = pt.encoder_path(tmp_path / "03_finetuning")
    assert path == tmp_path / "02_self_supervised_pretraining" / "ssl_encoder.pt"


def test_presets_spell_amp_as_the_engine():
    for s in pt.PRETRAIN_PRESETS.values():
        assert isinstance(s.amp, bool) and s.amp_dtype in ("bfloat16", "float16")
        cfg = pt.pretrain_config(s, "mae", 10)
        assert (cfg.amp, cfg.amp_dtype) == (s.amp, s.amp_dtype) and cfg.warmup_steps == 1


def test_ensure_pretrained_encoder_builds_then_reuses(smoke_data, tmp_path, capsys):
    path = tmp_path / "enc" / "ssl_encoder.pt"
    got = pt.ensure_pretrained_encoder("smoke", smoke_data, settings=TINY, path=path, progress=False)
    assert got == path and path.exists()
    assert "no pretrained encoder for preset smoke" in capsys.readouterr().out
    assert not list(path.parent.glob("*.tmp*"))  # written atomically, no leftovers
    stamp = path.stat().st_mtime_ns

    again = pt.ensure_pretrained_encoder("smoke", smoke_data, settings=TINY, path=path, progress=False)
    assert again == path and path.stat().st_mtime_ns == stamp
    assert "pretraining it now" not in capsys.readouterr().out

    model, info = vl.models.load_model(path, with_info=True)  # the file alone rebuilds the encoder
    clip = torch.randn(2, 3, TINY.num_frames, TINY.img_size, TINY.img_size)
    tokens = (TINY.num_frames // TINY.tubelet_size) * (TINY.img_size // TINY.patch_size) ** 2
    assert model.forward_features(clip).shape == (2, tokens, 16)
    model.reset_classifier(12)
    assert model(clip).shape == (2, 12)
    assert {k: info.kwargs[k] for k in ("embed_dim", "depth", "num_heads")} == {"embed_dim": 16, "depth": 1, "num_heads": 2}
    assert (info.num_frames, info.img_size, info.frame_stride) == (TINY.num_frames, TINY.img_size, TINY.stride)
    assert info.meta["method"] == "mae" and info.meta["recipe"]["mae_steps"] == 2


def test_ensure_pretrained_encoder_rebuilds_on_other_geometry(smoke_data, tmp_path, capsys):
    path = tmp_path / "ssl_encoder.pt"
    pt.ensure_pretrained_encoder("smoke", smoke_data, settings=TINY, path=path, progress=False)
    capsys.readouterr()
    wider = dataclasses.replace(TINY, embed_dim=32)
    ok, reason = pt.artifact_matches(path, wider)
    assert not ok and "embed_dim" in reason
    pt.ensure_pretrained_encoder("smoke", smoke_data, settings=wider, path=path, progress=False)
    assert "does not fit" in capsys.readouterr().out
    assert pt.artifact_matches(path, wider) == (True, "ok")


def test_unreadable_artifact_is_not_trusted(tmp_path):
    path = tmp_path / "ssl_encoder.pt"
    path.write_bytes(b"not a checkpoint")
    ok, reason = pt.artifact_matches(path, TINY)
    assert not ok and reason.startswith("unreadable")
    assert pt.artifact_matches(tmp_path / "absent.pt", TINY) == (False, "missing")


def test_ensure_rejects_unknown_preset(tmp_path):
    with pytest.raises(ValueError, match="not a pretraining preset"):
        pt.ensure_pretrained_encoder("huge", tmp_path, tmp_path / "ssl_encoder.pt")


def test_contrastive_pretraining_and_probes(smoke_data):
    out = pt.pretrain_encoder(smoke_data, TINY, method="contrastive", progress=False)
    assert len(out["history"]) == TINY.contrastive_steps and all(torch.isfinite(torch.tensor(out["history"])))
    assert out["method"] == "contrastive" and out["seconds"] > 0 and out["skipped_steps"] == 0
    data = ssl_probes.labelled_data(smoke_data, TINY, progress=False)
    probes = ssl_probes.probe_encoder(out["encoder"], data, TINY)
    assert set(probes) == {"knn_top1", "probe_top1"} and all(0 <= v <= 1 for v in probes.values())
    with pytest.raises(ValueError, match="method="):
        pt.pretrain_encoder(smoke_data, TINY, method="rotation")


def test_fewshot_uses_the_budget_for_both_inits(smoke_data):
    data = ssl_probes.labelled_data(smoke_data, TINY, progress=False)
    scratch = ssl_probes.fewshot(None, data, TINY, progress=False)
    pretrained = ssl_probes.fewshot(pt.build_encoder(TINY), data, TINY, progress=False)
    for run in (scratch, pretrained):
        assert run["train_videos"] == data.num_classes * TINY.fewshot_per_class
        assert len(run["history"]) == TINY.fewshot_steps and 0 <= run["test_acc"] <= 1


def test_mask_ratio_losses_skip_unreachable_ratios():
    torch.manual_seed(0)
    mae = pt.build_mae(pt.build_encoder(TINY), TINY)
    clips = torch.randn(2, 3, TINY.num_frames, TINY.img_size, TINY.img_size)
    rows = ssl.mask_ratio_losses(mae, clips, [0.5, 0.9])
    got = {(r["mask_type"], r["ratio"]) for r in rows}
    # 2 token frames: masking 90% of them would hide both, so frame@0.9 is skipped
    assert got == {("tube", 0.5), ("tube", 0.9), ("random", 0.5), ("random", 0.9), ("frame", 0.5)}
    tube90 = next(r for r in rows if r["mask_type"] == "tube" and r["ratio"] == 0.9)
    assert tube90["visible_tokens"] == 2 * 2  # 2 of 16 positions (round(14.4) hidden) x 2 time steps
    assert all(r["loss"] > 0 for r in rows)


def test_temporal_redundancy_of_static_and_changing_clips():
    static = torch.rand(3, 3, 1, 16, 16).expand(3, 3, 4, 16, 16)
    r = ssl.temporal_redundancy(static, tubelet=2, patch=8)
    assert r["next_tubelet_mse"] == 0 and r["static_fraction"] == 1 and r["other_video_mse"] > 0
    noisy = ssl.temporal_redundancy(torch.rand(3, 3, 4, 16, 16), tubelet=2, patch=8)
    assert noisy["ratio"] > 0.5 and noisy["static_fraction"] < 0.1
    with pytest.raises(ValueError, match="at least 2 clips"):
        ssl.temporal_redundancy(torch.rand(1, 3, 4, 16, 16), tubelet=2, patch=8)


def test_masked_clip_paints_exactly_the_masked_tubelets():
    from vidlab.viz import masks

    clip = torch.rand(3, 4, 16, 16) * 0.4  # never the grey value 0.5
    mask = ssl.tube_mask(1, (2, 2, 2), 0.5, torch.Generator().manual_seed(0))
    out = masks.masked_clip(clip, mask, tubelet=2, patch=8)
    grey = ssl.patchify(out[None], 2, 8)[0].eq(0.5).all(-1)  # (N,) tokens entirely grey
    assert torch.equal(grey, mask[0])
    with pytest.raises(ValueError, match="tokens"):
        masks.masked_clip(clip, torch.zeros(5, dtype=torch.bool), tubelet=2, patch=8)
    fig = masks.plot_mask_types(clip, tubelet=2, patch=8, ratios=(0.5,))
    assert fig.axes


def test_copy_baseline_sees_through_random_masks_but_not_tubes():
    still = torch.rand(4, 3, 1, 16, 16).expand(4, 3, 8, 16, 16)  # nothing moves: copying in time is exact
    grid = (4, 2, 2)
    gen = torch.Generator().manual_seed(0)
    frame = ssl.copy_baseline_loss(still, ssl.frame_mask(4, grid, 0.5, gen), tubelet=2, patch=8)
    tube = ssl.copy_baseline_loss(still, ssl.tube_mask(4, grid, 0.5, gen), tubelet=2, patch=8)
    assert frame == pytest.approx(0.0, abs=1e-6)  # every hidden frame has a visible copy
    assert tube > 0.9  # the same place is hidden at every time step: only the patch mean is left
    with pytest.raises(ValueError, match="mask shape"):
        ssl.copy_baseline_loss(still, torch.zeros(4, 3, dtype=torch.bool), tubelet=2, patch=8)


GEOM = dict(img_size=32, num_frames=8, patch_size=8, tubelet_size=2)


def test_fewshot_finetune_freeze_phase_leaves_backbone_untouched():
    torch.manual_seed(0)
    enc = vl.models.create_model("vit_test", num_classes=2, **GEOM)
    start = {k: v.clone() for k, v in enc.state_dict().items()}
    loader = [{"video": torch.randn(4, 3, 8, 32, 32), "label": torch.tensor([0, 1, 0, 1])}]
    cfg = TrainConfig(lr=1e-2, warmup_steps=1, clip_grad_norm=1.0)
    out = ssl_probes.fewshot_finetune(enc, loader, loader, cfg, steps=3, num_classes=2, freeze_steps=3, progress=False)
    tuned = out["model"].state_dict()
    for name, before in start.items():
        if name.startswith(("head.", "fc_norm.")):
            continue
        assert torch.equal(before, tuned[name]), name
    assert not torch.equal(start["head.weight"], tuned["head.weight"])  # the probe phase trained the head
    assert out["probe_acc"] is not None and out["test_acc"] == out["probe_acc"] and len(out["history"]) == 3
    assert all(p.requires_grad for p in out["model"].parameters())  # unfrozen afterwards


def test_fewshot_finetune_scales_the_backbone_lr_and_decays_layers():
    torch.manual_seed(0)
    model = vl.models.create_model("vit_test", num_classes=2, **GEOM)
    groups = vl.train.param_groups_layer_decay(model, 0.05, lr=1.0, backbone_lr_scale=0.5, layer_decay=0.5)
    by_name = {n: g for g in groups for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    assert by_name["head.weight"]["lr"] == 1.0 and by_name["fc_norm.weight"]["lr"] == 1.0
    assert by_name["blocks.1.attn.qkv.weight"]["lr"] == pytest.approx(0.5 * 0.5)
    assert by_name["blocks.0.attn.qkv.weight"]["lr"] == pytest.approx(0.5 * 0.25)
    assert by_name["patch_embed.weight"]["lr"] == pytest.approx(0.5 * 0.125)
    assert by_name["head.bias"]["weight_decay"] == 0.0 and by_name["head.weight"]["weight_decay"] == 0.05
    loader = [{"video": torch.randn(4, 3, 8, 32, 32), "label": torch.tensor([0, 1, 0, 1])}]
    out = ssl_probes.fewshot_finetune(model, loader, loader, TrainConfig(lr=1e-3, warmup_steps=1), steps=2,
                                      num_classes=2, backbone_lr_scale=0.5, layer_decay=0.75, progress=False)
    assert len(out["history"]) == 2 and out["probe_acc"] is None and 0.0 <= out["test_acc"] <= 1.0
