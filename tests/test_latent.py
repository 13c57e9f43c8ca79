"""Latent diffusion with a local AutoencoderKL: encode once (cached), train, decode, load in DiTPipeline."""

import json

import pytest
import torch
import yaml
from diffusers import AutoencoderKL, DiTPipeline

from diffusion_curriculum.cli import main
from diffusion_curriculum.data import DataError
from diffusion_curriculum.data.latents import LatentCodec


@pytest.fixture
def vae_dir(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        sample_size=8,
    )
    path = tmp_path / "vae"
    vae.save_pretrained(path)
    return path


def test_codec_round_trip_shapes_and_cache(vae_dir, tmp_path):
    codec = LatentCodec(vae_dir)
    images = torch.rand(5, 1, 8, 8) * 2 - 1
    cache = tmp_path / "cache"
    a = codec.encode_cached(images, cache, "x")
    b = codec.encode_cached(images, cache, "x")
    assert a.shape == (5, 4, 4, 4) and torch.equal(a, b)
    assert len(list(cache.iterdir())) == 1
    expected = codec.vae.encode(images).latent_dist.mean * codec.scaling_factor
    torch.testing.assert_close(a, expected)
    assert codec.decode(a).shape == (5, 1, 8, 8)


def test_bad_vae_path_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match="AutoencoderKL"):
        LatentCodec(tmp_path)


def test_dit_on_latents_trains_samples_and_loads_into_dit_pipeline(vae_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSION_CURRICULUM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--vae",
                str(vae_dir),
                "--model",
                "dit",
                "--conditioning",
                "class",
                "--max-steps",
                "4",
                "--batch-size",
                "8",
                "--clusters",
                "2",
                "--set",
                "sample.n=4",
                "--set",
                "sample.steps=3",
                "--set",
                "train.sample_every=4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    meta = json.loads((out / "model" / "run.json").read_text())
    assert meta["spec"]["data_shape"] == [4, 4, 4]
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["vae"] == str(vae_dir)
    assert list((tmp_path / "cache" / "latents").iterdir())
    assert (out / "samples" / "step_00000004.png").is_file()
    grid = tmp_path / "grid.npz"
    assert main(["sample", str(out), "--n", "2", "--steps", "3", "--label", "3", "--out", str(grid)]) == 0
    import numpy as np

    assert np.load(grid)["samples"].shape == (2, 1, 8, 8)  # decoded back to pixels
    pipeline = DiTPipeline.from_pretrained(out / "pipeline")
    images = pipeline(
        class_labels=[1, 2],
        num_inference_steps=3,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape[:3] == (2, 8, 8)
