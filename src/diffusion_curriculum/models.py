"""Denoiser factories: diffusers UNets and DiT for images, a residual MLP for vectors, one call for all.

Every network is wrapped in :class:`Denoiser`, called as ``denoiser(x, time_input, cond)``. The objective
chooses what ``time_input`` is (integer DDPM t, 1000*t for flow matching, 250*ln(sigma) for EDM, ...) and
what the raw output means (eps, v, x0, F); the models only embed the time input sinusoidally.

Class conditioning always reserves one extra label row: index ``n_classes`` is the NULL label used for
classifier-free guidance dropout (the trainer drops labels itself; no model drops labels internally).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DiTTransformer2DModel, UNet2DConditionModel, UNet2DModel
from diffusers.models.embeddings import LabelEmbedding, TimestepEmbedding, Timesteps
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .errors import UserError
from .names import ARCHITECTURES, CONDITIONINGS, PRESETS

__all__ = [
    "ARCHITECTURES",
    "CONDITIONINGS",
    "PRESETS",
    "Denoiser",
    "ModelSpec",
    "ResidualMLP",
    "build_model",
    "count_parameters",
]


_SPEC_FILE = "spec.json"
_MODEL_DIR = "model"
_MLP_WEIGHTS = "model.safetensors"

# UNet presets: channels per resolution level (truncated to the levels the size allows), resnets per block,
# attention head size and GroupNorm groups.
_UNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"channels": (32, 64), "layers": 1, "head_dim": 8, "groups": 8},
    "small": {"channels": (64, 128, 128), "layers": 2, "head_dim": 32, "groups": 32},
    "base": {"channels": (128, 256, 256, 512), "layers": 2, "head_dim": 64, "groups": 32},
}
# DiT presets: transformer blocks, heads, head size.
_DIT_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"num_layers": 4, "num_attention_heads": 4, "attention_head_dim": 16},
    "small": {"num_layers": 8, "num_attention_heads": 6, "attention_head_dim": 32},
    "base": {"num_layers": 12, "num_attention_heads": 6, "attention_head_dim": 64},
}
# MLP presets: residual blocks, width.
_MLP_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_blocks": 3, "width": 128},
    "small": {"n_blocks": 4, "width": 256},
    "base": {"n_blocks": 6, "width": 512},
}
_DIT_MAX_GRID = 16  # DiT patch size: the smallest that keeps the token grid at most 16 x 16
_DIT_PATCHES = (1, 2, 4, 8)


@dataclass(frozen=True)
class ModelSpec:
    """What to build: architecture, size preset, data shape and conditioning; validated on creation.

    ``data_shape`` is (C, H, W) for images (unet, dit) and (D,) for vectors (mlp). ``n_classes`` is used only
    with ``conditioning="class"`` (the label table gets n_classes + 1 rows, index n_classes is the NULL
    label); ``text_dim`` only with ``conditioning="text"`` (the encoder hidden size, cross_attention_dim).
    """

    arch: str
    preset: str
    data_shape: tuple[int, ...]
    conditioning: str = "none"
    n_classes: int = 0
    text_dim: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_shape", tuple(int(s) for s in self.data_shape))
        if self.arch not in ARCHITECTURES:
            raise UserError(f"unknown arch {self.arch!r}; expected one of {ARCHITECTURES}")
        if self.preset not in PRESETS:
            raise UserError(f"unknown preset {self.preset!r}; expected one of {PRESETS}")
        if self.conditioning not in CONDITIONINGS:
            raise UserError(f"unknown conditioning {self.conditioning!r}; expected one of {CONDITIONINGS}")
        if len(self.data_shape) not in (1, 3) or min(self.data_shape) < 1:
            raise UserError(f"data_shape must be (C, H, W) or (D,) of positive sizes, got {self.data_shape}")
        is_image = len(self.data_shape) == 3
        if self.arch in ("unet", "dit") and not is_image:
            raise UserError(f"{self.arch} needs image data (C, H, W), got data_shape {self.data_shape}")
        if self.arch == "mlp" and is_image:
            raise UserError(f"mlp needs vector data (D,), got data_shape {self.data_shape}")
        if self.conditioning == "text" and self.arch != "unet":
            raise UserError(f"text conditioning needs arch 'unet' (UNet2DConditionModel), not {self.arch!r}")
        if self.conditioning == "class" and self.n_classes < 1:
            raise UserError(f"class conditioning needs n_classes >= 1, got {self.n_classes}")
        if self.conditioning == "text" and self.text_dim < 1:
            raise UserError(f"text conditioning needs text_dim >= 1, got {self.text_dim}")

    @property
    def null_class(self) -> int:
        """The label index of the NULL class (classifier-free guidance); 0 when not class-conditional."""
        return self.n_classes if self.conditioning == "class" else 0


class ResidualMLP(nn.Module):
    """Residual MLP denoiser for vectors: sinusoidal time (+ optional class) embedding FiLMs every block."""

    def __init__(self, dim: int, width: int, n_blocks: int, num_class_embeds: int | None = None) -> None:
        super().__init__()
        self.time_proj = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(width, width)
        self.class_embedding = nn.Embedding(num_class_embeds, width) if num_class_embeds else None
        self.proj_in = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_FiLMBlock(width) for _ in range(n_blocks))
        self.norm_out = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, dim)

    def forward(self, x: Tensor, timestep: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """Map (B, D) inputs, (B,) time inputs and optional (B,) labels to a (B, D) output."""
        emb = self.time_embedding(self.time_proj(timestep).to(x.dtype))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(class_labels).to(x.dtype)
        h = self.proj_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.proj_out(nn.functional.silu(self.norm_out(h)))


class _FiLMBlock(nn.Module):
    """Pre-norm residual block whose normalised input is scaled and shifted by the conditioning embedding."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.film = nn.Linear(width, 2 * width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        """Return h plus the FiLM-conditioned two-layer update."""
        scale, shift = self.film(nn.functional.silu(emb)).chunk(2, dim=-1)
        y = self.norm(h) * (1 + scale) + shift
        return h + self.fc2(nn.functional.silu(self.fc1(y)))


class Denoiser(nn.Module):
    """One call for every architecture: output = denoiser(x, time_input, cond)."""

    def __init__(self, spec: ModelSpec, inner: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.inner = inner

    def forward(self, x: Tensor, time_input: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        """Return the raw network output shaped and typed like x; its meaning is the objective's business.

        ``time_input`` is a float or long tensor (B,) (a 0-d tensor is broadcast). ``cond`` is ignored for
        unconditional models; class models need ``{"class_labels": (B,) long}`` (index n_classes = NULL);
        text models need ``{"encoder_hidden_states": (B, L, text_dim)}`` and take an optional
        ``"encoder_attention_mask"`` (B, L), true/1 = keep, false/0 = ignore the token.
        """
        batch = x.shape[0]
        t = time_input.to(x.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise UserError(f"time_input must have shape ({batch},) or (), got {tuple(time_input.shape)}")
        cond = cond or {}
        spec = self.spec
        if spec.conditioning == "class":
            labels = _required(cond, "class_labels").to(x.device)
        elif spec.arch == "dit":  # unconditional DiT: its one label row is the NULL label
            labels = torch.full((batch,), spec.null_class, dtype=torch.long, device=x.device)
        else:
            labels = None

        if spec.arch == "mlp":
            out = self.inner(x, t, labels)
        elif spec.conditioning == "text":
            mask = cond.get("encoder_attention_mask")
            out = self.inner(
                x,
                t,
                encoder_hidden_states=_required(cond, "encoder_hidden_states").to(x.device, x.dtype),
                encoder_attention_mask=None if mask is None else mask.to(x.device),
                return_dict=False,
            )[0]
        else:
            out = self.inner(x, t, class_labels=labels, return_dict=False)[0]
        return out.to(x.dtype)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write the spec json and the weights (a diffusers folder, or safetensors for the MLP) under path."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / _SPEC_FILE).write_text(json.dumps(asdict(self.spec), indent=2) + "\n")
        if isinstance(self.inner, ResidualMLP):
            save_file({k: v.contiguous() for k, v in self.inner.state_dict().items()}, path / _MLP_WEIGHTS)
        else:
            self.inner.save_pretrained(path / _MODEL_DIR)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> Denoiser:
        """Load a denoiser written by :meth:`save_pretrained`; outputs match the saved model exactly."""
        path = Path(path)
        spec = ModelSpec(**json.loads((path / _SPEC_FILE).read_text()))
        if spec.arch == "mlp":
            model = build_model(spec)
            model.inner.load_state_dict(load_file(path / _MLP_WEIGHTS))
            return model
        inner = _diffusers_class(spec).from_pretrained(path / _MODEL_DIR)
        if spec.arch == "dit":
            _disable_label_dropout(inner)
        return cls(spec, inner)


def build_model(spec: ModelSpec) -> Denoiser:
    """Build the freshly initialised denoiser a spec describes; ValueError if no layout fits the data."""
    if spec.arch == "mlp":
        p = _MLP_PRESETS[spec.preset]
        n_embeds = spec.n_classes + 1 if spec.conditioning == "class" else None
        inner: nn.Module = ResidualMLP(spec.data_shape[0], p["width"], p["n_blocks"], n_embeds)
    elif spec.arch == "dit":
        inner = _build_dit(spec)
    elif spec.conditioning == "text":
        inner = _build_text_unet(spec)
    else:
        inner = _build_unet(spec)
    return Denoiser(spec, inner)


def count_parameters(model: nn.Module) -> int:
    """Total number of parameters (trainable or not), for logs and preset comparisons."""
    return sum(p.numel() for p in model.parameters())


def _required(cond: dict[str, Tensor], key: str) -> Tensor:
    """Fetch a conditioning entry the model cannot run without."""
    if key not in cond:
        raise UserError(f"this denoiser needs cond[{key!r}]")
    return cond[key]


def _diffusers_class(spec: ModelSpec) -> type:
    """The diffusers model class a spec builds."""
    if spec.arch == "dit":
        return DiTTransformer2DModel
    return UNet2DConditionModel if spec.conditioning == "text" else UNet2DModel


def _unet_levels(spec: ModelSpec) -> tuple[list[int], list[bool]]:
    """Channels per level and which levels get attention, for the spec's preset and image size.

    Levels: the preset's channel list truncated to 1 + d levels, d the most halvings that keep H and W
    integers and at least 2 (28 -> 14 -> 7: 3 levels; 8 -> 4 -> 2: 3 levels; 32 and 64: 4 levels); at
    least one halving is required. Attention (self-attention, or self+cross-attention with text): tiny
    none (with text: the lowest level only), small the lowest level, base every level but the first whose
    resolution is at most 16. The mid block has attention except for tiny without text.
    """
    _, h, w = spec.data_shape
    halvings = 0
    while h % 2 == 0 and w % 2 == 0 and min(h, w) // 2 >= 2:
        h, w, halvings = h // 2, w // 2, halvings + 1
    if halvings < 1:
        raise UserError(f"unet needs H and W even and >= 4 to downsample once, got {spec.data_shape[1:]}")
    channels = list(_UNET_PRESETS[spec.preset]["channels"][: halvings + 1])
    n = len(channels)
    res = [min(spec.data_shape[1:]) // 2**i for i in range(n)]
    if spec.preset == "base":
        attn = [i > 0 and res[i] <= 16 for i in range(n)]
    elif spec.preset == "small" or spec.conditioning == "text":
        attn = [i == n - 1 for i in range(n)]
    else:
        attn = [False] * n
    return channels, attn


def _build_unet(spec: ModelSpec) -> UNet2DModel:
    """diffusers UNet2DModel, class-conditional through an (n_classes + 1)-row label table."""
    p = _UNET_PRESETS[spec.preset]
    channels, attn = _unet_levels(spec)
    c, h, w = spec.data_shape
    return UNet2DModel(
        sample_size=(h, w),
        in_channels=c,
        out_channels=c,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        block_out_channels=tuple(channels),
        layers_per_block=p["layers"],
        attention_head_dim=p["head_dim"],
        norm_num_groups=p["groups"],
        add_attention=spec.preset != "tiny",
        num_class_embeds=spec.n_classes + 1 if spec.conditioning == "class" else None,
    )


def _build_text_unet(spec: ModelSpec) -> UNet2DConditionModel:
    """diffusers UNet2DConditionModel with cross-attention to text_dim-wide encoder states."""
    p = _UNET_PRESETS[spec.preset]
    channels, attn = _unet_levels(spec)
    c, h, w = spec.data_shape
    return UNet2DConditionModel(
        sample_size=(h, w),
        in_channels=c,
        out_channels=c,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        block_out_channels=tuple(channels),
        layers_per_block=p["layers"],
        # diffusers' naming quirk: attention_head_dim here is the number of heads per level.
        attention_head_dim=tuple(ch // p["head_dim"] for ch in channels),
        norm_num_groups=p["groups"],
        cross_attention_dim=spec.text_dim,
    )


def _build_dit(spec: ModelSpec) -> DiTTransformer2DModel:
    """diffusers DiTTransformer2DModel; unconditional models get one label row, always the NULL label.

    Patch size: the smallest of 1, 2, 4, 8 dividing the (square) image that keeps the token grid at most
    16 x 16 (8 -> 1, 16 -> 1, 28 -> 2, 32 -> 2, 64 -> 4).
    """
    c, h, w = spec.data_shape
    if h != w:
        raise UserError(f"dit needs square images, got {h}x{w}")
    patch = next((q for q in _DIT_PATCHES if h % q == 0 and h // q <= _DIT_MAX_GRID), None)
    if patch is None:
        raise UserError(f"dit: no patch size in {_DIT_PATCHES} divides {h} into a grid of <= {_DIT_MAX_GRID}")
    n_classes = spec.n_classes if spec.conditioning == "class" else 0
    # With class_dropout_prob > 0 (diffusers' fixed 0.1) the label table has n_classes + 1 rows and row
    # n_classes is its CFG row: our NULL label. The internal random label dropout is switched off below.
    inner = DiTTransformer2DModel(
        in_channels=c,
        out_channels=c,
        sample_size=h,
        patch_size=patch,
        num_embeds_ada_norm=n_classes,
        **_DIT_PRESETS[spec.preset],
    )
    _disable_label_dropout(inner)
    return inner


def _disable_label_dropout(inner: nn.Module) -> None:
    """Stop diffusers' LabelEmbedding from dropping labels in train mode: the trainer owns CFG dropout."""
    for module in inner.modules():
        if isinstance(module, LabelEmbedding):
            if module.embedding_table.num_embeddings != module.num_classes + 1:
                raise RuntimeError("diffusers LabelEmbedding lacks its CFG row; cannot map the NULL label")
            module.dropout_prob = 0.0
