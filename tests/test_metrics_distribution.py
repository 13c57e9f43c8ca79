"""Distribution metrics on features: Fréchet distance, KID, precision/recall, density/coverage."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import diffusion_curriculum.metrics.distribution as dist
from diffusion_curriculum.metrics import (
    FeatureStats,
    density_coverage,
    feature_metrics,
    frechet_distance,
    kid,
    precision_recall,
)

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _random_cov(d, g, floor=0.5):
    """A well-conditioned random covariance (Wishart-like plus a floor)."""
    a = torch.randn(d, 2 * d, generator=g, dtype=F64)
    return a @ a.T / (2 * d) + floor * torch.eye(d, dtype=F64)


def _orthogonal(d, g):
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    return q * torch.sign(torch.diagonal(r))


def _pytorch_fid_formula(mu1, s1, mu2, s2):
    """pytorch-fid's calculate_frechet_distance (scipy sqrtm of S1 S2, real part), float64 numpy."""
    mu1, s1, mu2, s2 = (t.numpy() for t in (mu1, s1, mu2, s2))
    covmean = scipy.linalg.sqrtm(s1.dot(s2)).real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# ---------------------------------------------------------------- FeatureStats


def test_feature_stats_match_numpy_and_round_trip(tmp_path):
    x = torch.randn(500, 7, generator=_gen(0)) * 3 + 1
    s = FeatureStats.from_features(x)
    assert s.mean.dtype == s.cov.dtype == F64 and s.n == 500 and s.dim == 7
    np.testing.assert_allclose(s.mean.numpy(), x.double().numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.cov.numpy(), np.cov(x.double().numpy(), rowvar=False), rtol=1e-12)

    torch.save(s.to_dict(), tmp_path / "stats.pt")
    back = FeatureStats.from_dict(torch.load(tmp_path / "stats.pt"))
    np.savez(tmp_path / "stats.npz", **{k: np.asarray(v) for k, v in s.to_dict().items()})
    back_npz = FeatureStats.from_dict(dict(np.load(tmp_path / "stats.npz")))
    for b in (back, back_npz):
        assert b.n == 500 and torch.equal(b.mean, s.mean) and torch.equal(b.cov, s.cov)


def test_feature_stats_reject_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        FeatureStats.from_features(torch.randn(10))
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats.from_features(torch.randn(1, 4))
    with pytest.raises(ValueError, match="NaN"):
        FeatureStats.from_features(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]))
    with pytest.raises(ValueError, match=r"cov \(d, d\)"):
        FeatureStats(torch.zeros(3), torch.eye(4), 10)
    with pytest.raises(ValueError, match="n >= 2"):
        FeatureStats(torch.zeros(3), torch.eye(3), 1)
    with pytest.raises(ValueError, match="lacks"):
        FeatureStats.from_dict({"mean": torch.zeros(3), "n": 5})


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_distance_closed_form_diagonal_and_commuting():
    g = _gen(1)
    d = 16
    mu1, mu2 = torch.randn(d, generator=g, dtype=F64), torch.randn(d, generator=g, dtype=F64)
    v1, v2 = torch.rand(d, generator=g, dtype=F64) + 0.1, 3 * torch.rand(d, generator=g, dtype=F64) + 0.1
    exact = float((mu1 - mu2).pow(2).sum() + v1.sum() + v2.sum() - 2 * (v1 * v2).sqrt().sum())
    got = frechet_distance(FeatureStats(mu1, torch.diag(v1), 10), FeatureStats(mu2, torch.diag(v2), 10))
    assert got == pytest.approx(exact, rel=1e-12)
    # Commuting covariances share eigenvectors Q: tr sqrt(S1 S2) = sum sqrt(v1 v2) again.
    q = _orthogonal(d, g)
    s1, s2 = q @ torch.diag(v1) @ q.T, q @ torch.diag(v2) @ q.T
    got = frechet_distance(FeatureStats(mu1, s1, 10), FeatureStats(mu2, s2, 10))
    assert got == pytest.approx(exact, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_on_non_commuting_covariances():
    g = _gen(2)
    for d in (2, 8, 64):
        mu1, mu2 = torch.randn(d, generator=g, dtype=F64), 0.3 * torch.randn(d, generator=g, dtype=F64)
        s1, s2 = _random_cov(d, g), 2.0 * _random_cov(d, g)
        assert not torch.allclose(s1 @ s2, s2 @ s1)
        got = frechet_distance(FeatureStats(mu1, s1, 100), FeatureStats(mu2, s2, 100))
        assert got == pytest.approx(_pytorch_fid_formula(mu1, s1, mu2, s2), rel=1e-6)


def test_frechet_distance_of_features_zero_on_itself_and_symmetric():
    g = _gen(3)
    x = torch.randn(2000, 32, generator=g) @ torch.randn(32, 32, generator=g)
    y = torch.randn(1500, 32, generator=g) * 1.3 + 0.2
    sx, sy = FeatureStats.from_features(x), FeatureStats.from_features(y)
    assert frechet_distance(sx, sx) == pytest.approx(0.0, abs=1e-9 * float(torch.trace(sx.cov)))
    assert frechet_distance(sx, sy) == pytest.approx(frechet_distance(sy, sx), rel=1e-9)
    assert frechet_distance(sx, sy) == pytest.approx(_pytorch_fid_formula(sx.mean, sx.cov, sy.mean, sy.cov), rel=1e-6)


def test_frechet_distance_handles_singular_covariances():
    """Fewer samples than dimensions: rank-deficient covariances, still finite, >= 0 and ~0 on itself."""
    x = torch.randn(10, 40, generator=_gen(4))
    s = FeatureStats.from_features(x)
    assert frechet_distance(s, s) == pytest.approx(0.0, abs=1e-8)
    other = FeatureStats.from_features(torch.randn(12, 40, generator=_gen(5)))
    assert math.isfinite(frechet_distance(s, other)) and frechet_distance(s, other) > 0


def test_frechet_distance_rejects_mismatched_stats():
    a = FeatureStats(torch.zeros(3), torch.eye(3), 5)
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(a, FeatureStats(torch.zeros(4), torch.eye(4), 5))
    with pytest.raises(ValueError, match="FeatureStats"):
        frechet_distance(a, torch.zeros(3))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d=st.integers(1, 12), shift=st.floats(-50, 50))
def test_frechet_distance_invariant_to_common_rotation_and_translation(seed, d, shift):
    g = _gen(seed)
    x = torch.randn(200, d, generator=g, dtype=F64) * (1 + torch.rand(d, generator=g, dtype=F64))
    y = torch.randn(150, d, generator=g, dtype=F64) + torch.randn(d, generator=g, dtype=F64)
    q, b = _orthogonal(d, g), shift * torch.randn(d, generator=g, dtype=F64)
    before = frechet_distance(FeatureStats.from_features(x), FeatureStats.from_features(y))
    after = frechet_distance(FeatureStats.from_features(x @ q.T + b), FeatureStats.from_features(y @ q.T + b))
    assert after == pytest.approx(before, rel=1e-6, abs=1e-8)


# ---------------------------------------------------------------- KID


def _mmd2_direct(x, y):
    """torch-fidelity's unbiased MMD^2 with the cubic polynomial kernel, written out in numpy."""
    x, y = x.double().numpy(), y.double().numpy()
    d, m = x.shape[1], x.shape[0]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    return (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m**2


def test_kid_matches_direct_formula_on_one_full_subset():
    g = _gen(6)
    x, y = torch.randn(300, 10, generator=g), torch.randn(300, 10, generator=g) + 0.2
    mean, std = kid(x, y, subsets=1, subset_size=300, generator=_gen(0))  # the estimator ignores row order
    assert mean == pytest.approx(_mmd2_direct(x, y), rel=1e-10) and std == 0.0
    # Batching of subsets changes nothing: a batch of 7 subsets or one subset per batch.
    batched = kid(x, y, subsets=7, subset_size=100, generator=_gen(1))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dist, "_CHUNK_ELEMENTS", 100)
        one_by_one = kid(x, y, subsets=7, subset_size=100, generator=_gen(1))
    assert batched == pytest.approx(one_by_one, rel=1e-12)
    # subset_size is clipped to the smaller set
    mean, std = kid(x, y[:120], subsets=3, subset_size=1000, generator=_gen(0))
    assert math.isfinite(mean) and std > 0


def test_kid_near_zero_for_one_distribution_and_positive_for_shifted():
    g = _gen(7)
    x, y = torch.randn(1000, 16, generator=g), torch.randn(1000, 16, generator=g)
    mean, std = kid(x, y, subsets=10, subset_size=400, generator=_gen(1))
    assert abs(mean) < 3 * std or abs(mean) < 1e-3
    shifted_mean, shifted_std = kid(x, y + 0.5, subsets=10, subset_size=400, generator=_gen(1))
    assert shifted_mean > 0.05 and shifted_mean > 10 * shifted_std
    assert kid(x, y, subsets=5, subset_size=200, generator=_gen(3)) == kid(
        x, y, subsets=5, subset_size=200, generator=_gen(3)
    )


def test_kid_rejects_bad_input():
    x = torch.randn(50, 4)
    with pytest.raises(ValueError, match="dimensions differ"):
        kid(x, torch.randn(50, 5))
    with pytest.raises(ValueError, match="subsets"):
        kid(x, x, subsets=0)
    with pytest.raises(ValueError, match="2-D"):
        kid(x[None], x)


# ---------------------------------------------------------------- precision/recall, density/coverage


def _naive_neighbourhood(real, fake, k_pr, k_dc):
    """The papers' definitions with full cdist matrices (small inputs only)."""
    real, fake = real.double(), fake.double()
    rr, ff, rf = torch.cdist(real, real), torch.cdist(fake, fake), torch.cdist(real, fake)
    rr.fill_diagonal_(float("inf"))
    ff.fill_diagonal_(float("inf"))
    r_real, r_fake = rr.kthvalue(k_pr, 1).values, ff.kthvalue(k_pr, 1).values
    precision = (rf <= r_real[:, None]).any(0).double().mean()
    recall = (rf <= r_fake[None, :]).any(1).double().mean()
    r_dc = rr.kthvalue(k_dc, 1).values
    density = (rf < r_dc[:, None]).sum(0).double().mean() / k_dc
    coverage = (rf.min(1).values < r_dc).double().mean()
    return float(precision), float(recall), float(density), float(coverage)


@pytest.mark.parametrize("chunk", [dist._CHUNK_ELEMENTS, 997], ids=["one-chunk", "ragged-chunks"])
def test_neighbourhood_metrics_match_naive_definitions(monkeypatch, chunk):
    monkeypatch.setattr(dist, "_CHUNK_ELEMENTS", chunk)  # 997: many ragged row chunks
    g = _gen(8)
    real, fake = torch.randn(300, 5, generator=g), 1.2 * torch.randn(250, 5, generator=g) + 0.4
    p, r, d, c = _naive_neighbourhood(real, fake, 3, 5)
    assert precision_recall(real, fake, k=3) == pytest.approx((p, r), abs=1e-12)
    assert density_coverage(real, fake, k=5) == pytest.approx((d, c), abs=1e-12)
    if chunk > 10_000:  # feature_metrics' shared pass (its KID would run one subset per tiny chunk)
        out = feature_metrics(real, fake, k=3, k_density=5, generator=_gen(0))
        assert (out["precision"], out["recall"], out["density"], out["coverage"]) == pytest.approx(
            (p, r, d, c), abs=1e-12
        )


def test_neighbourhood_metrics_on_itself_disjoint_and_overlapping():
    g = _gen(9)
    x = torch.randn(1000, 8, generator=g)
    assert precision_recall(x, x) == (1.0, 1.0)
    # On itself each point lies in its own ball and in the balls of the k-1 points that have it as
    # one of their k-1 nearest neighbours: n + n (k - 1) memberships, density exactly 1.
    assert density_coverage(x, x) == pytest.approx((1.0, 1.0), abs=1e-12)
    far = torch.randn(800, 8, generator=g) + 100.0
    assert precision_recall(x, far) == (0.0, 0.0)
    assert density_coverage(x, far) == (0.0, 0.0)
    y = torch.randn(1000, 8, generator=g) + torch.tensor([2.0] + [0.0] * 7)
    p, r = precision_recall(x, y)
    d, c = density_coverage(x, y)
    assert 0.05 < p < 0.95 and 0.05 < r < 0.95 and 0.05 < c < 0.95 and 0.0 < d < 1.0
    same = torch.randn(1000, 8, generator=g)
    p, r = precision_recall(x, same)
    d, c = density_coverage(x, same)
    assert p > 0.6 and r > 0.6 and 0.8 < d < 1.2 and c > 0.9


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_real=st.integers(6, 60),
    n_fake=st.integers(6, 60),
    d=st.integers(1, 6),
    k=st.integers(1, 5),
    shift=st.floats(0, 5),
)
def test_neighbourhood_metrics_in_range(seed, n_real, n_fake, d, k, shift):
    g = _gen(seed)
    real, fake = torch.randn(n_real, d, generator=g), torch.randn(n_fake, d, generator=g) + shift
    p, r = precision_recall(real, fake, k=k)
    dens, cov = density_coverage(real, fake, k=k)
    assert 0.0 <= p <= 1.0 and 0.0 <= r <= 1.0 and 0.0 <= cov <= 1.0 and 0.0 <= dens <= n_real / k
    assert (p, r, dens, cov) == pytest.approx(_naive_neighbourhood(real, fake, k, k), abs=1e-12)


def test_neighbourhood_metrics_reject_bad_input():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="dimensions differ"):
        precision_recall(x, torch.randn(10, 4))
    with pytest.raises(ValueError, match="k=10 needs more than 10 points"):
        precision_recall(x, x, k=10)
    with pytest.raises(ValueError, match="positive integer"):
        density_coverage(x, x, k=0)
    with pytest.raises(ValueError, match="2-D"):
        density_coverage(x.flatten(), x)
    with pytest.raises(ValueError, match="infinite"):
        precision_recall(x, torch.full((10, 3), float("inf")))


# ---------------------------------------------------------------- feature_metrics


def test_feature_metrics_keys_and_consistency():
    g = _gen(10)
    real, fake = torch.randn(300, 12, generator=g), torch.randn(250, 12, generator=g) * 1.1 + 0.1
    out = feature_metrics(real, fake, generator=_gen(0))
    assert set(out) == {"fid", "kid", "kid_std", "precision", "recall", "density", "coverage"}
    assert all(isinstance(v, float) for v in out.values())
    assert out["fid"] == pytest.approx(
        frechet_distance(FeatureStats.from_features(real), FeatureStats.from_features(fake)), rel=1e-12
    )
    assert (out["kid"], out["kid_std"]) == kid(real, fake, generator=_gen(0))
    assert (out["precision"], out["recall"]) == precision_recall(real, fake, k=3)
    assert (out["density"], out["coverage"]) == density_coverage(real, fake, k=5)
    # Cached real statistics of a different (larger) reference set replace the real features' own for FID only.
    ref = FeatureStats.from_features(torch.randn(5000, 12, generator=g))
    cached = feature_metrics(real, fake, real_stats=ref, generator=_gen(0))
    assert cached["fid"] == pytest.approx(frechet_distance(ref, FeatureStats.from_features(fake)), rel=1e-12)
    assert cached["kid"] == out["kid"] and cached["precision"] == out["precision"]
    with pytest.raises(ValueError, match="real_stats has dimension"):
        feature_metrics(real, fake, real_stats=FeatureStats(torch.zeros(3), torch.eye(3), 5))
