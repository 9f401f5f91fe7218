"""Parameter-efficient fine-tuning: exact trainable counts, gradient flow, LoRA merge, adapters."""
from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import Block
from torch import nn

from vidlab.train import build_optimizer
from vidlab.train.peft import (
    AdapterWrapped,
    LoRALinear,
    apply_adapters,
    apply_bitfit,
    apply_linear_probe,
    apply_lora,
    apply_partial_finetune,
    describe,
    merge_lora,
    trainable_parameters,
)

DIM, HEADS, MLP_RATIO, DEPTH, NUM_CLASSES = 16, 2, 2.0, 2, 5
HIDDEN = int(DIM * MLP_RATIO)
NUM_TOKENS = 2 * 2 * 2  # (4, 8, 8) clip, tubelets (2, 4, 4)

# Hand-counted parameter sizes of TinyVideoViT.
PATCH = 3 * 2 * 4 * 4 * DIM + DIM  # conv weight + bias = 1552
TOKENS = DIM + (1 + NUM_TOKENS) * DIM  # cls token + pos embed = 160
QKV, PROJ = DIM * 3 * DIM + 3 * DIM, DIM * DIM + DIM  # 816, 272
FC1, FC2 = DIM * HIDDEN + HIDDEN, HIDDEN * DIM + DIM  # 544, 528
NORMS = 2 * 2 * DIM  # norm1 + norm2 (weight + bias) = 64
BLOCK = QKV + PROJ + FC1 + FC2 + NORMS  # 2224
FINAL_NORM = 2 * DIM
HEAD = DIM * NUM_CLASSES + NUM_CLASSES  # 85
TOTAL = PATCH + TOKENS + DEPTH * BLOCK + FINAL_NORM + HEAD  # 6277


class TinyVideoViT(nn.Module):
    """A 2-block video ViT with timm ``Block``s: ``(B, 3, 4, 8, 8)`` -> logits ``(B, 5)``."""

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = NUM_CLASSES
        self.patch_embed = nn.Conv3d(3, DIM, kernel_size=(2, 4, 4), stride=(2, 4, 4))
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + NUM_TOKENS, DIM) * 0.02)
        self.blocks = nn.ModuleList(Block(DIM, HEADS, mlp_ratio=MLP_RATIO, qkv_bias=True) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, NUM_CLASSES)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _model(seed: int = 0) -> TinyVideoViT:
    torch.manual_seed(seed)
    return TinyVideoViT()


def _clips(seed: int = 1, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _check_gradients_only_on_trainable(model: nn.Module) -> None:
    """Backward once; frozen parameters must get no gradient, trainable ones must get one."""
    model.zero_grad(set_to_none=True)
    model(_clips()).logsumexp(dim=1).sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} is trainable but received no gradient"
        else:
            assert p.grad is None, f"{name} is frozen but received a gradient"


def test_tiny_model_parameter_count_matches_hand_count():
    assert trainable_parameters(_model()) == (TOTAL, TOTAL)
    assert TOTAL == 6277


def test_linear_probe_trains_only_the_head():
    model, summary = apply_linear_probe(_model())
    assert summary["trainable"] == HEAD == 85
    assert summary["total"] == TOTAL
    assert _trainable_names(model) == {"head.weight", "head.bias"}
    _check_gradients_only_on_trainable(model)


@pytest.mark.parametrize("freeze_stages, expected", [(0, DEPTH * BLOCK + FINAL_NORM + HEAD), (1, BLOCK + FINAL_NORM + HEAD),
                                                     (2, FINAL_NORM + HEAD)])
def test_partial_finetune_freezes_stem_and_first_blocks(freeze_stages, expected):
    model, summary = apply_partial_finetune(_model(), freeze_stages=freeze_stages)
    assert summary["trainable"] == expected
    names = _trainable_names(model)
    assert not any(n.startswith(("patch_embed", "cls_token", "pos_embed")) for n in names)
    assert not any(n.startswith(f"blocks.{i}.") for i in range(freeze_stages) for n in names)
    assert all(any(n.startswith(f"blocks.{i}.") for n in names) for i in range(freeze_stages, DEPTH))
    _check_gradients_only_on_trainable(model)


def test_partial_finetune_rejects_out_of_range():
    with pytest.raises(ValueError, match="freeze_stages=3"):
        apply_partial_finetune(_model(), freeze_stages=3)


def test_partial_finetune_on_resnet_style_layers():
    class TinyResNetLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv3d(3, 4, 3)  # stem: 3*27*4 + 4 = 328
            self.layer1 = nn.Conv3d(4, 4, 1)  # 20
            self.layer2 = nn.Conv3d(4, 4, 1)  # 20
            self.fc = nn.Linear(4, 2)  # 10

        def forward(self, x):
            return self.fc(self.layer2(self.layer1(self.conv1(x))).mean(dim=(2, 3, 4)))

    model, summary = apply_partial_finetune(TinyResNetLike(), freeze_stages=1)
    assert summary["trainable"] == 20 + 10
    assert _trainable_names(model) == {"layer2.weight", "layer2.bias", "fc.weight", "fc.bias"}

    class Wrapped(nn.Module):  # a timm backbone inside a video wrapper (TSN/TSM/I3D style)
        def __init__(self) -> None:
            super().__init__()
            self.backbone = TinyResNetLike()
            self.backbone.fc = nn.Identity()
            self.fc = nn.Linear(4, 2)

    model, summary = apply_partial_finetune(Wrapped(), freeze_stages=1)
    assert _trainable_names(model) == {"backbone.layer2.weight", "backbone.layer2.bias", "fc.weight", "fc.bias"}


def test_bitfit_trains_biases_and_head():
    model, summary = apply_bitfit(_model())
    block_biases = 3 * DIM + DIM + HIDDEN + DIM + 2 * DIM  # qkv, proj, fc1, fc2, norm1 + norm2 = 144
    assert summary["trainable"] == DIM + DEPTH * block_biases + DIM + HEAD == 405
    names = _trainable_names(model)
    assert names == {n for n, _ in model.named_parameters() if n.endswith("bias")} | {"head.weight"}
    _check_gradients_only_on_trainable(model)


def test_lora_counts_gradients_and_identity_at_init():
    model = _model()
    x = _clips()
    before = model(x)
    rank = 4
    model, summary = apply_lora(model, rank=rank, alpha=8)
    per_block = rank * (DIM + 3 * DIM) + rank * (DIM + DIM) + rank * (DIM + HIDDEN) + rank * (HIDDEN + DIM)
    assert per_block == 192 * rank
    assert summary["trainable"] == DEPTH * per_block + HEAD == 1621
    assert summary["total"] == TOTAL + DEPTH * per_block
    assert len(summary["wrapped"]) == 4 * DEPTH
    wrapped = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 4 * DEPTH and all(m.scaling == 2.0 for m in wrapped)
    assert all(torch.all(m.lora_B == 0) for m in wrapped)
    assert _trainable_names(model) == {n for n, _ in model.named_parameters() if "lora_" in n} | {"head.weight", "head.bias"}
    torch.testing.assert_close(model(x), before, atol=1e-6, rtol=0)  # B = 0: same function
    _check_gradients_only_on_trainable(model)


def test_lora_training_touches_only_adapters_and_merge_matches():
    model, _ = apply_lora(_model(), rank=2, alpha=4, targets=("qkv", "fc2"))
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = build_optimizer(model, lr=0.05, weight_decay=0.0)
    x, y = _clips(batch=6), torch.arange(6) % NUM_CLASSES
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[n]), f"frozen {n} changed"
    assert any(m.lora_B.abs().sum() > 0 for m in model.modules() if isinstance(m, LoRALinear))

    model.eval()
    test_x = _clips(seed=9, batch=4)
    with torch.no_grad():
        unmerged = model(test_x)
    merged = merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert isinstance(merged.blocks[0].attn.qkv, nn.Linear)
    assert trainable_parameters(merged)[1] == TOTAL
    with torch.no_grad():
        torch.testing.assert_close(merged(test_x), unmerged, atol=1e-5, rtol=0)


def test_lora_unknown_target_is_an_error():
    with pytest.raises(ValueError, match="no nn.Linear named like"):
        apply_lora(_model(), targets=("does_not_exist",))


def test_adapters_identity_at_init_counts_and_gradients():
    model = _model()
    x = _clips()
    before = model(x)
    model, summary = apply_adapters(model, bottleneck=4)
    per_adapter = (DIM * 4 + 4) + (4 * DIM + DIM)  # down + up = 148
    assert summary["trainable"] == DEPTH * per_adapter + HEAD == 381
    assert summary["num_adapters"] == DEPTH
    assert all(isinstance(b.mlp, AdapterWrapped) for b in model.blocks)
    torch.testing.assert_close(model(x), before, atol=1e-6, rtol=0)
    assert _trainable_names(model) == {n for n, _ in model.named_parameters() if ".adapter." in n} | {
        "head.weight", "head.bias"}
    _check_gradients_only_on_trainable(model)


def test_adapters_wrap_whole_blocks_without_mlp():
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(DIM)
            self.lin = nn.Linear(DIM, DIM)

        def forward(self, x):
            return x + self.lin(self.norm1(x))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.Sequential(Plain(), Plain())
            self.head = nn.Linear(DIM, 3)

        def forward(self, x):
            return self.head(self.blocks(x).mean(1))

    model, summary = apply_adapters(Net(), bottleneck=2)
    assert all(isinstance(b, AdapterWrapped) for b in model.blocks)
    assert summary["trainable"] == 2 * ((DIM * 2 + 2) + (2 * DIM + DIM)) + DIM * 3 + 3
    assert model(torch.randn(2, 5, DIM)).shape == (2, 3)


def test_describe_reports_counts():
    model, _ = apply_linear_probe(_model())
    text = describe(model)
    assert f"{HEAD:,} / {TOTAL:,}" in text
    assert "blocks" in text and "head" in text
