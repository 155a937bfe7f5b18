"""Blind mode: the noise-level estimate and denoise_image(sigma=None)."""

import numpy as np
import pytest

from sklearn_ergo import denoise_image, estimate_sigma
from sklearn_ergo._noise import daubechies_highpass


def blocks(seed, n=6, size=16):
    rng = np.random.default_rng(seed)
    return np.kron(rng.uniform(0.2, 0.8, size=(n, n)), np.ones((size, size)))


def textured(seed, shape=(96, 96)):
    """Piecewise constant blocks plus a smooth oscillation and edges."""
    clean = blocks(seed, n=8)[: shape[0], : shape[1]]
    i, j = np.mgrid[: shape[0], : shape[1]]
    return clean + 0.1 * np.sin(i / 3.0) * np.cos(j / 5.0)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_daubechies_filters(n):
    g = daubechies_highpass(n)
    assert len(g) == 2 * n
    # Orthonormal wavelet: unit norm, orthogonal to its even shifts, and n
    # vanishing moments (kills polynomials of degree < n).
    np.testing.assert_allclose(g @ g, 1.0, rtol=1e-12)
    for shift in range(2, 2 * n, 2):
        assert abs(g[shift:] @ g[:-shift]) < 1e-12
    k = np.arange(2 * n)
    for degree in range(n):
        assert abs(g @ k**degree) < 1e-8 * max(1, (2 * n) ** degree)
    pywt = pytest.importorskip("pywt")
    np.testing.assert_allclose(g, pywt.Wavelet(f"db{n}").dec_hi, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.02, 0.1, 0.2])
def test_estimate_on_pure_noise_and_on_an_image(sigma):
    rng = np.random.default_rng(0)
    noise = sigma * rng.standard_normal((128, 128))
    # About 1000 coefficients: the median's relative deviation is ~4 %.
    assert estimate_sigma(noise) == pytest.approx(sigma, rel=0.1)
    assert estimate_sigma(textured(1, (128, 128)) + noise) == pytest.approx(
        sigma, rel=0.1
    )


def test_estimate_is_in_the_image_units_and_ignores_offsets():
    rng = np.random.default_rng(1)
    noisy = textured(2) + 0.05 * rng.standard_normal((96, 96))
    base = estimate_sigma(noisy)
    assert estimate_sigma(1000 * noisy + 5e4) == pytest.approx(1000 * base)
    assert estimate_sigma(noisy.astype(np.float32)) == pytest.approx(base, rel=1e-5)


def test_estimate_of_colour_images_and_stacks():
    rng = np.random.default_rng(2)
    rgb = np.stack([textured(s) for s in (3, 4, 5)], axis=-1)
    noisy = rgb + 0.1 * rng.standard_normal(rgb.shape)
    per_channel = [estimate_sigma(noisy[:, :, c]) for c in range(3)]
    assert estimate_sigma(noisy, channel_axis=-1) == pytest.approx(np.mean(per_channel))
    assert estimate_sigma(np.moveaxis(noisy, -1, 0), channel_axis=0) == pytest.approx(
        np.mean(per_channel)
    )
    # An alpha channel (here: constant) is ignored.
    rgba = np.concatenate([noisy, np.ones(rgb.shape[:2] + (1,))], axis=-1)
    assert estimate_sigma(rgba, channel_axis=-1) == pytest.approx(np.mean(per_channel))
    stack = estimate_sigma(np.moveaxis(noisy, -1, 0))
    assert stack.shape == (3,)
    np.testing.assert_allclose(stack, per_channel)


def test_saturated_pixels_are_left_out():
    # Clipping at 0 removes the noise of dark flat areas: without leaving
    # them out they would look like the quietest neighbourhoods.
    rng = np.random.default_rng(3)
    clean = textured(6, (128, 128))
    clean[:, :64] = 0.0
    noisy = np.clip(clean + 0.05 * rng.standard_normal(clean.shape), 0, None)
    assert estimate_sigma(noisy) == pytest.approx(0.05, rel=0.1)


def test_estimate_errors():
    with pytest.raises(ValueError, match="too small"):
        estimate_sigma(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="NaN"):
        estimate_sigma(np.full((32, 32), np.nan))


def test_blind_denoising_matches_known_sigma():
    rng = np.random.default_rng(4)
    clean = textured(7)
    noisy = clean + 25 / 255 * rng.standard_normal(clean.shape)
    known = denoise_image(noisy, 25 / 255)
    blind = denoise_image(noisy)
    sigma = estimate_sigma(noisy)
    np.testing.assert_array_equal(blind, denoise_image(noisy, sigma))

    def mse(x):
        return np.mean((x - clean) ** 2)

    assert mse(blind) < mse(noisy) / 4
    assert mse(blind) == pytest.approx(mse(known), rel=0.05)


def test_blind_mode_returns_a_noise_free_image_unchanged():
    flat = np.full((48, 48), 7, dtype=np.uint16)
    out = denoise_image(flat)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, flat)


def test_blind_stack_estimates_each_image():
    rng = np.random.default_rng(5)
    clean = np.stack([blocks(8, 4), blocks(9, 4)])
    sigmas = np.array([10, 40]) / 255
    noisy = clean + sigmas[:, None, None] * rng.standard_normal(clean.shape)
    out = denoise_image(noisy)
    assert out.shape == noisy.shape
    for k in range(2):
        np.testing.assert_array_equal(out[k], denoise_image(noisy[k]))
