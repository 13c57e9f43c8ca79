"""FID Inception: weights-file plumbing and checks, pytorch-fid's state_dict layout, features, and FID parity.

Each image costs a full Inception pass at 299x299 (about 0.2 s on 2 CPU cores) and each call a fixed overhead
(seconds when the cores are shared), so the sets are tiny and the calls few.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_curriculum.metrics.distribution import FeatureStats, frechet_distance
from diffusion_curriculum.metrics.inception import INCEPTION_HELP, FIDInceptionV3, inception_features, load_inception

# scipy >= 1.16 deprecates sqrtm's disp=False, which pytorch-fid 0.3.0 passes
SCIPY_DISP = "ignore:The `disp` argument is deprecated:DeprecationWarning"


@pytest.fixture(scope="module")
def saved_net(tmp_path_factory: pytest.TempPathFactory) -> tuple[FIDInceptionV3, Path]:
    """A random FID Inception saved as a state_dict, with O(1) features (He-normal convs, random BatchNorm stats)."""
    torch.manual_seed(0)
    net = FIDInceptionV3()
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.normal_(module.bias, 0, 0.1)
    path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
    torch.save(net.state_dict(), path)
    return net.eval(), path


@pytest.fixture(scope="module")
def net(saved_net: tuple[FIDInceptionV3, Path]) -> FIDInceptionV3:
    """The saved random network, loaded back the way a user's weights file is."""
    return load_inception(saved_net[1])


@pytest.fixture(scope="module")
def pytorch_fid_frechet() -> Callable[..., float]:
    """pytorch-fid's own calculate_frechet_distance (numpy and scipy.linalg.sqrtm)."""
    pytest.importorskip("pytorch_fid")
    try:
        from pytorch_fid.fid_score import calculate_frechet_distance
    except Exception:  # torchvision absent, or failing to import beside this CPU torch build
        # pytorch_fid imports torchvision at module level (transforms for its image loader, Inception blocks to
        # subclass) but calculate_frechet_distance uses none of it: a stub torchvision, present only while
        # pytorch_fid imports, lets the function load without the real one.
        vision = types.ModuleType("torchvision")
        vision.transforms = types.ModuleType("torchvision.transforms")
        vision.models = types.ModuleType("torchvision.models")
        vision.models.inception = types.ModuleType("torchvision.models.inception")
        for block in ("InceptionA", "InceptionC", "InceptionE"):
            setattr(vision.models.inception, block, torch.nn.Module)
        with pytest.MonkeyPatch.context() as patch:
            for module in (vision, vision.transforms, vision.models, vision.models.inception):
                patch.setitem(sys.modules, module.__name__, module)
            for name in ("pytorch_fid.inception", "pytorch_fid.fid_score"):
                patch.delitem(sys.modules, name, raising=False)
            from pytorch_fid.fid_score import calculate_frechet_distance
    return calculate_frechet_distance


def _images(n: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """Uniform noise images in [-1, 1], the range inception_features takes."""
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_loaded_net_reproduces_the_saved_one(saved_net: tuple[FIDInceptionV3, Path], net: FIDInceptionV3) -> None:
    """Every parameter and BatchNorm statistic survives save/load; images are quantised to 8 bits and grayscale
    counts as its RGB repeat; batches (here 2 + 1 images) neither reorder nor change features."""
    original, _ = saved_net
    gray = _images(3, 1, 28, seed=1)
    feats = inception_features(net, gray, batch_size=2)
    assert feats.shape == (3, 2048) and feats.dtype == torch.float64 and feats.device.type == "cpu"
    with torch.no_grad():
        eight_bit = ((gray.clamp(-1, 1) + 1) * 127.5).round() / 255  # as a saved PNG holds it
        expected = original(eight_bit.repeat(1, 3, 1, 1)).double()
    assert torch.allclose(feats, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(feats[0], feats[1], rtol=1e-3)
    assert not net.training and not any(p.requires_grad for p in net.parameters())


def test_tiny_images_and_wrong_channels(net: FIDInceptionV3) -> None:
    """8x8 grayscale images give finite, image-dependent features; channel counts other than 1 and 3 fail."""
    feats = inception_features(net, _images(2, 1, 8, seed=2))
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    assert not torch.allclose(feats[0], feats[1], rtol=1e-3)
    with pytest.raises(ValueError, match="1 or 3"):
        inception_features(net, _images(1, 2, 8, seed=3))


def test_state_dict_has_the_layout_of_pytorch_fids_file() -> None:
    """Keys and shapes of torchvision's inception_v3(num_classes=1008, aux_logits=False), which pytorch-fid fills.

    Independent of our code: shapes from torchvision/models/inception.py; pytorch-fid's fid_inception_v3 builds
    that model, swaps Mixed_5b-5d, 6b-6e, 7b, 7c for same-shaped FID blocks, and loads the file strictly.
    """
    model = FIDInceptionV3()
    state = model.state_dict()
    convs = 5 + 3 * 7 + 4 + 4 * 10 + 6 + 2 * 9  # BasicConv2d units: stem, Mixed_5b-5d, 6a, 6b-6e, 7a, 7b-7c
    # each: conv.weight, bn.{weight, bias, running_mean, running_var, num_batches_tracked}; then fc.{weight, bias}
    assert len(state) == 6 * convs + 2 == 566
    assert len(list(model.parameters())) == 3 * convs + 2 == 284
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_var": (32,),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch5x5_1.conv.weight": (48, 192, 1, 1),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_5d.branch3x3dbl_3.conv.weight": (96, 96, 3, 3),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_4.conv.weight": (192, 192, 7, 1),
        "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
        "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch3x3dbl_1.conv.weight": (448, 2048, 1, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    assert {key: tuple(state[key].shape) for key in expected} == expected
    assert not any(key.startswith("AuxLogits") or key.endswith("conv.bias") for key in state)
    # torchvision's inception_v3 (1000 classes, with AuxLogits) has 27,161,264 parameters (its weights' meta);
    # without AuxLogits (conv0 768*128 + 2*128, conv1 128*768*5*5 + 2*768, fc 768*1000 + 1000) and with fc
    # widened to 1008 classes (+8 * (2048 + 1)) that is 23,850,960.
    aux = (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) + (768 * 1000 + 1000)
    assert sum(p.numel() for p in model.parameters()) == 27_161_264 - aux + 8 * 2049 == 23_850_960
    assert all(m.eps == 0.001 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_load_inception_refuses_missing_and_wrong_files(tmp_path: Path) -> None:
    """No path or a missing file explains where the weights come from; a wrong file names the offending key."""
    assert "pt_inception-2015-12-05-6726825d.pth" in INCEPTION_HELP and "--inception-weights" in INCEPTION_HELP
    with pytest.raises(ValueError, match="--inception-weights") as info:
        load_inception(None)
    assert str(info.value) == INCEPTION_HELP
    with pytest.raises(ValueError, match="no such file") as info:
        load_inception(tmp_path / "absent.pth")
    assert INCEPTION_HELP in str(info.value)
    torchvision_like = tmp_path / "aux.pth"
    torch.save({"AuxLogits.fc.weight": torch.zeros(1000, 768)}, torchvision_like)
    with pytest.raises(ValueError, match=r"missing keys \['Conv2d_1a_3x3.conv.weight'.*AuxLogits\.fc\.weight"):
        load_inception(torchvision_like)
    imagenet_head = tmp_path / "fc1000.pth"
    torch.save({"fc.weight": torch.zeros(1000, 2048)}, imagenet_head)
    with pytest.raises(ValueError, match=r"size mismatch for fc\.weight"):
        load_inception(imagenet_head)
    not_torch = tmp_path / "text.pth"
    not_torch.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"torch\.load cannot read it"):
        load_inception(not_torch)


@pytest.mark.filterwarnings(SCIPY_DISP)
def test_frechet_distance_matches_pytorch_fid_on_network_features(
    net: FIDInceptionV3, pytorch_fid_frechet: Callable[..., float]
) -> None:
    """Our FID equals pytorch-fid's on pool3 features of two image sets, projected to 256 of the 2048 dimensions.

    pytorch-fid's scipy sqrtm of a 2048x2048 matrix takes 30-40 s on 2 cores, hence the fixed random orthonormal
    projection, which keeps every feature's contribution. Six images per set make rank-5 covariances, where
    pytorch-fid's general sqrtm is accurate to a few 1e-7 (ours uses symmetric eigendecompositions).
    """
    feats = inception_features(net, torch.cat([_images(6, 3, 32, seed=5), _images(6, 3, 32, seed=6)]))
    real, fake = feats[:6], feats[6:]
    basis, _ = torch.linalg.qr(torch.randn(2048, 256, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    a, b = FeatureStats.from_features(real @ basis), FeatureStats.from_features(fake @ basis)
    ours = frechet_distance(a, b)
    theirs = pytorch_fid_frechet(a.mean.numpy(), a.cov.numpy(), b.mean.numpy(), b.cov.numpy())
    assert float((a.mean - b.mean).pow(2).sum()) < 0.5 * ours  # the covariance term is most of it
    assert ours == pytest.approx(float(theirs), rel=1e-6)


@pytest.mark.filterwarnings(SCIPY_DISP)
def test_frechet_distance_matches_pytorch_fid_on_full_rank_covariances(
    pytorch_fid_frechet: Callable[..., float],
) -> None:
    """With well-conditioned covariances (n > d, correlated Gaussians) both computations agree to float64 rounding."""
    rng = np.random.default_rng(8)
    n, d = 600, 128
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / np.sqrt(d) + 0.3
    y = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / np.sqrt(d)
    a, b = FeatureStats.from_features(torch.from_numpy(x)), FeatureStats.from_features(torch.from_numpy(y))
    theirs = pytorch_fid_frechet(a.mean.numpy(), a.cov.numpy(), b.mean.numpy(), b.cov.numpy())
    assert frechet_distance(a, b) == pytest.approx(float(theirs), rel=1e-9)
