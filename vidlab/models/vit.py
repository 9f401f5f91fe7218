"""Video ViT with tubelet embedding (ViViT / VideoMAE style), built from timm's ``Block``.

A clip ``(B, C, T, H, W)`` is cut into non-overlapping tubelets of
``tubelet_size x patch_size x patch_size`` by a Conv3d with kernel = stride, giving
``N = T/t * H/p * W/p`` tokens of width ``D``; a fixed 3D sin-cos (or learned) positional
embedding is added. There is no class token: the head pools the tokens (mean, as VideoMAE, or
max). Exactly one final LayerNorm is real, chosen as timm's ``fc_norm`` argument chooses it:
``fc_norm=True`` (the default with a pooling head) normalises the pooled feature and ``norm`` is an
identity; ``fc_norm=False`` normalises every token (``norm``) before pooling, which is what a
masked-autoencoder encoder learns in pretraining, so fine-tuning keeps that pretrained norm.

The split into ``tokenize`` -> ``forward_tokens`` lets masked-autoencoder pretraining run the
encoder on a subset of tokens: ``forward_tokens(tokenize(x)[:, keep])``.
Attention / MLP linears keep timm's names (``blocks.i.attn.qkv``, ``attn.proj``, ``mlp.fc1``,
``mlp.fc2``), which the LoRA / adapter code relies on.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from vidlab.data.transforms import DEFAULT_MEAN, DEFAULT_STD  # the pipeline's normalisation: one source
from vidlab.models.registry import register_model

__all__ = ["VideoViT", "sincos_pos_embed_3d"]


def _sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``(P,)`` positions -> ``(P, dim)`` [sin | cos] features (``dim`` even)."""
    omega = 1.0 / (10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / max(dim // 2, 1)))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_pos_embed_3d(grid_size: tuple[int, int, int], dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Separable 3D sin-cos embedding ``(T'*H'*W', dim)`` in ``(t, h, w)`` raster order.

    A quarter of the channels (rounded to even) encodes time, the rest is split between height
    and width; leftover channels (when ``dim`` is not a multiple of 4) are zero.
    """
    t, h, w = grid_size
    dim_t = (dim // 4) // 2 * 2
    dim_hw = ((dim - dim_t) // 2) // 2 * 2
    grid_t, grid_h, grid_w = torch.meshgrid(
        torch.arange(t, device=device), torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
    )
    parts = [
        _sincos_1d(grid_t.reshape(-1), dim_t),
        _sincos_1d(grid_h.reshape(-1), dim_hw),
        _sincos_1d(grid_w.reshape(-1), dim_hw),
    ]
    emb = torch.cat(parts, dim=1)
    if emb.shape[1] < dim:
        emb = F.pad(emb, (0, dim - emb.shape[1]))
    return emb.float()


class VideoViT(nn.Module):
    """Video ViT. ``forward``: ``(B, C, T, H, W)`` -> logits ``(B, num_classes)``.

    ``forward_features`` gives tokens ``(B, N, D)``; ``forward_head(tokens, pre_logits=True)``
    gives the pooled ``(B, D)`` feature.
    """

    def __init__(
        self,
        img_size: int = 32,
        num_frames: int = 8,
        tubelet_size: int = 2,
        patch_size: int = 8,
        in_chans: int = 3,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        num_classes: int = 400,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        pos_embed: str = "sincos",
        head_init_scale: float = 1.0,
        fc_norm: bool | None = None,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size={img_size} is not a multiple of patch_size={patch_size}")
        if num_frames % tubelet_size:
            raise ValueError(f"num_frames={num_frames} is not a multiple of tubelet_size={tubelet_size}")
        if global_pool not in ("avg", "max"):
            raise ValueError(f"global_pool must be 'avg' or 'max', got {global_pool!r}")
        if pos_embed not in ("sincos", "learned"):
            raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
        self.img_size = img_size
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.patch_size = patch_size
        self.embed_dim = self.num_features = embed_dim
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.pos_embed_type = pos_embed

        self.patch_embed = nn.Conv3d(in_chans, embed_dim, kernel_size=(tubelet_size, patch_size, patch_size),
                                     stride=(tubelet_size, patch_size, patch_size))
        grid = self.grid_size
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim))
        else:  # fixed: a non-persistent buffer, recomputed on load / for another grid
            self.register_buffer("pos_embed", sincos_pos_embed_3d(grid, embed_dim)[None], persistent=False)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth decay rule
        self.blocks = nn.Sequential(*[
            Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                  proj_drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i])
            for i in range(depth)
        ])
        # timm's fc_norm logic: None means "the head pools", so the pooled feature is normalised
        use_fc_norm = True if fc_norm is None else bool(fc_norm)
        self.norm = nn.Identity() if use_fc_norm else nn.LayerNorm(embed_dim, eps=1e-6)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.default_cfg = {
            "architecture": "video_vit",
            "num_frames": num_frames,
            "img_size": img_size,
            "in_chans": in_chans,
            "patch_size": patch_size,
            "tubelet_size": tubelet_size,
            "classifier": "head",
            "mean": tuple(DEFAULT_MEAN),
            "std": tuple(DEFAULT_STD),
        }
        self._init_weights(head_init_scale)

    # ------------------------------------------------------------------ init
    def _init_weights(self, head_init_scale: float) -> None:
        if self.pos_embed_type == "learned":
            trunc_normal_(self.pos_embed, std=0.02)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a Linear (MAE / VideoMAE)
        nn.init.zeros_(self.patch_embed.bias)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if isinstance(self.head, nn.Linear):
            with torch.no_grad():
                self.head.weight.mul_(head_init_scale)

    # ------------------------------------------------------------ geometry
    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Token grid ``(T', H', W') = (T/tubelet, H/patch, W/patch)`` for the configured input."""
        return (self.num_frames // self.tubelet_size, self.img_size // self.patch_size, self.img_size // self.patch_size)

    @property
    def num_patches(self) -> int:
        """Tokens per clip, ``T' * H' * W'``."""
        t, h, w = self.grid_size
        return t * h * w

    def _pos_embed_for(self, grid: tuple[int, int, int]) -> torch.Tensor:
        if grid == self.grid_size:
            return self.pos_embed
        if self.pos_embed_type == "sincos":
            return sincos_pos_embed_3d(grid, self.embed_dim, device=self.pos_embed.device)[None].to(self.pos_embed.dtype)
        t, h, w = self.grid_size
        pe = self.pos_embed.reshape(1, t, h, w, self.embed_dim).permute(0, 4, 1, 2, 3)
        pe = F.interpolate(pe, size=grid, mode="trilinear", align_corners=False)
        return pe.permute(0, 2, 3, 4, 1).reshape(1, -1, self.embed_dim)

    # --------------------------------------------------------------- forward
    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> tokens ``(B, N, D)`` (tubelet embedding + positional embedding)."""
        if x.ndim != 5:
            raise ValueError(f"VideoViT expects (B, C, T, H, W), got shape {tuple(x.shape)}")
        _, _, t, h, w = x.shape
        if t % self.tubelet_size or h % self.patch_size or w % self.patch_size:
            raise ValueError(f"clip (T, H, W)=({t}, {h}, {w}) is not divisible by the tubelet "
                             f"({self.tubelet_size}, {self.patch_size}, {self.patch_size})")
        x = self.patch_embed(x)  # (B, D, T', H', W')
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)  # (B, N, D), (t, h, w) raster order
        return self.pos_drop(x + self._pos_embed_for(grid))

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Transformer blocks + ``norm`` (an identity when ``fc_norm`` is real) on any subset of tokens:
        ``(B, n, D)`` -> ``(B, n, D)``."""
        return self.norm(self.blocks(tokens))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(B, N, D)``; equals ``forward_tokens(tokenize(x))``."""
        return self.forward_tokens(self.tokenize(x))

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, N, D)`` -> pool over tokens -> ``fc_norm`` -> head: ``(B, num_classes)`` (``(B, D)`` if ``pre_logits``)."""
        x = feats.mean(dim=1) if self.global_pool == "avg" else feats.amax(dim=1)
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh ``Linear(D, num_classes)`` (trunc-normal, zero bias); 0 -> Identity."""
        self.num_classes = num_classes
        if num_classes > 0:
            self.head = nn.Linear(self.embed_dim, num_classes, device=self.patch_embed.weight.device)
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        else:
            self.head = nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups by depth (timm convention; layer-wise lr decay reads it): the embeddings,
        then one group per block; the head comes last."""
        return {"stem": r"^pos_embed|patch_embed", "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))]}

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay (timm convention)."""
        return {"pos_embed"} if self.pos_embed_type == "learned" else set()


def _vit(num_classes: int, defaults: dict, kwargs: dict) -> VideoViT:
    return VideoViT(num_classes=num_classes, **{**defaults, **kwargs})


@register_model
def vit_test(num_classes: int = 10, **kwargs) -> VideoViT:
    """Tiny ViT for unit tests: dim 32, depth 2, 2 heads; 4x32x32 clips, 2x8x8 tubelets (32 tokens)."""
    return _vit(num_classes, dict(img_size=32, num_frames=4, tubelet_size=2, patch_size=8,
                                  embed_dim=32, depth=2, num_heads=2), kwargs)


@register_model
def vit_mini(num_classes: int = 400, **kwargs) -> VideoViT:
    """CPU-sized ViT: dim 128, depth 6, 4 heads; 8x32x32 clips, 2x4x4 tubelets (256 tokens).

    For 64x64 clips pass ``img_size=64, patch_size=8`` (same token count).
    """
    return _vit(num_classes, dict(img_size=32, num_frames=8, tubelet_size=2, patch_size=4,
                                  embed_dim=128, depth=6, num_heads=4), kwargs)


@register_model
def vit_tiny(num_classes: int = 400, **kwargs) -> VideoViT:
    """ViT-Ti (dim 192, depth 12, 3 heads); default 16x224x224 clips, 2x16x16 tubelets (VideoMAE)."""
    return _vit(num_classes, dict(img_size=224, num_frames=16, tubelet_size=2, patch_size=16,
                                  embed_dim=192, depth=12, num_heads=3), kwargs)


@register_model
def vit_small(num_classes: int = 400, **kwargs) -> VideoViT:
    """ViT-S (dim 384, depth 12, 6 heads); default 16x224x224 clips, 2x16x16 tubelets (VideoMAE)."""
    return _vit(num_classes, dict(img_size=224, num_frames=16, tubelet_size=2, patch_size=16,
                                  embed_dim=384, depth=12, num_heads=6), kwargs)
