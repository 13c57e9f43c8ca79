"""Data layer: built-in sets, the seeded split, user folders and arrays, the exact GMM, captions, text."""

import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_curriculum.data import (
    BUILTIN_DATASETS,
    CAPTION_TEMPLATES,
    HELDOUT_TEMPLATES,
    TOY2D_DATASETS,
    TRAIN_TEMPLATES,
    DataError,
    GaussianMixture,
    TextEncoder,
    caption_for,
    default_gmm,
    load_dataset,
    split_indices,
    unique_caption_table,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the encoder reads local files only; never reach the hub
F64 = torch.float64


# ---------------------------------------------------------------- built-in image sets and the split


def test_digits_shapes_ranges_labels():
    b = load_dataset("digits")
    assert (b.name, b.kind, b.shape) == ("digits", "image", (1, 8, 8))
    assert b.train.dtype == torch.float32 and b.train.shape[0] + b.heldout.shape[0] == 1797
    assert b.heldout.shape[0] == round(1797 * 0.1)
    assert b.train.min() == -1.0 and b.train.max() == 1.0
    assert b.train_labels.dtype == torch.int64 and b.train_labels.shape == (b.train.shape[0],)
    assert set(b.train_labels.tolist()) == set(range(10)) and b.n_classes == 10
    assert b.class_names[0] == "zero" and b.class_names[9] == "nine"
    assert b.train_captions is None and b.gmm is None and b.skipped == []


def test_mnist5k_shapes_ranges_labels():
    b = load_dataset("mnist5k", heldout_fraction=0.2)
    assert (b.kind, b.shape, b.train.shape[0], b.heldout.shape[0]) == ("image", (1, 28, 28), 4000, 1000)
    assert b.train.min() == -1.0 and b.train.max() == 1.0
    assert b.n_classes == 10 and set(b.heldout_labels.tolist()) == set(range(10))


def test_downsample_averages_blocks_and_keeps_the_split():
    full, small = load_dataset("mnist5k"), load_dataset("mnist5k", downsample=2)
    assert small.shape == (1, 14, 14) and small.train.shape[0] == full.train.shape[0]
    assert torch.equal(small.train_labels, full.train_labels)
    x = full.train[:3].double()  # brute force: the mean of each 2x2 block
    expected = torch.empty(3, 14, 14, dtype=torch.float64)
    for i in range(14):
        for j in range(14):
            expected[:, i, j] = x[:, 0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(dim=(1, 2))
    torch.testing.assert_close(small.train[:3, 0].double(), expected, atol=1e-6, rtol=0)
    assert small.train.min() >= -1.0 and small.train.max() <= 1.0
    with pytest.raises(DataError, match="downsample 3 must divide the image size, got 8x8"):
        load_dataset("digits", downsample=3)
    with pytest.raises(DataError, match="downsample applies to images"):
        load_dataset("gmm", downsample=2)


def test_split_is_seeded_disjoint_and_complete():
    train, held = split_indices(10, 0.3, seed=0)
    assert held.tolist() == [4, 1, 7] and train.tolist() == [
        5,
        3,
        9,
        0,
        8,
        6,
        2,
    ]  # pinned: same on any machine
    for n, frac in [(2, 0.1), (3, 0.9), (1797, 0.1)]:
        train, held = split_indices(n, frac, seed=3)
        assert sorted(train.tolist() + held.tolist()) == list(range(n))
        assert len(held) == min(max(round(n * frac), 1), n - 1) and len(train) >= 1
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_indices(10, 0.0, seed=0)
    a, b, c = load_dataset("digits", seed=1), load_dataset("digits", seed=1), load_dataset("digits", seed=2)
    assert torch.equal(a.train, b.train) and torch.equal(a.heldout_labels, b.heldout_labels)
    assert not torch.equal(a.heldout, c.heldout)
    from sklearn.datasets import load_digits

    raw = torch.from_numpy(load_digits().images).float()[:, None] / 8 - 1
    train_idx, held_idx = split_indices(1797, 0.1, seed=1)
    assert torch.equal(a.train, raw[train_idx]) and torch.equal(a.heldout, raw[held_idx])


def test_unknown_name_and_bad_arguments(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'nope': not a built-in \(digits, mnist5k, .*no such file"):
        load_dataset("nope")
    assert issubclass(DataError, ValueError)
    with pytest.raises(ValueError, match="on_bad_file"):
        load_dataset("digits", on_bad_file="ignore")
    with pytest.raises(ValueError, match="n_samples"):
        load_dataset("digits", n_samples=100)
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file"):
        load_dataset(str(tmp_path / "table.csv"))


# ---------------------------------------------------------------- generated 2-D sets and the GMM


@pytest.mark.parametrize("name", TOY2D_DATASETS)
def test_toy2d_variants(name):
    b = load_dataset(name, n_samples=20_000, seed=5)
    assert (b.kind, b.shape, b.train.dtype) == ("vector", (2,), torch.float32)
    x = torch.cat([b.train, b.heldout]).double()
    assert x.shape == (20_000, 2)
    assert x.mean(0).abs().max() < 0.05
    assert abs(x.var(0).mean() - 1.0) < 0.05  # the stated scaling: mean per-axis variance 1
    if name in ("toy2d", "8gaussians", "checkerboard"):
        assert (x.var(0) - 1.0).abs().max() < 0.05
    assert torch.equal(load_dataset(name, n_samples=500, seed=5).train, load_dataset(name, n_samples=500, seed=5).train)
    assert not torch.equal(load_dataset(name, n_samples=500, seed=6).train, load_dataset(name, n_samples=500).train)
    if name in ("toy2d", "8gaussians"):
        assert b.n_classes == 8 and b.train_labels.max() == 7
    else:
        assert b.train_labels is None and b.n_classes == 0
    with pytest.raises(ValueError, match="2-D"):
        load_dataset(name, dim=3)


def _gmm_1d():
    return GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.0], [1.5]]), torch.tensor([0.25, 0.5]))


def test_gmm_log_prob_matches_direct_formula_and_scipy():
    gmm = default_gmm(3)
    x = gmm.sample(50, torch.Generator().manual_seed(0)) * 1.5
    direct = []
    for p in x.tolist():
        dens = 0.0
        for w, mu, var in zip(gmm.weights.tolist(), gmm.means.tolist(), gmm.variances.tolist(), strict=True):
            dens += w * math.prod(
                math.exp(-((pi - mi) ** 2) / (2 * vi)) / math.sqrt(2 * math.pi * vi)
                for pi, mi, vi in zip(p, mu, var, strict=True)
            )
        direct.append(math.log(dens))
    lp = gmm.log_prob(x)
    assert lp.dtype == F64
    torch.testing.assert_close(lp, torch.tensor(direct, dtype=F64), rtol=1e-12, atol=1e-12)
    stats = pytest.importorskip("scipy.stats")
    ref = sum(
        w * stats.multivariate_normal(mean=mu, cov=np.diag(var)).pdf(x.numpy())
        for w, mu, var in zip(gmm.weights.numpy(), gmm.means.numpy(), gmm.variances.numpy(), strict=True)
    )
    torch.testing.assert_close(lp, torch.from_numpy(np.log(ref)), rtol=1e-10, atol=1e-10)


def test_gmm_score_matches_autograd():
    gmm = default_gmm(4)
    x = (gmm.sample(64, torch.Generator().manual_seed(1)) * 2.0).requires_grad_(True)
    (grad,) = torch.autograd.grad(gmm.log_prob(x).sum(), x)
    torch.testing.assert_close(gmm.score(x.detach()), grad, rtol=1e-10, atol=1e-10)
    noisy = gmm.noised(0.6, 0.8)
    x2 = x.detach().clone().requires_grad_(True)
    (grad2,) = torch.autograd.grad(noisy.log_prob(x2).sum(), x2)
    torch.testing.assert_close(gmm.noised_score(x.detach(), 0.6, 0.8), grad2, rtol=1e-10, atol=1e-10)


def test_gmm_noised_density_is_the_convolution():
    gmm, alpha, sigma = _gmm_1d(), 0.7, 0.5
    x0 = torch.linspace(-8, 8, 40_001, dtype=F64)
    p0 = gmm.log_prob(x0[:, None]).exp()
    assert abs(torch.trapezoid(p0, x0) - 1.0) < 1e-9
    for y in (-1.2, 0.0, 0.9, 2.5):
        kernel = torch.exp(-((y - alpha * x0) ** 2) / (2 * sigma**2)) / math.sqrt(2 * math.pi * sigma**2)
        brute = torch.trapezoid(p0 * kernel, x0)
        exact = gmm.noised(alpha, sigma).log_prob(torch.tensor([[y]], dtype=F64)).exp()
        torch.testing.assert_close(exact[0], brute, rtol=1e-8, atol=1e-12)


def test_gmm_optimal_eps_matches_monte_carlo_posterior():
    gmm = default_gmm(2)
    g = torch.Generator().manual_seed(2)
    x0 = gmm.sample(400_000, g)
    x_t = torch.tensor([[0.0, 0.0], [1.0, -0.5], [-1.5, 1.0]], dtype=F64)
    for alpha, sigma in [(0.9, 0.45), (0.5, 0.85)]:
        # E[eps | x_t] by self-normalised importance sampling over prior draws of x0.
        resid = (x_t[:, None, :] - alpha * x0[None]) / sigma  # (3, M, 2) = eps implied by each x0
        w = torch.softmax(-0.5 * (resid**2).sum(-1), dim=1)
        mc = (w[..., None] * resid).sum(1)
        torch.testing.assert_close(gmm.optimal_eps(x_t, alpha, sigma), mc, rtol=0, atol=0.01)
    alphas, sigmas = torch.tensor([0.9, 0.5, 0.2], dtype=F64), torch.tensor([0.45, 0.85, 0.98], dtype=F64)
    per_point = gmm.optimal_eps(x_t, alphas, sigmas)
    for i in range(3):
        one = gmm.optimal_eps(x_t[i : i + 1], float(alphas[i]), float(sigmas[i]))
        torch.testing.assert_close(per_point[i : i + 1], one)
    torch.testing.assert_close(gmm.optimal_eps(x_t, 0.0, 0.5), x_t / 0.5)  # pure noise: eps = x_t / sigma


def test_gmm_dataset_bundle():
    b = load_dataset("gmm", dim=5, n_samples=4000, seed=3)
    assert (b.kind, b.shape) == ("vector", (5,)) and isinstance(b.gmm, GaussianMixture)
    assert b.gmm.dim == 5 and b.n_classes == b.gmm.n_components
    torch.testing.assert_close(b.gmm.mean, torch.zeros(5, dtype=F64))
    assert abs(b.gmm.variance.mean() - 1.0) < 1e-12
    x = torch.cat([b.train, b.heldout]).double()
    assert x.mean(0).abs().max() < 0.1
    k = torch.cat([b.train_labels, b.heldout_labels])
    assert (torch.bincount(k, minlength=b.gmm.n_components) / 4000 - b.gmm.weights).abs().max() < 0.03
    # Samples sit where their component's responsibility is high.
    assert (b.gmm.responsibilities(b.train.double()).argmax(1) == b.train_labels).float().mean() > 0.8
    assert load_dataset("gmm").shape == (2,)


# ---------------------------------------------------------------- image folders


def _save(path, array, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)


def _class_folder(root):
    """cat: two grayscale images; dog: one RGBA (one pixel transparent) and one RGB; plus clutter."""
    _save(root / "cat" / "a.png", np.full((6, 6), 0), "L")
    _save(root / "cat" / "b.png", np.full((6, 6), 255), "L")
    rgba = np.zeros((6, 6, 4))
    rgba[..., 0], rgba[..., 3] = 255, 255
    rgba[0, 0, 3] = 0  # transparent: composited onto white
    _save(root / "dog" / "c.png", rgba, "RGBA")
    _save(root / "dog" / "d.jpg", np.full((6, 6, 3), 128), "RGB")
    (root / "notes.txt").write_text("not an image")
    (root / "dog" / "readme.md").write_text("ignored")


def test_image_folder_with_classes_and_mixed_modes(tmp_path):
    _class_folder(tmp_path)
    b = load_dataset(str(tmp_path), heldout_fraction=0.25)
    assert (b.kind, b.shape, b.class_names, b.n_classes) == ("image", (3, 6, 6), ["cat", "dog"], 2)
    assert b.name == tmp_path.name and b.train.shape[0] == 3 and b.heldout.shape[0] == 1
    x = torch.cat([b.train, b.heldout])
    y = torch.cat([b.train_labels, b.heldout_labels])
    assert sorted(y.tolist()) == [0, 0, 1, 1]
    assert x.min() >= -1 and x.max() <= 1
    red = [img for img in x if img[0, 1, 1] == 1.0 and img[1, 1, 1] == -1.0]
    assert len(red) == 1 and torch.equal(red[0][:, 0, 0], torch.ones(3))  # transparent pixel became white
    gray = [img for img in x if img[0].eq(img[1]).all() and img[1].eq(img[2]).all()]
    assert len(gray) == 3  # the two L images repeated to RGB, and the mid-gray RGB jpeg


def test_grayscale_folder_stays_one_channel_and_unlabelled(tmp_path):
    for i in range(5):
        _save(tmp_path / f"{i}.png", np.full((4, 3), i * 50), "L")
    b = load_dataset(str(tmp_path))
    assert b.shape == (1, 4, 3) and b.train_labels is None and b.n_classes == 0 and b.class_names is None
    values = sorted(torch.cat([b.train, b.heldout])[:, 0, 0, 0].tolist())
    assert values == pytest.approx([v / 127.5 - 1 for v in (0, 50, 100, 150, 200)])


def test_bad_files_error_names_them_and_skip_counts_them(tmp_path):
    _class_folder(tmp_path)
    (tmp_path / "dog" / "empty.png").write_bytes(b"")
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and message.startswith("2 unreadable image file(s)")
    assert "cat/broken.png" in message and "dog/empty.png (zero bytes)" in message and "skip" in message
    b = load_dataset(str(tmp_path), on_bad_file="skip")
    assert sorted(b.skipped) == ["cat/broken.png", "dog/empty.png"]
    assert b.train.shape[0] + b.heldout.shape[0] == 4 and b.n_classes == 2


def test_mismatched_sizes_error_names_the_file(tmp_path):
    for i in range(3):
        _save(tmp_path / f"ok{i}.png", np.zeros((8, 8)), "L")
    _save(tmp_path / "odd.png", np.zeros((5, 7)), "L")
    with pytest.raises(DataError, match=r"odd\.png is 7x5 \(WxH\) but 3 of 4 are 8x8"):
        load_dataset(str(tmp_path))


def test_captions_jsonl(tmp_path):
    for i in range(4):
        _save(tmp_path / "c" / f"{i}.png", np.full((3, 3), i * 60), "L")
    _save(tmp_path / "d" / "x.png", np.full((3, 3), 255), "L")
    lines = [{"file": f"c/{i}.png", "caption": f"level {i * 60}"} for i in range(4)]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    with pytest.raises(DataError, match=r"no caption for 1 of 5 images: d/x\.png"):
        load_dataset(str(tmp_path), captions=True)
    assert load_dataset(str(tmp_path)).train_captions is None  # not requested: not read
    lines.append({"file": "d/x.png", "caption": "level 255"})
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    b = load_dataset(str(tmp_path), captions=True, heldout_fraction=0.4)
    for images, caps in ((b.train, b.train_captions), (b.heldout, b.heldout_captions)):
        assert len(caps) == images.shape[0]
        for img, cap in zip(images, caps, strict=True):
            assert round((float(img[0, 0, 0]) + 1) * 127.5) == int(cap.split()[1])
    (tmp_path / "captions.jsonl").unlink()
    with pytest.raises(DataError, match=r"no captions\.jsonl"):
        load_dataset(str(tmp_path), captions=True)


# ---------------------------------------------------------------- arrays


def test_npz_and_npy_good(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, size=(10, 5, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "imgs.npz", images=nhwc, labels=np.arange(10) % 3)
    b = load_dataset(str(tmp_path / "imgs.npz"), heldout_fraction=0.2)
    assert (b.name, b.kind, b.shape, b.n_classes) == ("imgs", "image", (3, 5, 4), 3)
    expected = torch.from_numpy(nhwc).permute(0, 3, 1, 2).float() / 127.5 - 1
    train_idx, held_idx = split_indices(10, 0.2, seed=0)
    torch.testing.assert_close(b.train, expected[train_idx])
    assert b.heldout_labels.tolist() == (held_idx % 3).tolist()
    np.savez(tmp_path / "nchw.npz", x=nhwc.transpose(0, 3, 1, 2))
    torch.testing.assert_close(load_dataset(str(tmp_path / "nchw.npz"), heldout_fraction=0.2).train, b.train)
    np.save(tmp_path / "gray.npy", nhwc[..., 0])
    assert load_dataset(str(tmp_path / "gray.npy")).shape == (1, 5, 4)
    vectors = rng.normal(size=(20, 7)) * 5
    np.save(tmp_path / "vec.npy", vectors)
    v = load_dataset(str(tmp_path / "vec.npy"))
    assert (v.kind, v.shape, v.train_labels) == ("vector", (7,), None)
    torch.testing.assert_close(torch.cat([v.train, v.heldout]).sort(0)[0], torch.from_numpy(vectors).float().sort(0)[0])
    np.savez(tmp_path / "fimg.npz", arr_0=rng.uniform(-1, 1, size=(4, 1, 3, 3)).astype(np.float32))
    assert load_dataset(str(tmp_path / "fimg.npz")).shape == (1, 3, 3)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((10,), np.uint8), "expected uint8 images"),  # wrong shape
        (np.zeros((10, 5, 5, 4), np.uint8), "channel count"),  # 4 channels
        (np.zeros((10, 64), np.uint8), "expected uint8 images"),  # flattened uint8
        (np.zeros((10, 5, 5), np.int64), "dtype int64"),  # wrong dtype
        (np.full((10, 5, 5), 255.0, np.float32), r"range over \[255, 255\], expected \[-1, 1\]"),
    ],
)
def test_npz_bad_shape_or_dtype(tmp_path, array, match):
    np.savez(tmp_path / "bad.npz", images=array)
    with pytest.raises(DataError, match=match) as err:
        load_dataset(str(tmp_path / "bad.npz"))
    assert "\n" not in str(err.value)


def test_npz_bad_keys_labels_and_corrupt_file(tmp_path):
    np.savez(tmp_path / "nokey.npz", pixels=np.zeros((4, 3, 3), np.uint8))
    with pytest.raises(DataError, match=r"images, x or arr_0; found \['pixels'\]"):
        load_dataset(str(tmp_path / "nokey.npz"))
    np.savez(tmp_path / "labels.npz", x=np.zeros((4, 3, 3), np.uint8), y=np.arange(3))
    with pytest.raises(DataError, match="expected 4 non-negative integer labels"):
        load_dataset(str(tmp_path / "labels.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(str(tmp_path / "junk.npz"))


# ---------------------------------------------------------------- captions for the built-ins


def test_builtin_captions_hold_out_templates():
    assert len(CAPTION_TEMPLATES) >= 6 and set(TRAIN_TEMPLATES).isdisjoint(HELDOUT_TEMPLATES)
    assert set(TRAIN_TEMPLATES) | set(HELDOUT_TEMPLATES) == set(CAPTION_TEMPLATES)
    assert caption_for(7, "a handwritten {word}") == "a handwritten seven"
    assert caption_for(3, "the digit {digit} written in pen") == "the digit 3 written in pen"
    b = load_dataset("digits", captions=True, seed=4)
    assert len(b.train_captions) == b.train.shape[0] and len(b.heldout_captions) == b.heldout.shape[0]
    for labels, caps, templates in (
        (b.train_labels, b.train_captions, TRAIN_TEMPLATES),
        (b.heldout_labels, b.heldout_captions, HELDOUT_TEMPLATES),
    ):
        for y, cap in zip(labels.tolist(), caps, strict=True):
            assert cap in {caption_for(y, t) for t in templates}
    assert len({c for c in b.train_captions if "seven" in c or "7" in c}) == len(TRAIN_TEMPLATES)
    assert set(b.train_captions).isdisjoint(b.heldout_captions)
    assert load_dataset("digits", captions=True, seed=4).train_captions == b.train_captions
    with pytest.raises(DataError, match="captions requested"):
        load_dataset("moons", captions=True)


def test_builtin_list_is_complete():
    assert set(BUILTIN_DATASETS) == {"digits", "mnist5k", "gmm", *TOY2D_DATASETS}
    assert set(TOY2D_DATASETS) == {"toy2d", "swiss_roll", "8gaussians", "checkerboard", "moons"}


# ---------------------------------------------------------------- text encoder


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder()


def test_text_encoder_shapes_and_determinism(encoder):
    assert encoder.hidden_size == 384
    caps = ["a handwritten seven", "a handwritten seven", "the digit 3 written in pen"]
    hidden, mask = encoder.encode(caps)
    assert hidden.dtype == torch.float32 and mask.dtype == torch.bool
    assert hidden.shape == (3, mask.shape[1], 384) and mask.shape[1] == int(mask.sum(1).max())
    assert torch.equal(hidden[0], hidden[1]) and torch.equal(mask[0], mask[1])
    assert (hidden[0] - hidden[2]).abs().max() > 0.1
    assert hidden[~mask].abs().max() == 0  # padding is zero
    long = encoder.encode(["word " * 100])[1]
    assert long.shape[1] == encoder.max_length
    assert encoder.encode([])[0].shape == (0, 0, 384)


def test_unique_caption_table():
    unique, index = unique_caption_table(["b", "a", "b", "c"])
    assert unique == ["a", "b", "c"] and index.tolist() == [1, 0, 1, 2] and index.dtype == torch.int64


def test_encode_cached_writes_then_reads_the_cache(encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(encoder, "cache_dir", tmp_path / "cache")
    caps = ["a handwritten two", "an image of a one", "a handwritten two"]
    hidden, mask = encoder.encode_cached(caps)
    files = list((tmp_path / "cache").glob("captions-*.pt"))
    assert len(files) == 1
    ref_hidden, ref_mask = encoder.encode(caps)
    torch.testing.assert_close(hidden, ref_hidden, rtol=0, atol=1e-5)
    assert torch.equal(mask, ref_mask)

    def fail(_captions):
        raise AssertionError("encoded again instead of reading the cache")

    monkeypatch.setattr(encoder, "encode", fail)
    again_hidden, again_mask = encoder.encode_cached(list(reversed(caps)))
    assert torch.equal(again_hidden, hidden.flip(0)) and torch.equal(again_mask, mask.flip(0))


def test_text_encoder_missing_model_dir(tmp_path):
    with pytest.raises(ValueError, match="cannot load text encoder"):
        TextEncoder(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="cannot load text encoder") as err:
        TextEncoder(tmp_path)
    assert "\n" not in str(err.value)
