"""The shipped model and how denoise_image picks one for a noise level."""

import numpy as np
import pytest

from sklearn_ergo import denoise_image
from sklearn_ergo._pretrained import PRETRAINED_LEVELS, pretrained_denoiser


@pytest.fixture(scope="module")
def noisy():
    rng = np.random.default_rng(0)
    clean = np.kron(rng.uniform(0.2, 0.8, size=(5, 5)), np.ones((8, 8)))
    return np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("level", PRETRAINED_LEVELS)
def test_shipped_models(level, fast):
    den = pretrained_denoiser(level, fast=fast)
    assert den.noise_std_ == pytest.approx(level / 255)
    # The Train400 models: per-stage filters, stages of the shifted log
    # penalty; three of 20 iterations whose later stages' data terms are
    # blended, or (fast) two of 12.
    S = 2 if fast else 3
    penalty = "shifted_log" if fast else "blended_log"
    assert den.penalty == penalty and den.per_stage and den.n_stages == S
    assert den.components_.shape == (S, 48, 49) and den.eps_.shape == (S, 48)
    assert den.shape_.shape == (S, 48, 8) and den.gain_.shape == (S, 48, 9)
    if not fast:
        assert den.blend_.shape == (S,)
    assert den.n_layers == (12 if fast else 20)


def test_fast_model(noisy):
    """``fast=True`` runs the fast model, whose output is close to the other's."""
    out = denoise_image(noisy, 25 / 255, fast=True)
    ref = pretrained_denoiser(25, fast=True).denoise(noisy, sigma=25 / 255)
    np.testing.assert_array_equal(out, ref)
    slow = denoise_image(noisy, 25 / 255)
    assert not np.array_equal(out, slow)
    # Both remove most of the noise and differ by a fraction of what remains.
    noise = np.mean((noisy - slow) ** 2)
    assert np.mean((out - slow) ** 2) < noise / 10


@pytest.mark.parametrize("sigma", [5, 15, 25, 35, 80])
def test_one_model_serves_every_level(noisy, sigma):
    out = denoise_image(noisy, sigma / 255)
    ref = pretrained_denoiser(25).denoise(noisy, sigma=sigma / 255)
    np.testing.assert_array_equal(out, ref)


def test_unknown_level():
    with pytest.raises(ValueError, match="level must be one of"):
        pretrained_denoiser(15)
