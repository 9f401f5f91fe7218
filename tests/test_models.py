"""Tests for vidlab.models: registry, every model's forward, X3D reference counts, ViT token API,
TSM shift, I3D inflation, classifier reset and local-only pretrained weights.

Heavy models (tens of millions of parameters or large default clips) are built and run on the
META device: shapes and the forward code path are checked without arithmetic. Which ones is
listed in ``META_FORWARD`` below; every other model runs a real CPU forward on a small clip.
"""
from __future__ import annotations

import functools
import pathlib

import pytest
import timm
import torch
from torch import nn

import vidlab.models as vm
from vidlab.models.lifted import I3D, TSM, TemporalShift, _frames_to_batch, temporal_shift
from vidlab.models.weights import PretrainedWeightsError, PretrainedWeightsNotFoundError

# Built on the meta device and run at their default clip size (a real CPU forward or even the
# random init of 20-35M parameters would take several seconds each).
META_FORWARD = {"r3d_18", "r2plus1d_18", "mvit_v2_s", "swin3d_t", "vit_tiny", "vit_small",
                "x3d_m", "x3d_l", "i3d_resnet18"}
# Real forward on a small clip: (T, size); the minimum each architecture accepts is enough.
SMALL_CLIP = {"s3d": (8, 32)}  # S3D strides time by 8
DEFAULT_SMALL_CLIP = (4, 32)

EXPECTED_NAMES = {
    "x3d_xs", "x3d_s", "x3d_m", "x3d_l", "x3d_mini", "test_x3d",
    "vit_test", "vit_mini", "vit_tiny", "vit_small",
    "r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v2_s", "swin3d_t",
    "tsn_resnet18", "tsm_resnet18", "i3d_resnet18", "test_tsn", "test_tsm", "test_i3d",
}


@functools.lru_cache(maxsize=None)
def _meta_model(name: str, num_classes: int) -> nn.Module:
    """Models on the meta device, built once per session (shared by the shape and count tests)."""
    with torch.device("meta"):
        return vm.create_model(name, num_classes=num_classes).eval()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch):
    """Point every weights location at empty temporary folders."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("VIDLAB_WEIGHTS", str(tmp_path / "vidlab_weights"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf_hub"))
    old_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch_hub"))
    yield tmp_path
    torch.hub.set_dir(old_hub)


# ------------------------------------------------------------------------------------ registry

def test_registry_lists_and_filters():
    names = vm.list_models()
    assert EXPECTED_NAMES <= set(names)
    assert names == sorted(names)
    assert vm.list_models("x3d_*") == ["x3d_l", "x3d_m", "x3d_mini", "x3d_s", "x3d_xs"]
    assert set(vm.list_models("test_*")) >= {"test_x3d", "test_tsn", "test_tsm", "test_i3d"}
    assert vm.list_models("no_such_*") == []
    assert vm.is_model("r2plus1d_18") and not vm.is_model("r2plus1d_19")


def test_unknown_model_error_names_known_and_close_matches():
    with pytest.raises(vm.UnknownModelError) as info:
        vm.create_model("x3d_xz")
    message = str(info.value)
    assert "'x3d_xz'" in message
    assert "Did you mean" in message and "x3d_xs" in message.split("Known models")[0]
    assert "vit_tiny" in message and "r2plus1d_18" in message  # the full list


def test_register_model_rejects_duplicate_names():
    def x3d_xs():  # same name as a registered model, different function
        return nn.Identity()

    with pytest.raises(ValueError, match="registered twice"):
        vm.register_model(x3d_xs)


# ---------------------------------------------------------------------------- every model runs

@pytest.mark.parametrize("name", vm.list_models())
def test_every_model_forward(name):
    num_classes = 400 if name.startswith("x3d_") else 7
    if name in META_FORWARD:
        model = _meta_model(name, num_classes)
        cfg = model.default_cfg
        x = torch.empty(2, 3, cfg["num_frames"], cfg["img_size"], cfg["img_size"], device="meta")
    else:
        model = vm.create_model(name, num_classes=num_classes).eval()
        t, size = SMALL_CLIP.get(name, DEFAULT_SMALL_CLIP)
        x = torch.randn(2, 3, t, size, size)
    for key in ("num_frames", "img_size", "in_chans", "classifier"):
        assert key in model.default_cfg, f"{name}.default_cfg lacks {key}"
    assert model.num_classes == num_classes
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
        if x.device.type != "meta":  # on meta, forward == forward_head(forward_features) is not checkable
            torch.testing.assert_close(model(x), logits)
    assert logits.shape == (2, num_classes)
    assert pooled.shape == (2, model.num_features)
    if x.device.type != "meta":
        assert torch.isfinite(logits).all()


# ------------------------------------------------------------------------------ X3D reference

@pytest.mark.parametrize(
    "name, clip, params_m, gmacs",
    [
        ("x3d_xs", (4, 160), 3.79, 0.605),
        ("x3d_s", (13, 160), None, 1.96),
        ("x3d_m", (16, 224), 3.76, 4.73),
        ("x3d_l", (16, 312), 6.15, 18.4),
    ],
)
def test_x3d_matches_reference_counts(name, clip, params_m, gmacs):
    model = _meta_model(name, 400)
    t, size = clip
    macs = vm.count_macs(model, (1, 3, t, size, size))
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.015)
    if params_m is not None:
        assert vm.count_params(model) / 1e6 == pytest.approx(params_m, rel=0.015)


def test_x3d_structure_follows_reference():
    xs, large = _meta_model("x3d_xs", 400), _meta_model("x3d_l", 400)
    assert xs.stage_depths == [3, 5, 11, 7] and large.stage_depths == [5, 10, 25, 15]
    assert xs.stem.conv_xy.out_channels == 24 and xs.stem.conv_t.kernel_size == (5, 1, 1)
    assert xs.stem.conv_t.groups == 24  # depthwise temporal conv
    widths = [stage[0].conv_c.out_channels for stage in xs.stages]
    assert widths == [24, 48, 96, 192]
    block = xs.stages[1][0]
    assert block.conv_b.groups == block.conv_b.in_channels == int(2.25 * 48)
    se_flags = [not isinstance(b.se, nn.Identity) for b in xs.stages[2]]
    assert se_flags == [i % 2 == 0 for i in range(11)]
    assert xs.num_features == 2048 and xs.conv5.out_channels == 432


@pytest.mark.parametrize("name, clip", [("r2plus1d_18", (16, 112)), ("s3d", (16, 224))])
def test_count_macs_agrees_with_torchvision_published_ops(name, clip):
    import torchvision

    published_gmacs = torchvision.models.get_model_weights(name).DEFAULT.meta["_ops"]
    t, size = clip
    macs = vm.count_macs(_meta_model(name, 400), (1, 3, t, size, size))
    assert macs / 1e9 == pytest.approx(published_gmacs, rel=1e-3)


def test_count_macs_leaves_model_untouched_and_matches_real_device():
    model = vm.create_model("test_x3d").eval()
    meta = vm.count_macs(model, (1, 3, 4, 32, 32))
    real = vm.count_macs(model, (1, 3, 4, 32, 32), device="cpu")
    assert meta == real > 0
    assert next(model.parameters()).device.type == "cpu" and not model.training
    assert vm.count_params(model) == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="B, C, T, H, W"):
        vm.count_macs(model, (1, 3, 32, 32))


# ------------------------------------------------------------------------------------- ViT API

def test_vit_token_api():
    model = vm.create_model("vit_test", num_classes=5).eval()
    assert model.grid_size == (2, 4, 4) and model.num_patches == 32
    x = torch.randn(2, 3, 4, 32, 32)
    tokens = model.tokenize(x)
    assert tokens.shape == (2, 32, model.embed_dim)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), model.forward_tokens(model.tokenize(x)))
        keep = torch.tensor([0, 3, 17, 31])
        subset = model.forward_tokens(tokens[:, keep])
    assert subset.shape == (2, 4, model.embed_dim)
    # names the LoRA / adapter code targets
    block = model.blocks[0]
    for layer in (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2):
        assert isinstance(layer, nn.Linear)
    assert torch.count_nonzero(model.head.bias) == 0
    with pytest.raises(ValueError, match="not divisible"):
        model.tokenize(torch.randn(1, 3, 4, 30, 30))


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_vit_applies_exactly_one_final_norm(pool):
    """As timm with a pooling head: ``norm`` is an identity, ``fc_norm`` normalises the pooled feature."""
    model = vm.create_model("vit_test", num_classes=5, global_pool=pool).eval()
    assert isinstance(model.norm, nn.Identity) and isinstance(model.fc_norm, nn.LayerNorm)
    assert sum(isinstance(m, nn.LayerNorm) for m in model.modules()) == 2 * len(model.blocks) + 1
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        out = model.blocks(model.tokenize(x))
        pooled = out.mean(dim=1) if pool == "avg" else out.amax(dim=1)
        torch.testing.assert_close(model(x), model.head(model.fc_norm(pooled)))


def test_vit_fc_norm_false_normalises_tokens_before_pooling():
    """timm's ``fc_norm=False``: the per-token ``norm`` is real (what an MAE encoder pretrains), ``fc_norm`` is not."""
    model = vm.create_model("vit_test", num_classes=5, fc_norm=False).eval()
    assert isinstance(model.norm, nn.LayerNorm) and isinstance(model.fc_norm, nn.Identity)
    assert sum(isinstance(m, nn.LayerNorm) for m in model.modules()) == 2 * len(model.blocks) + 1
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        tokens = model.norm(model.blocks(model.tokenize(x)))
        torch.testing.assert_close(model(x), model.head(tokens.mean(dim=1)))


def test_vit_default_cfg_normalisation_is_the_pipelines():
    from vidlab.data.transforms import DEFAULT_MEAN, DEFAULT_STD

    cfg = vm.create_model("vit_test").default_cfg
    assert tuple(cfg["mean"]) == tuple(DEFAULT_MEAN) and tuple(cfg["std"]) == tuple(DEFAULT_STD)


def test_vit_kwargs_and_other_grid_sizes():
    model = vm.create_model("vit_mini", num_classes=3, img_size=64, patch_size=8, num_frames=16, tubelet_size=4)
    assert model.grid_size == (4, 8, 8) and model.default_cfg["img_size"] == 64
    learned = vm.create_model("vit_test", pos_embed="learned").eval()
    assert isinstance(learned.pos_embed, nn.Parameter)
    with torch.no_grad():  # other clip sizes: sin-cos recomputed, learned interpolated
        assert learned(torch.randn(1, 3, 8, 48, 48)).shape == (1, 10)
        assert vm.create_model("vit_test")(torch.randn(1, 3, 8, 48, 48)).shape == (1, 10)


# ------------------------------------------------------------------------------------------ TSM

def test_temporal_shift_matches_hand_written_shift():
    b, t, c, h, w = 2, 4, 16, 2, 3
    x = torch.randn(b * t, c, h, w)
    out = temporal_shift(x, num_segments=t, fold_div=8)
    fold = c // 8
    xv, ov = x.view(b, t, c, h, w), out.view(b, t, c, h, w)
    expected = torch.empty_like(xv)
    for bi in range(b):
        for ti in range(t):
            for ci in range(c):
                if ci < fold:  # takes the next frame, zero after the last
                    expected[bi, ti, ci] = xv[bi, ti + 1, ci] if ti + 1 < t else 0.0
                elif ci < 2 * fold:  # takes the previous frame, zero before the first
                    expected[bi, ti, ci] = xv[bi, ti - 1, ci] if ti > 0 else 0.0
                else:
                    expected[bi, ti, ci] = xv[bi, ti, ci]
    torch.testing.assert_close(ov, expected, rtol=0, atol=0)


def test_lifted_models_run_channels_last_with_the_same_results():
    """TSN / TSM feed their 2D backbone channels-last frames (faster); values must not change."""
    x = torch.randn(2 * 4, 16, 3, 5)
    cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(temporal_shift(cl, 4, 4), temporal_shift(x, 4, 4), rtol=0, atol=0)
    tsn = vm.create_model("test_tsn").eval()
    _randomise_batchnorm(tsn)
    clip = torch.randn(2, 3, 4, 32, 32)
    frames = clip.transpose(1, 2).reshape(8, 3, 32, 32).contiguous()
    batched, t = _frames_to_batch(clip)
    assert t == 4 and batched.is_contiguous(memory_format=torch.channels_last) and torch.equal(batched, frames)
    with torch.no_grad():
        per_frame = tsn.backbone.forward_features(frames)
        feats = tsn.forward_features(clip)  # (B, F, T, h, w)
    assert feats.shape[:3] == (2, per_frame.shape[1], 4)
    torch.testing.assert_close(feats.transpose(1, 2).reshape(per_frame.shape), per_frame, rtol=1e-4, atol=1e-5)


def test_tsm_shifts_residual_branch_only_and_uses_clip_length():
    model = vm.create_model("test_tsm").eval()
    assert isinstance(model, TSM)
    blocks = [m for m in model.backbone.modules() if isinstance(m, (timm.models.resnet.BasicBlock,
                                                                      timm.models.resnet.Bottleneck))]
    assert blocks and all(isinstance(b.conv1, TemporalShift) for b in blocks)
    assert not any(isinstance(m, TemporalShift) for b in blocks if b.downsample is not None
                   for m in b.downsample.modules())
    with torch.no_grad():
        y6 = model(torch.randn(1, 3, 6, 32, 32))  # another T than the default works
    assert y6.shape == (1, 10)
    assert all(m.num_segments == 6 for m in model.modules() if isinstance(m, TemporalShift))
    # with the same weights, TSM's per-frame features differ from TSN's: frames exchange channels
    # (BN weights randomised: timm zero-inits the last BN of each block, hiding the branch)
    _randomise_batchnorm(model)
    tsn = vm.create_model("test_tsn").eval()
    tsn.backbone.load_state_dict({k.replace("conv1.net.", "conv1."): v for k, v in model.backbone.state_dict().items()})
    clip = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model.forward_features(clip), tsn.forward_features(clip))


# ----------------------------------------------------------------------------------- inflation

def _randomise_batchnorm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def test_i3d_inflation_on_boring_video_equals_2d_model():
    model2d = timm.create_model("test_resnet", num_classes=0)
    _randomise_batchnorm(model2d)
    model2d.eval()
    i3d = I3D(backbone=model2d, num_classes=6).eval()
    assert i3d.backbone.conv1[0].kernel_size == (5, 3, 3)  # stem got a temporal kernel
    frame = torch.randn(2, 3, 32, 32)
    boring = frame.unsqueeze(2).repeat(1, 1, 5, 1, 1)  # (B, C, T, H, W), same frame 5 times
    with torch.no_grad():
        feats2d = model2d.forward_features(frame)  # (B, F, h, w)
        feats3d = i3d.forward_features(boring)  # (B, F, T, h, w)
        for t in range(boring.shape[2]):
            torch.testing.assert_close(feats3d[:, :, t], feats2d, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(i3d.forward_head(feats3d, pre_logits=True), model2d(frame), rtol=1e-4, atol=1e-5)
        # a non-boring clip is really processed in 3D: frames influence each other
        moving = torch.randn(2, 3, 5, 32, 32)
        per_frame = torch.stack([model2d.forward_features(moving[:, :, t]) for t in range(5)], dim=2)
        assert not torch.allclose(i3d.forward_features(moving), per_frame, atol=1e-3)
    assert model2d.conv1[0].weight.ndim == 4  # the 2D model was copied, not changed


# ---------------------------------------------------------------------------- reset_classifier

@pytest.mark.parametrize("name", ["test_x3d", "vit_test", "test_tsn", "test_tsm", "test_i3d", "s3d", "mc3_18"])
def test_reset_classifier(name):
    model = vm.create_model(name, num_classes=4).eval()
    t, size = SMALL_CLIP.get(name, DEFAULT_SMALL_CLIP)
    x = torch.randn(1, 3, t, size, size)
    model.reset_classifier(9)
    assert model.num_classes == 9
    with torch.no_grad():
        assert model(x).shape == (1, 9)
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)


# ------------------------------------------------------------------------------------ weights

def test_pretrained_missing_raises_naming_files_and_folders(isolated_caches):
    with pytest.raises(PretrainedWeightsNotFoundError) as info:
        vm.create_model("test_x3d", pretrained=True)
    message = str(info.value)
    expected = isolated_caches / "vidlab_weights" / "test_x3d.pth"
    assert str(expected) in message and "test_x3d" in message
    assert str(isolated_caches / "vidlab_weights") in message

    missing = isolated_caches / "nope" / "weights.pth"
    with pytest.raises(PretrainedWeightsNotFoundError, match=str(missing)):
        vm.create_model("vit_test", pretrained_file=missing)
    # timm backbone not in the (empty) Hugging Face cache: the error names where it would be
    with pytest.raises(PretrainedWeightsNotFoundError, match="models--timm--test_resnet"):
        vm.create_model("test_tsn", pretrained=True)
    # torchvision checkpoint not in torch.hub's folder
    with pytest.raises(PretrainedWeightsNotFoundError, match="r3d_18-b3b3357e.pth"):
        vm.create_model("r3d_18", pretrained=True)


@pytest.mark.parametrize("name", ["test_x3d", "vit_test", "test_i3d"])
def test_pretrained_round_trip_from_file_and_weights_folder(name, isolated_caches):
    model = vm.create_model(name, num_classes=5).eval()
    path = isolated_caches / f"{name}_saved.pth"
    torch.save(model.state_dict(), path)
    t, size = SMALL_CLIP.get(name, DEFAULT_SMALL_CLIP)
    x = torch.randn(2, 3, t, size, size)
    reloaded = vm.create_model(name, num_classes=5, pretrained=True, pretrained_file=path).eval()
    folder = isolated_caches / "vidlab_weights"
    folder.mkdir()
    torch.save({"model": model.state_dict(), "epoch": 3}, folder / f"{name}.pth")  # engine-style checkpoint
    from_folder = vm.create_model(name, num_classes=5, pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(from_folder(x), model(x), rtol=0, atol=0)


def test_pretrained_other_num_classes_resets_classifier(isolated_caches):
    model = vm.create_model("vit_test", num_classes=5)
    path = isolated_caches / "vit.pth"
    torch.save(model.state_dict(), path)
    with pytest.warns(UserWarning, match="classifier"):
        other = vm.create_model("vit_test", num_classes=3, pretrained_file=path)
    assert other.head.weight.shape == (3, model.embed_dim)
    torch.testing.assert_close(other.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_pretrained_wrong_architecture_is_an_error(isolated_caches):
    path = isolated_caches / "x3d.pth"
    torch.save(vm.create_model("test_x3d").state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="missing keys"):
        vm.create_model("vit_test", pretrained_file=path)


class _Evil:
    """Unpickling this would create a marker file (stands in for arbitrary code)."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_malicious_pickle_is_refused(isolated_caches):
    marker = isolated_caches / "pwned"
    path = isolated_caches / "evil.pth"
    torch.save({"head.weight": torch.zeros(2, 2), "payload": _Evil(marker)}, path)
    with pytest.raises(PretrainedWeightsError, match="refused"):
        vm.create_model("test_x3d", pretrained_file=path)
    assert not marker.exists()


def test_timm_backbone_weights_found_in_local_hub_cache(isolated_caches):
    from safetensors.torch import save_file

    source = timm.create_model("test_resnet")  # 1000-class 2D model standing in for the hub file
    snapshot = isolated_caches / "hf_hub" / "models--timm--test_resnet.r160_in1k"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("0123abcd")
    (snapshot / "snapshots" / "0123abcd").mkdir(parents=True)
    save_file(source.state_dict(), str(snapshot / "snapshots" / "0123abcd" / "model.safetensors"))
    tsn = vm.create_model("test_tsn", num_classes=4, pretrained=True)
    i3d = vm.create_model("test_i3d", num_classes=4, pretrained=True)
    torch.testing.assert_close(tsn.backbone.conv1[0].weight, source.conv1[0].weight)
    torch.testing.assert_close(i3d.backbone.conv1[0].weight.sum(dim=2), source.conv1[0].weight)
    assert tsn.fc.out_features == 4


def test_torchvision_weights_found_in_torch_hub_cache(isolated_caches):
    source = vm.create_model("mc3_18", num_classes=400).net  # stands in for torchvision's Kinetics file
    checkpoints = isolated_caches / "torch_hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(source.state_dict(), checkpoints / "mc3_18-a90a0ba3.pth")
    with pytest.warns(UserWarning, match="classifier"):
        model = vm.create_model("mc3_18", num_classes=5, pretrained=True)
    torch.testing.assert_close(model.net.layer1[0].conv1[0].weight, source.layer1[0].conv1[0].weight)
    assert model.net.fc.out_features == 5
