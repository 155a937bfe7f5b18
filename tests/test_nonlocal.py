"""Tests of the non-local blend: the means, the fit, the denoiser, the files."""

import copy

import numpy as np
import pytest

from sklearn_ergo import ImageDenoiser, denoise_image, load_denoiser, save_denoiser
from sklearn_ergo._model_io import NONLOCAL_FORMAT
from sklearn_ergo._nonlocal import fit_nonlocal_blend, nonlocal_means
from sklearn_ergo._pretrained import PRETRAINED_LEVELS, pretrained_denoiser

SIGMA = 0.1


def naive_means(pilot, noisy, h, search, patch):
    """Every pair's weight from its two patches, image padded symmetrically."""
    r, m = patch // 2, search + patch // 2
    u, x = (np.pad(a, m, mode="symmetric") for a in (pilot, noisy))
    y, v, w = (np.zeros(pilot.shape) for _ in range(3))
    for i, j in np.ndindex(pilot.shape):
        a, b = i + m, j + m
        P = u[a - r : a + r + 1, b - r : b + r + 1]
        for di in range(-search, search + 1):
            for dj in range(-search, search + 1):
                Q = u[a + di - r : a + di + r + 1, b + dj - r : b + dj + r + 1]
                wt = np.exp(-np.mean((P - Q) ** 2) / h**2)
                y[i, j] += wt * x[a + di, b + dj]
                v[i, j] += wt * u[a + di, b + dj]
                w[i, j] += wt
    return y / w, v / w, w


def stripes(seed, shape=(48, 40)):
    """A periodic texture with noise-free copies of every patch."""
    rng = np.random.default_rng(seed)
    period = rng.uniform(0.2, 0.8, size=6)
    return np.tile(period, (shape[0], shape[1] // 6 + 1))[:, : shape[1]]


@pytest.mark.parametrize(
    "patch, search, shape",
    # The last two: one-pixel patches, and offsets reaching past the image
    # (the flat offsets' row wrap must stay in the discarded margin).
    [(3, 2, (13, 17)), (5, 3, (13, 17)), (1, 3, (13, 17)), (3, 10, (7, 9))],
)
def test_nonlocal_means_match_the_naive_sum(patch, search, shape):
    rng = np.random.default_rng(0)
    pilot = rng.uniform(size=shape)
    noisy = pilot + SIGMA * rng.standard_normal(pilot.shape)
    got = nonlocal_means(pilot, noisy, 0.3, search=search, patch=patch)
    want = naive_means(pilot, noisy, 0.3, search, patch)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)


def test_nonlocal_means_bands_change_nothing():
    rng = np.random.default_rng(1)
    pilot = rng.uniform(size=(40, 23))
    noisy = pilot + SIGMA * rng.standard_normal(pilot.shape)
    one = nonlocal_means(pilot, noisy, 0.2, search=4, patch=3, n_threads=1)
    three = nonlocal_means(pilot, noisy, 0.2, search=4, patch=3, n_threads=3)
    for a, b in zip(one, three, strict=True):
        np.testing.assert_array_equal(a, b)


def test_nonlocal_means_even_patch_raises():
    with pytest.raises(ValueError, match="odd"):
        nonlocal_means(np.zeros((8, 8)), np.zeros((8, 8)), 0.1, patch=4)


def test_fit_recovers_the_means_as_target():
    """With the means of the noisy image as the clean target, a = 1, b = 0."""
    rng = np.random.default_rng(2)
    clean = [stripes(k) for k in range(3)]
    noisy = [c + SIGMA * rng.standard_normal(c.shape) for c in clean]
    pilots = [c + 0.3 * (x - c) for c, x in zip(clean, noisy, strict=True)]
    targets = [
        nonlocal_means(u, x, 0.5 * SIGMA, search=4)[0]
        for u, x in zip(pilots, noisy, strict=True)
    ]
    blend = fit_nonlocal_blend(
        pilots, noisy, targets, SIGMA, search=4, n_weight_bins=3, n_energy_bins=2
    )
    assert blend.coef.shape == (3, 2, 2)
    np.testing.assert_allclose(blend.coef[..., 0], 1, atol=1e-4)
    np.testing.assert_allclose(blend.coef[..., 1], 0, atol=1e-4)
    out = blend.apply(pilots[0], noisy[0], SIGMA)
    np.testing.assert_allclose(out, targets[0], atol=1e-5)


def test_fit_needs_images():
    with pytest.raises(ValueError, match="at least one image"):
        fit_nonlocal_blend([], [], [], SIGMA)


@pytest.fixture(scope="module")
def blended():
    return ImageDenoiser(
        n_layers=6,
        crop_size=24,
        n_crops=4,
        max_iter=2,
        noise_std=SIGMA,
        nonlocal_blend=True,
        random_state=0,
    ).fit([stripes(0), stripes(1)])


def test_denoiser_fits_and_applies_the_blend(blended):
    assert blended.nonlocal_.coef.shape == (16, 8, 2)
    rng = np.random.default_rng(3)
    clean = stripes(2)
    noisy = clean + SIGMA * rng.standard_normal(clean.shape)
    with_blend = blended.denoise(noisy)
    without = blended.set_params(nonlocal_blend=False).denoise(noisy)
    blended.set_params(nonlocal_blend=True)
    # Every patch of a periodic image has noise-free copies: the blend must
    # take a clear share of the remaining error away.
    err = np.mean((with_blend - clean) ** 2)
    assert err < 0.8 * np.mean((without - clean) ** 2)


def test_blend_fitted_at_another_level_sees_images_as_denoise_does(blended):
    # Images of noise k sigma are seen scaled by 1 / k: the fit on (k c, k x)
    # at k sigma is the fit on (c, x) at sigma, up to rounding.
    den = copy.deepcopy(blended)
    rng = np.random.default_rng(5)
    clean = [0.25 + 0.5 * stripes(3)]
    noisy = [clean[0] + SIGMA * rng.standard_normal(clean[0].shape)]
    den._fit_nonlocal(clean, noisy, None)
    coef = den.nonlocal_.coef
    den._fit_nonlocal([2 * clean[0]], [2 * noisy[0]], None, sigma=2 * SIGMA)
    np.testing.assert_allclose(den.nonlocal_.coef, coef, rtol=1e-4, atol=1e-4)
    assert not np.allclose(coef, 0)


def test_blend_needs_a_fitted_blend():
    den = ImageDenoiser(
        n_layers=4, crop_size=24, n_crops=2, max_iter=1, noise_std=SIGMA
    ).fit([stripes(0)])
    with pytest.raises(ValueError, match="fitted without it"):
        den.set_params(nonlocal_blend=True).denoise(stripes(1))


def test_blend_is_saved_and_loaded(blended, tmp_path):
    save_denoiser(blended, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        assert str(f["format"]) == NONLOCAL_FORMAT
    loaded = load_denoiser(tmp_path / "m.npz")
    assert loaded.nonlocal_blend
    np.testing.assert_array_equal(loaded.nonlocal_.coef, blended.nonlocal_.coef)
    noisy = stripes(3) + SIGMA * np.random.default_rng(4).standard_normal((48, 40))
    np.testing.assert_array_equal(loaded.denoise(noisy), blended.denoise(noisy))


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("nonlocal_coef", np.zeros((2, 2, 2)), "coef of shape"),
        ("nonlocal_energy_edges", np.zeros((7, 1)), "edges 1-D"),
        ("nonlocal_patch", np.array(4), "out of range"),
        ("nonlocal_eta", np.array(np.nan), "out of range"),
    ],
)
def test_damaged_blend_raises(blended, tmp_path, field, value, match):
    save_denoiser(blended, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        fields = dict(f)
    fields[field] = value
    np.savez(tmp_path / "bad.npz", **fields)
    with pytest.raises(ValueError, match=f"invalid non-local blend: .*{match}"):
        load_denoiser(tmp_path / "bad.npz")
    del fields[field]
    np.savez(tmp_path / "missing.npz", **fields)
    with pytest.raises(ValueError, match="damaged model"):
        load_denoiser(tmp_path / "missing.npz")


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("level", PRETRAINED_LEVELS)
def test_shipped_blends(level, fast):
    """``denoise_image`` applies a shipped file's blend unless told not to."""
    model = pretrained_denoiser(level, fast=fast)
    rng = np.random.default_rng(5)
    clean = stripes(6, shape=(40, 40))
    noisy = clean + level / 255 * rng.standard_normal(clean.shape)
    alone = model.set_params(nonlocal_blend=False).denoise(noisy, level / 255)
    off = denoise_image(noisy, level / 255, fast=fast, nonlocal_blend=False)
    np.testing.assert_array_equal(off, alone)
    on = denoise_image(noisy, level / 255, fast=fast)
    assert hasattr(model, "nonlocal_")  # every shipped file has one
    assert not np.array_equal(on, off)
    assert np.mean((on - clean) ** 2) < np.mean((off - clean) ** 2)


def test_refit_without_blend_drops_it(blended):
    den = copy.deepcopy(blended).set_params(nonlocal_blend=False, max_iter=1)
    den.fit([stripes(0)])
    assert not hasattr(den, "nonlocal_")
    with pytest.raises(ValueError, match="fitted without it"):
        den.set_params(nonlocal_blend=True).denoise(stripes(1))
