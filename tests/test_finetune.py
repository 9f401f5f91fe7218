"""Fine-tuning recipes (vidlab.recipes.finetune): backbone from a save_model encoder file, methods,
memory, one short run."""
import dataclasses

import pytest
import torch

from vidlab.models import create_model, save_model
from vidlab.recipes import finetune
from vidlab.train.memory import training_memory

GEOMETRY = dict(img_size=32, num_frames=4, patch_size=8, tubelet_size=2)
KW = dict(embed_dim=32, depth=2, num_heads=2)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    torch.manual_seed(0)
    enc = create_model("vit_mini", num_classes=0, fc_norm=False, **GEOMETRY, **KW)  # as pretraining builds it
    with torch.no_grad():
        enc.norm.weight.uniform_(0.5, 1.5)  # a "learnt" final norm, unlike a fresh one
    path = tmp_path_factory.mktemp("enc") / "enc.pt"
    save_model(enc, path, frame_stride=2)
    return path, enc


def test_backbone_pretrained_vs_scratch(encoder):
    path, enc = encoder
    pre = finetune.build_backbone(path, 12)
    scratch = finetune.build_backbone(path, 12, pretrained=False)
    assert torch.equal(pre.blocks[0].attn.qkv.weight, enc.blocks[0].attn.qkv.weight)
    assert not torch.equal(scratch.blocks[0].attn.qkv.weight, enc.blocks[0].attn.qkv.weight)
    assert torch.equal(pre.norm.weight, enc.norm.weight)  # the pretrained final norm is kept
    assert not torch.equal(scratch.norm.weight, enc.norm.weight)
    assert isinstance(scratch.norm, torch.nn.LayerNorm) and isinstance(scratch.fc_norm, torch.nn.Identity)
    assert pre.head.out_features == 12
    assert finetune.encoder_geometry(path) == {"num_frames": 4, "img_size": 32, "frame_stride": 2}


def test_backbone_pooling_is_chosen_by_the_recipe(encoder):
    path, _ = encoder
    x = torch.randn(2, 3, 4, 32, 32)
    avg = finetune.build_backbone(path, 12).eval()
    mx = finetune.build_backbone(path, 12, global_pool="max").eval()
    scratch = finetune.build_backbone(path, 12, pretrained=False, global_pool="max")
    assert (avg.global_pool, mx.global_pool, scratch.global_pool) == ("avg", "max", "max")
    mx.load_state_dict(avg.state_dict())  # same weights, only the pooling of the tokens differs
    with torch.no_grad():
        tokens = avg.forward_features(x)
        assert torch.allclose(mx(x), mx.head(mx.fc_norm(tokens.amax(dim=1))), atol=1e-6)
        assert not torch.allclose(mx(x), avg(x))


def test_methods_train_the_intended_parts(encoder):
    path, _ = encoder
    s = finetune.FINETUNE_PRESETS["smoke"]
    counts = {}
    for name, apply in finetune.methods(s).items():
        model, summary = apply(finetune.build_backbone(path, 12))
        counts[name] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert summary["trainable"] == counts[name]
    assert counts["linear_probe"] < counts["bitfit"] < counts["full"]
    assert counts["linear_probe"] < counts["lora"] < counts["full"]
    assert counts["linear_probe"] < counts["adapters"] < counts["full"]


def test_memory_shrinks_when_frozen(encoder):
    path, _ = encoder
    x = torch.randn(2, 3, 4, 32, 32)
    full = training_memory(finetune.build_backbone(path, 12), x)
    probe_model, _ = finetune.methods(finetune.FINETUNE_PRESETS["smoke"])["linear_probe"](finetune.build_backbone(path, 12))
    probe = training_memory(probe_model, x)
    assert probe["gradients"] < full["gradients"] and probe["activations"] < full["activations"]
    assert full["total"] == pytest.approx(sum(v for k, v in full.items() if k != "total"))


def test_short_run_and_budget(encoder, smoke_data):
    path, _ = encoder
    data = finetune.load_data(smoke_data, finetune.encoder_geometry(path), finetune.FINETUNE_PRESETS["smoke"],
                              workers=1, progress=False)
    assert tuple(data.train[0]["video"].shape) == (3, 4, 32, 32)  # the encoder's frames and size
    assert data.test[0]["video"].shape[0] == finetune.FINETUNE_PRESETS["smoke"].test_views
    few = data.with_train_budget(1, seed=0)
    assert sorted(few.train.labels) == list(range(data.num_classes))
    repeated = data.with_train_budget(1, seed=0, repeat_to=30)
    assert len(repeated.train) >= 30 and set(repeated.train.indices) == set(few.train.indices)
    res = finetune.run_method("bitfit", path, few, finetune.FINETUNE_PRESETS["smoke"], progress=False)
    assert 0 <= res["test_top1"] <= 1 and len(res["history"]) == 1
    assert res["model"].global_pool == finetune.FINETUNE_PRESETS["smoke"].global_pool == "avg"
    max_head = dataclasses.replace(finetune.FINETUNE_PRESETS["smoke"], global_pool="max")
    res = finetune.run_method("linear_probe", path, few, max_head, progress=False)
    assert res["model"].global_pool == "max"
    assert res["test"]["confusion_matrix"].sum() == len(data.test)
