"""The weighting contract: every entry of ``weighting.WEIGHTINGS``, for every target in ``TARGETS``.

Weightings hold no training state, so the round trip here is the one a run config makes: a
weighting is rebuilt by ``make_weighting(name, **params)`` from the fields of an existing one.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from diffusion_curriculum.errors import UserError
from diffusion_curriculum.weighting import TARGETS, WEIGHTINGS, Weighting, make_weighting

from .tables import WEIGHTING_BAD, WEIGHTING_EXAMPLES, bad_cases, cases, example, require

F64 = torch.float64
# the ends of every schedule: zero terminal SNR, tiny, moderate, huge, a clean t = 0
SNR_ENDS = torch.tensor([0.0, 1e-300, 1e-30, 1e-12, 1e-3, 1.0, 1e3, 1e12, 1e30, 1e300, float("inf")], dtype=F64)
SNR_GRID = torch.logspace(-6, 6, 49, dtype=F64)
SIGMA_DATA = [0.5, 1.0]


def _build(name, kwargs) -> Weighting:
    require(WEIGHTINGS, name, "WEIGHTINGS", "weighting.WEIGHTINGS")
    kwargs = example(WEIGHTING_EXAMPLES, name, kwargs, "WEIGHTING_EXAMPLES", "weighting.WEIGHTINGS")
    w = make_weighting(name, **kwargs)
    assert isinstance(w, WEIGHTINGS[name]) and isinstance(w, Weighting)
    return w


def test_every_registered_weighting_has_example_and_bad_arguments():
    assert set(WEIGHTING_EXAMPLES) == set(WEIGHTINGS), "tables.WEIGHTING_EXAMPLES needs one row per WEIGHTINGS name"
    assert set(WEIGHTING_BAD) == set(WEIGHTINGS), "tables.WEIGHTING_BAD needs one row per WEIGHTINGS name"


@pytest.mark.parametrize(("name", "kwargs"), cases(WEIGHTINGS, WEIGHTING_EXAMPLES))
def test_rebuilt_from_its_parameters_gives_the_same_weights(name, kwargs):
    w = _build(name, kwargs)
    assert dataclasses.is_dataclass(w), "a weighting's parameters must be dataclass fields (the config rebuilds it)"
    params = dataclasses.asdict(w)
    again = make_weighting(name, **params)
    assert again == w and repr(again) == repr(w)
    clone = copy.deepcopy(w)
    for target in TARGETS:
        ref = w(SNR_GRID, target, dtype=F64)
        assert torch.equal(again(SNR_GRID, target, dtype=F64), ref)
        assert torch.equal(clone(SNR_GRID, target, dtype=F64), ref)


@pytest.mark.parametrize(("name", "kwargs"), cases(WEIGHTINGS, WEIGHTING_EXAMPLES))
@pytest.mark.parametrize("target", TARGETS)
def test_deterministic_and_elementwise(name, kwargs, target):
    a, b = _build(name, kwargs), _build(name, kwargs)
    for sd in SIGMA_DATA:
        wa = a(SNR_GRID, target, sigma_data=sd, dtype=F64)
        assert wa.shape == SNR_GRID.shape and wa.dtype == F64
        assert torch.equal(wa, b(SNR_GRID, target, sigma_data=sd, dtype=F64))
        # one sample's weight does not depend on the rest of the batch
        singles = torch.cat([a(SNR_GRID[i : i + 1], target, sigma_data=sd, dtype=F64) for i in range(0, 49, 8)])
        assert torch.equal(singles, wa[0:49:8])
        # batch shapes are kept
        assert a(SNR_GRID.reshape(7, 7), target, sigma_data=sd).shape == (7, 7)


@pytest.mark.parametrize(("name", "kwargs"), cases(WEIGHTINGS, WEIGHTING_EXAMPLES))
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_non_negative_weights_at_the_ends_of_the_snr_range(name, kwargs, target, dtype):
    w = _build(name, kwargs)
    for sd in SIGMA_DATA:
        for snr in (SNR_ENDS, SNR_ENDS.to(torch.float32)):
            out = w(snr, target, sigma_data=sd, dtype=dtype)
            assert out.dtype == dtype and out.shape == snr.shape
            assert torch.isfinite(out).all(), f"{name} on {target}: {out.tolist()} at snr {snr.tolist()}"
            assert (out >= 0).all()


@pytest.mark.parametrize(("name", "kwargs", "arg"), bad_cases(WEIGHTINGS, WEIGHTING_BAD))
def test_bad_constructor_arguments_raise_user_error_naming_the_argument(name, kwargs, arg):
    cls = require(WEIGHTINGS, name, "WEIGHTINGS", "weighting.WEIGHTINGS")
    if kwargs is None:
        require(WEIGHTING_BAD, name, "WEIGHTING_BAD", "weighting.WEIGHTINGS")
    for build in (lambda: cls(**kwargs), lambda: make_weighting(name, **kwargs)):
        with pytest.raises(UserError) as info:
            build()
        assert arg in str(info.value), f"{name}({kwargs}) raised {info.value!r}, which does not name {arg!r}"


@pytest.mark.parametrize(("name", "kwargs"), cases(WEIGHTINGS, WEIGHTING_EXAMPLES))
def test_bad_call_arguments_raise_user_error_naming_the_argument(name, kwargs):
    w = _build(name, kwargs)
    snr = torch.tensor([0.5, 2.0], dtype=F64)
    bad = [
        ({"snr": snr, "target": "epsilon"}, "target"),
        ({"snr": torch.tensor([1.0, -1.0]), "target": "eps"}, "snr"),
        ({"snr": torch.tensor([1.0, float("nan")]), "target": "eps"}, "snr"),
        ({"snr": snr, "target": "eps", "sigma_data": 0.0}, "sigma_data"),
        ({"snr": snr, "target": "edm", "sigma_data": -0.5}, "sigma_data"),
        ({"snr": snr, "target": "edm", "sigma_data": float("nan")}, "sigma_data"),
    ]
    for call, arg in bad:
        with pytest.raises(UserError) as info:
            w(**call)
        assert arg in str(info.value), f"{name} call {call} raised {info.value!r}, which does not name {arg!r}"
    with pytest.raises(UserError) as info:
        make_weighting(name, not_a_parameter=1.0)
    assert "not_a_parameter" in str(info.value)
