"""The README's diffusers recipes, run as written: each code block is read from README.md and executed
in the places of diffusers' train_unconditional.py it names (a stand-in for the script's context:
its objects, under their names), so the README cannot drift from what works."""

from __future__ import annotations

import re
from argparse import Namespace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

README = Path(__file__).resolve().parents[1] / "README.md"


CURRICULUM = "## Three lines in a diffusers training loop"
RECOMMENDED = "## Loss importance sampling in diffusers' training loop"


def _recipe(heading: str = CURRICULUM) -> tuple[str, str, str]:
    """The three parts of the first Python block under the recipe's heading."""
    text = README.read_text()
    section = text[text.index(heading) :]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    one, rest = block.split("\n# 2.", 1)
    two, three = rest.split("\n# 3.", 1)
    return one, "# 2." + two, "# 3." + three


def _extract_into_tensor(arr, timesteps, broadcast_shape):
    """The script's helper, rewritten: arr[timesteps] broadcast to ``broadcast_shape``."""
    res = torch.as_tensor(arr)[timesteps].float().to(timesteps.device)
    while res.dim() < len(broadcast_shape):
        res = res[..., None]
    return res.expand(broadcast_shape)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_the_readme_recipe_runs_in_the_scripts_places_and_keeps_its_loss(prediction_type):
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    one, two, three = _recipe()
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model, optimizer = accelerator.prepare(model, optimizer)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    scope = {
        "accelerator": accelerator,
        "noise_scheduler": noise_scheduler,
        "F": F,
        "torch": torch,
        "args": Namespace(prediction_type=prediction_type),
        "_extract_into_tensor": _extract_into_tensor,
    }
    exec(one, scope)
    sampler = scope["sampler"]
    assert sampler in accelerator._custom_objects  # registered for checkpointing
    g = torch.Generator().manual_seed(0)
    for _ in range(8):  # 8 micro-batches, 4 optimizer steps
        clean_images = torch.randn(6, 1, 8, 8, generator=g)
        scope.update(clean_images=clean_images, bsz=clean_images.shape[0])
        exec(two, scope)
        timesteps = scope["timesteps"]
        assert timesteps.shape == (6,) and timesteps.dtype == torch.long
        noise = torch.randn(clean_images.shape, generator=g)
        noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
        with accelerator.accumulate(model):
            model_output = model(noisy_images)
            scope.update(noise=noise, model_output=model_output)
            exec(three, scope)
            # the script's own scalar loss, from its two branches
            if prediction_type == "epsilon":
                script_loss = F.mse_loss(model_output.float(), noise.float())
            else:
                alpha_t = _extract_into_tensor(noise_scheduler.alphas_cumprod, timesteps, (6, 1, 1, 1))
                snr = alpha_t / (1 - alpha_t)
                script_loss = (snr * F.mse_loss(model_output.float(), clean_images.float(), reduction="none")).mean()
            torch.testing.assert_close(scope["loss"], script_loss)
            assert scope["per_sample_loss"].shape == (6,)
            accelerator.backward(scope["loss"])
            optimizer.step()
            optimizer.zero_grad()
    assert sampler.step == 4  # it learned once per optimizer step
    assert sum(sampler.stats()["draw_counts"]) == 8 * 6


def test_the_recommended_recipe_weights_the_loss_back_and_learns_once_per_optimizer_step():
    """The loss importance block: its loss is the per-sample loss times the sampler's weights (so the
    objective stays the uniform one), and its sampler is the one the README recommends."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    from diffusion_curriculum import LossImportance

    one, two, three = _recipe(RECOMMENDED)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model, optimizer = accelerator.prepare(model, optimizer)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000)
    scope = {"accelerator": accelerator, "noise_scheduler": noise_scheduler, "F": F, "torch": torch}
    exec(one, scope)
    sampler = scope["sampler"]
    assert isinstance(sampler, LossImportance) and sampler in accelerator._custom_objects
    every = torch.arange(1000)
    for _ in range(10):  # a full loss history, so that the weights are not yet all ones
        sampler.observe(1.0 / (1.0 + every.float()), every)
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        clean_images = torch.randn(6, 1, 8, 8, generator=g)
        scope.update(clean_images=clean_images, bsz=6)
        exec(two, scope)
        timesteps = scope["timesteps"]
        weights = sampler.loss_weights(timesteps)
        assert not torch.allclose(weights, torch.ones_like(weights))
        noise = torch.randn(clean_images.shape, generator=g)
        with accelerator.accumulate(model):
            model_output = model(noise_scheduler.add_noise(clean_images, noise, timesteps))
            scope.update(noise=noise, model_output=model_output)
            exec(three, scope)
            per_sample = F.mse_loss(model_output.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))
            torch.testing.assert_close(scope["loss"], (per_sample * weights).mean())
            accelerator.backward(scope["loss"])
            optimizer.step()
            optimizer.zero_grad()
    assert sampler.step == 10 + 4
