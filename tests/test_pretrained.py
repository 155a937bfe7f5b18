"""The shipped operators and how denoise_image picks one for a noise level."""

import numpy as np
import pytest

from sklearn_ergo import denoise_image
from sklearn_ergo._pretrained import PRETRAINED_LEVELS, pretrained_denoiser


@pytest.fixture(scope="module")
def noisy():
    rng = np.random.default_rng(0)
    clean = np.kron(rng.uniform(0.2, 0.8, size=(5, 5)), np.ones((8, 8)))
    return np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)


@pytest.mark.parametrize("level", PRETRAINED_LEVELS)
def test_shipped_models(level):
    den = pretrained_denoiser(level)
    assert den.noise_std_ == pytest.approx(level / 255)
    assert den.components_.shape == (16, 25)
    assert den.penalty in ("l1", "log")
    if den.penalty == "log":
        assert den.eps_.shape == (16,) and den.n_stages == 2


@pytest.mark.parametrize(
    "sigma, expected",
    [
        (15, 15),  # a shipped level: its own model
        (50, 50),
        (12, 15),  # between levels: the next one up
        (20, 25),
        (80, 50),  # above the largest level: the largest
    ],
)
def test_level_choice(noisy, sigma, expected):
    out = denoise_image(noisy, sigma / 255)
    ref = pretrained_denoiser(expected).denoise(noisy, sigma=sigma / 255)
    np.testing.assert_array_equal(out, ref)


def test_log_model_below_wins_over_l1_model_above(noisy):
    # Measured by benchmarks/bench_sigma.py: between 25 (log penalty) and 50
    # (l1) the model of 25 is better, so it is used.
    assert pretrained_denoiser(25).penalty == "log"
    assert pretrained_denoiser(50).penalty == "l1"
    out = denoise_image(noisy, 35 / 255)
    ref = pretrained_denoiser(25).denoise(noisy, sigma=35 / 255)
    np.testing.assert_array_equal(out, ref)
