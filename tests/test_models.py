"""Denoiser factories: one call for every architecture, conditioning, size and preset."""

import pytest
import torch
from diffusers import DiTTransformer2DModel, UNet2DConditionModel, UNet2DModel

from diffusion_curriculum.models import (
    PRESETS,
    Denoiser,
    ModelSpec,
    ResidualMLP,
    build_model,
    count_parameters,
)

N_CLASSES = 10
TEXT_DIM = 16
TOKENS = 5
BATCH = 3

VALID = [
    ("unet", "none", (3, 8, 8)),
    ("unet", "none", (1, 28, 28)),
    ("unet", "class", (3, 8, 8)),
    ("unet", "class", (1, 28, 28)),
    ("unet", "text", (3, 8, 8)),
    ("unet", "text", (1, 28, 28)),
    ("dit", "none", (3, 8, 8)),
    ("dit", "class", (3, 8, 8)),
    ("dit", "class", (1, 28, 28)),
    ("mlp", "none", (2,)),
    ("mlp", "class", (2,)),
    ("mlp", "none", (8,)),
    ("mlp", "class", (8,)),
]


def _spec(arch, conditioning, shape, preset="tiny"):
    return ModelSpec(arch, preset, shape, conditioning, n_classes=N_CLASSES, text_dim=TEXT_DIM)


def _model(arch, conditioning, shape, preset="tiny", seed=0):
    torch.manual_seed(seed)
    return build_model(_spec(arch, conditioning, shape, preset))


def _cond(conditioning, batch=BATCH, seed=1):
    g = torch.Generator().manual_seed(seed)
    if conditioning == "class":
        return {"class_labels": torch.arange(batch) % (N_CLASSES + 1)}
    if conditioning == "text":
        mask = torch.ones(batch, TOKENS, dtype=torch.bool)
        mask[:, -1] = False
        return {
            "encoder_hidden_states": torch.randn(batch, TOKENS, TEXT_DIM, generator=g),
            "encoder_attention_mask": mask,
        }
    return None


def _inputs(shape, batch=BATCH, seed=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return x, t


@pytest.mark.parametrize(("arch", "conditioning", "shape"), VALID)
def test_tiny_forward_shape_dtype_finite_and_gradients(arch, conditioning, shape):
    model = _model(arch, conditioning, shape)
    x, t = _inputs(shape)
    cond = _cond(conditioning)
    with torch.no_grad():
        out_long = model(x, t, cond)
    assert out_long.shape == x.shape and out_long.dtype == x.dtype
    assert torch.isfinite(out_long).all()

    # Float time input (any value in [-2000, 2000]) works; an integer-valued float equals the long input.
    out_float = model(x, t.float(), cond)
    torch.testing.assert_close(out_float.detach(), out_long)
    out = model(x, torch.tensor([-2000.0, 0.37, 1999.5]), cond)
    assert out.shape == x.shape and torch.isfinite(out).all()

    x = x.clone().requires_grad_(True)
    model(x, t.float(), cond).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize(("arch", "shape"), [("unet", (3, 8, 8)), ("dit", (3, 8, 8)), ("mlp", (2,))])
def test_null_class_index_is_the_extra_label_row(arch, shape):
    model = _model(arch, "class", shape).eval()
    assert model.spec.null_class == N_CLASSES
    x, t = _inputs(shape, batch=2)
    x, t = x[:1].expand(2, *shape), t[:1].expand(2)
    with torch.no_grad():
        out = model(x, t, {"class_labels": torch.tensor([N_CLASSES, 0])})
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])  # the label reaches the output
    with pytest.raises(IndexError):
        model(x, t, {"class_labels": torch.tensor([N_CLASSES + 1, 0])})


def test_dit_does_not_drop_labels_itself_in_train_mode():
    model = _model("dit", "class", (3, 8, 8)).train()
    x, t = _inputs((3, 8, 8), batch=64)
    cond = {"class_labels": torch.arange(64) % N_CLASSES}
    with torch.no_grad():
        torch.manual_seed(0)
        first = model(x, t, cond)
        torch.manual_seed(1)
        second = model(x, t, cond)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_unconditional_models_ignore_cond_and_dit_uses_the_null_label():
    model = _model("dit", "none", (3, 8, 8)).eval()
    x, t = _inputs((3, 8, 8))
    with torch.no_grad():
        plain = model(x, t)
        with_labels = model(x, t, {"class_labels": torch.zeros(BATCH, dtype=torch.long)})
    torch.testing.assert_close(plain, with_labels, rtol=0, atol=0)
    assert model.spec.null_class == 0
    assert model.inner.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.num_embeddings == 1


def test_text_mask_is_applied():
    model = _model("unet", "text", (3, 8, 8)).eval()
    x, t = _inputs((3, 8, 8))
    cond = _cond("text")
    states = cond["encoder_hidden_states"]
    with torch.no_grad():
        masked = model(x, t, cond)
        unmasked = model(x, t, {"encoder_hidden_states": states})
        all_ones = model(x, t, {"encoder_hidden_states": states, "encoder_attention_mask": torch.ones(BATCH, TOKENS)})
        # A masked token is ignored: changing it does not change the output.
        changed = states.clone()
        changed[:, -1] += 5.0
        masked_changed = model(x, t, {**cond, "encoder_hidden_states": changed})
    assert not torch.allclose(masked, unmasked, atol=1e-6)
    torch.testing.assert_close(all_ones, unmasked)
    torch.testing.assert_close(masked_changed, masked)


def test_time_input_scalar_broadcasts_and_wrong_shapes_or_missing_cond_raise():
    model = _model("unet", "class", (3, 8, 8)).eval()
    x, _ = _inputs((3, 8, 8))
    cond = _cond("class")
    with torch.no_grad():
        torch.testing.assert_close(model(x, torch.tensor(7), cond), model(x, torch.full((BATCH,), 7), cond))
    with pytest.raises(ValueError, match="time_input"):
        model(x, torch.zeros(BATCH, 1), cond)
    with pytest.raises(ValueError, match="class_labels"):
        model(x, torch.zeros(BATCH))
    text = _model("unet", "text", (3, 8, 8))
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        text(x, torch.zeros(BATCH))


@pytest.mark.parametrize(
    ("arch", "conditioning", "shape", "inner_type"),
    [
        ("unet", "none", (3, 8, 8), UNet2DModel),
        ("unet", "class", (1, 28, 28), UNet2DModel),
        ("unet", "text", (3, 8, 8), UNet2DConditionModel),
        ("dit", "class", (3, 8, 8), DiTTransformer2DModel),
        ("dit", "none", (3, 8, 8), DiTTransformer2DModel),
        ("mlp", "class", (8,), ResidualMLP),
    ],
)
def test_save_load_round_trip_gives_identical_outputs(tmp_path, arch, conditioning, shape, inner_type):
    model = _model(arch, conditioning, shape).eval()
    assert isinstance(model.inner, inner_type)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = Denoiser.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.spec == model.spec
    assert isinstance(loaded.inner, inner_type)
    x, t = _inputs(shape)
    cond = _cond(conditioning)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, cond), model(x, t, cond), rtol=0, atol=0)
    if arch == "dit":  # the label-dropout switch-off survives loading
        loaded.train()
        with torch.no_grad():
            torch.testing.assert_close(loaded(x, t, cond), model(x, t, cond), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "dit", "data_shape": (1, 8, 8), "conditioning": "text", "text_dim": 8}, "text"),
        ({"arch": "mlp", "data_shape": (2,), "conditioning": "text", "text_dim": 8}, "text"),
        ({"arch": "mlp", "data_shape": (1, 8, 8)}, "mlp needs vector"),
        ({"arch": "unet", "data_shape": (8,)}, "unet needs image"),
        ({"arch": "dit", "data_shape": (8,)}, "dit needs image"),
        ({"arch": "unet", "data_shape": (1, 8, 8), "conditioning": "class"}, "n_classes"),
        ({"arch": "mlp", "data_shape": (2,), "conditioning": "class", "n_classes": 0}, "n_classes"),
        ({"arch": "unet", "data_shape": (1, 8, 8), "conditioning": "text"}, "text_dim"),
        ({"arch": "unet", "data_shape": (1, 7, 7)}, "even"),
        ({"arch": "unet", "data_shape": (1, 2, 2)}, "even"),
        ({"arch": "dit", "data_shape": (1, 8, 16)}, "square"),
        ({"arch": "dit", "data_shape": (1, 34, 34)}, "patch"),
        ({"arch": "vit", "data_shape": (1, 8, 8)}, "arch"),
        ({"arch": "unet", "data_shape": (1, 8, 8), "preset": "huge"}, "preset"),
        ({"arch": "unet", "data_shape": (1, 8, 8), "conditioning": "image"}, "conditioning"),
        ({"arch": "unet", "data_shape": (8, 8)}, "data_shape"),
        ({"arch": "mlp", "data_shape": (0,)}, "data_shape"),
    ],
)
def test_invalid_combinations_raise_value_error(kwargs, match):
    kwargs = {"preset": "tiny", **kwargs}
    with pytest.raises(ValueError, match=match):
        build_model(ModelSpec(**kwargs))


@pytest.mark.parametrize(
    ("shape", "preset", "channels", "down_types"),
    [
        ((1, 28, 28), "tiny", (32, 64), ("DownBlock2D", "DownBlock2D")),
        ((1, 28, 28), "small", (64, 128, 128), ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D")),
        ((1, 28, 28), "base", (128, 256, 256), ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")),
        ((3, 8, 8), "base", (128, 256, 256), ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")),
        (
            (3, 32, 32),
            "base",
            (128, 256, 256, 512),
            ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        ),
        (
            (3, 64, 64),
            "base",
            (128, 256, 256, 512),
            ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        ),
    ],
)
def test_unet_block_layout_follows_the_size(shape, preset, channels, down_types):
    config = build_model(ModelSpec("unet", preset, shape)).inner.config
    assert tuple(config.block_out_channels) == channels
    assert tuple(config.down_block_types) == down_types
    assert len(config.up_block_types) == len(channels)


def test_text_unet_cross_attends_at_the_lowest_level_even_when_tiny():
    config = _model("unet", "text", (1, 28, 28)).inner.config
    assert tuple(config.down_block_types) == ("DownBlock2D", "CrossAttnDownBlock2D")
    assert tuple(config.up_block_types) == ("CrossAttnUpBlock2D", "UpBlock2D")
    assert config.cross_attention_dim == TEXT_DIM


@pytest.mark.parametrize(("size", "patch"), [(8, 1), (16, 1), (28, 2), (32, 2), (64, 4)])
def test_dit_patch_size_keeps_the_token_grid_small(size, patch):
    spec = ModelSpec("dit", "tiny", (3, size, size), "class", n_classes=N_CLASSES)
    assert build_model(spec).inner.config.patch_size == patch


@pytest.mark.parametrize(
    ("arch", "conditioning", "shape"),
    [
        ("unet", "class", (1, 28, 28)),
        ("unet", "text", (1, 28, 28)),
        ("dit", "class", (1, 28, 28)),
        ("mlp", "class", (8,)),
    ],
)
def test_presets_build_with_increasing_parameter_counts(arch, conditioning, shape):
    counts = []
    for preset in PRESETS:
        model = _model(arch, conditioning, shape, preset=preset)
        counts.append(count_parameters(model))
        if preset == "small":  # base is build-only to keep the suite fast
            x, t = _inputs(shape, batch=2)
            with torch.no_grad():
                assert model(x, t, _cond(conditioning, batch=2)).shape == x.shape
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts
