"""Inception-v3 pool3 features for FID, from the weights file pytorch-fid uses, so scores compare with papers.

The network is the FID variant of Inception-v3 (the TensorFlow 2015-12-05 graph as ported by pytorch-fid):
torchvision's ``Inception3`` layer names and shapes with 1008 classes and no auxiliary head, whose Mixed_5*,
Mixed_6b-e and Mixed_7b average-pool without counting padding (as TensorFlow does) and whose Mixed_7c pools
with max instead of average. It is written here rather than imported because torchvision is not a dependency.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import UserError

__all__ = ["INCEPTION_HELP", "FIDInceptionV3", "inception_features", "load_inception"]

INCEPTION_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
INCEPTION_HELP = (
    "FID needs the standard Inception weights: download pt_inception-2015-12-05-6726825d.pth from the pytorch-fid "
    f"GitHub releases ({INCEPTION_WEIGHTS_URL}) and pass --inception-weights PATH"
)
_RESOLUTION = 299


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 0.001) and ReLU: the unit all Inception layers are made of."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        """Convolve, normalise and rectify."""
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: Tensor) -> Tensor:
    """3x3 stride-1 average pool that ignores the zero padding, as TensorFlow's (and so the FID graph's) does."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """Mixed_5b/5c/5d (35x35 grid): 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the four branches along channels."""
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], dim=1)


class InceptionB(nn.Module):
    """Mixed_6a: reduces the 35x35 grid to 17x17 with strided 3x3, double 3x3 and max-pooled branches."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the three branches along channels."""
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3(x), branch3x3dbl, branch_pool], dim=1)


class FIDInceptionC(nn.Module):
    """Mixed_6b-6e (17x17 grid): 1x1, factorised 7x7, double factorised 7x7 and pooled branches."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the four branches along channels."""
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        branch_pool = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], dim=1)


class InceptionD(nn.Module):
    """Mixed_7a: reduces the 17x17 grid to 8x8 with strided 3x3, factorised 7x7 + 3x3 and max-pooled branches."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the three branches along channels."""
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], dim=1)


class FIDInceptionE(nn.Module):
    """Mixed_7b/7c (8x8 grid): 1x1, split 3x3, double split 3x3 and pooled branches.

    The FID graph pools Mixed_7b's last branch by average (padding not counted) but Mixed_7c's by max.
    """

    def __init__(self, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the branches (the split ones contributing two parts each) along channels."""
        branch3x3 = self.branch3x3_1(x)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool_3x3(x)
        parts = [
            self.branch1x1(x),
            self.branch3x3_2a(branch3x3),
            self.branch3x3_2b(branch3x3),
            self.branch3x3dbl_3a(branch3x3dbl),
            self.branch3x3dbl_3b(branch3x3dbl),
            self.branch_pool(pooled),
        ]
        return torch.cat(parts, dim=1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3, keyed like torchvision's Inception3 so pytorch-fid's weights file loads strictly.

    ``fc`` (1008 ImageNet logits of the TF graph) is not used for features; it is kept so the file loads as is.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: Tensor) -> Tensor:
        """Map images in [0, 1] of shape (N, 3, H, W) to their 2048-d pool3 features, resizing as pytorch-fid does."""
        x = F.interpolate(x, size=(_RESOLUTION, _RESOLUTION), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        blocks = (
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d,
            self.Mixed_6a, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
            self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
        )  # fmt: skip
        for block in blocks:
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_inception(path: str | Path | None, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """Build the FID Inception from the user's weights file, refusing anything but the exact pytorch-fid layout."""
    if path is None:
        raise UserError(INCEPTION_HELP)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; {INCEPTION_HELP}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError) as exc:  # torch.load on a non-torch file
        raise UserError(f"{path}: torch.load cannot read it ({type(exc).__name__}); {INCEPTION_HELP}") from exc
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state_dict; {INCEPTION_HELP}")
    model = FIDInceptionV3()
    try:
        keys = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # right keys, wrong shapes: name the first mismatch (the line after the header)
        lines = str(exc).splitlines()
        raise UserError(
            f"{path} does not fit the FID Inception: {lines[min(1, len(lines) - 1)].strip()}; {INCEPTION_HELP}"
        ) from exc
    if keys.missing_keys or keys.unexpected_keys:
        raise UserError(
            f"{path} is not the FID Inception state_dict: missing keys {keys.missing_keys[:3]} "
            f"({len(keys.missing_keys)} in all), unexpected keys {keys.unexpected_keys[:3]} "
            f"({len(keys.unexpected_keys)} in all); {INCEPTION_HELP}"
        )
    return model.requires_grad_(False).eval().to(device)


@torch.no_grad()
def inception_features(model: FIDInceptionV3, images: Tensor, batch_size: int = 100, progress: bool = False) -> Tensor:
    """Pool3 features (float64, CPU) of images in [-1, 1] with 1 or 3 channels, batched to bound memory.

    Values are clamped and rounded to 8-bit levels, as saving them as PNG would (papers compute FID on
    saved images), and grayscale is repeated to RGB.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UserError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    device = next(model.parameters()).device
    starts = range(0, images.shape[0], batch_size)
    feats = []
    for start in tqdm(starts, desc="inception", disable=not progress):
        batch = images[start : start + batch_size].to(device, torch.float32)
        batch = (((batch.clamp(-1, 1) + 1) * 127.5).round() / 255).expand(-1, 3, -1, -1)
        feats.append(model(batch).to("cpu", torch.float64))
    if not feats:
        return torch.zeros(0, 2048, dtype=torch.float64)
    return torch.cat(feats)
