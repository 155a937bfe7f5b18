"""Any real dtype and range, colour layouts and stacks through the denoisers."""

import numpy as np
import pytest

from sklearn_ergo import denoise_image
from sklearn_ergo._image_data import as_planes
from sklearn_ergo._pretrained import pretrained_denoiser

SIGMA = 25 / 255


def blocks(seed, n=4, size=12):
    rng = np.random.default_rng(seed)
    return np.kron(rng.uniform(0.2, 0.8, size=(n, n)), np.ones((size, size)))


@pytest.fixture(scope="module")
def pair():
    clean = blocks(0)
    noisy = clean + SIGMA * np.random.default_rng(1).standard_normal(clean.shape)
    return clean, noisy, denoise_image(noisy, SIGMA)


def mse(a, b):
    return float(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2))


@pytest.mark.parametrize(
    "dtype, scale, offset",
    [
        (np.uint8, 255, 0),
        (np.uint16, 65535, 0),
        (np.uint16, 4000, 30_000),  # 12-bit-like data high in the 16-bit range
        (np.int16, 2000, -1000),  # signed, e.g. CT-like values
        (np.int32, 1e6, -5e5),
    ],
)
def test_integer_round_trip(pair, dtype, scale, offset):
    clean, noisy, _ = pair
    info = np.iinfo(dtype)
    values = noisy * scale + offset
    image = np.clip(np.round(values), info.min, info.max).astype(dtype)
    # Data that do not span their dtype's range say so with data_range.
    kwargs = {} if offset == 0 and scale == info.max else {"data_range": scale}
    out = denoise_image(image, sigma=SIGMA * scale, **kwargs)
    assert out.dtype == dtype and out.shape == image.shape
    assert info.min <= out.min() and out.max() <= info.max
    # It is the result for the same values in float64, up to rounding of the
    # input and output.  (The same values: the model uses absolute intensity,
    # its filters are not zero-sum, so an offset changes its input.)
    ref = denoise_image(values, sigma=SIGMA * scale, data_range=scale)
    back, ref = (out.astype(np.float64) - offset) / scale, (ref - offset) / scale
    assert mse(back, ref) < 0.02 * mse(ref, clean) + 2 / scale**2
    assert mse(back, clean) < mse(noisy, clean) / 4


def test_uint16_keeps_its_full_range(pair):
    clean, noisy, _ = pair
    image = np.round(np.clip(noisy, 0, 1) * 65535).astype(np.uint16)
    out = denoise_image(image, sigma=SIGMA * 65535)
    # No 8-bit quantisation: many more than 256 distinct values.
    assert len(np.unique(out)) > 1000
    assert len(np.unique(out % 257)) > 200


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_dtype_is_kept(pair, dtype):
    _, noisy, ref = pair
    out = denoise_image(noisy.astype(dtype), SIGMA)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref, atol=1e-5 if dtype == np.float32 else 0)


def test_float_range_and_clipping(pair):
    clean, noisy, ref = pair
    # Input with unclipped noise around a black area: output not clipped.
    dark = noisy - clean.min()
    assert denoise_image(dark, SIGMA).min() < 0
    unit = np.clip(noisy, 0, 1)
    out = denoise_image(unit, SIGMA)
    assert 0 <= out.min() and out.max() <= 1
    # 0-255 floats are the uint8 image without rounding.
    out255 = denoise_image(noisy * 255, SIGMA * 255)
    np.testing.assert_allclose(out255 / 255, ref, atol=1e-10)


def test_physical_units_far_from_zero(pair):
    # Data around 5e4 with noise 25: the models see the image moved near
    # [0, 1]; without that, the offset would ruin the result.
    clean, noisy, ref = pair
    out = denoise_image(noisy * 255 + 5e4, SIGMA * 255, data_range=255)
    assert out.dtype == np.float64 and out.min() > 4e4
    assert mse((out - 5e4) / 255, clean) < 1.1 * mse(ref, clean)


def test_data_range_chooses_the_model(pair):
    _, noisy, _ = pair
    # 12.5 in an image of range 127.5 is the 8-bit level 25.
    out = denoise_image(noisy * 127.5, 12.5, data_range=127.5)
    model = pretrained_denoiser(25)
    np.testing.assert_allclose(out, model.denoise(noisy * 127.5, 12.5), atol=1e-12)


def test_heavy_noise_keeps_the_unit_range():
    # Unclipped noise of std 75/255 sends a few values of a [0, 1] image
    # past 2: its range is still 1, so the level is 75 and picks the model
    # of 50; more than a thousandth of the values further out makes it the
    # span.
    clean = blocks(0, n=8, size=16)
    noisy = clean + 75 / 255 * np.random.default_rng(3).standard_normal(clean.shape)
    noisy.flat[:3] = [2.5, -1.5, 2.2]
    out = denoise_image(noisy, 75 / 255)
    np.testing.assert_array_equal(
        out, pretrained_denoiser(50).denoise(noisy, sigma=75 / 255)
    )
    assert as_planes(noisy, None).data_range() == 1.0
    far = noisy.copy()
    far.flat[: noisy.size // 500] = 3.0
    assert as_planes(far, None).data_range() == pytest.approx(far.max() - far.min())


@pytest.mark.parametrize("axis", [-1, 0, 2])
def test_channel_axis(axis):
    clean = np.stack([blocks(s) for s in (2, 3, 4)], axis=-1)
    rng = np.random.default_rng(5)
    noisy = clean + SIGMA * rng.standard_normal(clean.shape)
    out_last = denoise_image(noisy, SIGMA, channel_axis=-1)
    assert mse(out_last, clean) < mse(noisy, clean) / 4
    moved = np.moveaxis(noisy, -1, axis)
    out = denoise_image(moved, SIGMA, channel_axis=axis)
    assert out.shape == moved.shape
    np.testing.assert_allclose(np.moveaxis(out, axis, -1), out_last, atol=1e-12)


def test_rgb_without_channel_axis_is_a_stack_and_says_so():
    with pytest.raises(ValueError, match="pass channel_axis=-1"):
        denoise_image(np.zeros((48, 48, 3)), SIGMA)


@pytest.mark.parametrize("n_channels", [2, 4])
def test_alpha_is_untouched(n_channels):
    rng = np.random.default_rng(6)
    colour = np.stack([blocks(s) for s in (7, 8, 9)][: n_channels - 1], axis=-1)
    noisy = colour + SIGMA * rng.standard_normal(colour.shape)
    image = np.round(np.clip(noisy, 0, 1) * 255).astype(np.uint8)
    alpha = rng.integers(0, 256, size=colour.shape[:2] + (1,), dtype=np.uint8)
    rgba = np.concatenate([image, alpha], axis=-1)
    out = denoise_image(rgba, 25, channel_axis=-1)
    assert out.dtype == np.uint8 and out.shape == rgba.shape
    np.testing.assert_array_equal(out[:, :, -1], alpha[:, :, 0])
    colour_out = (
        denoise_image(image, 25, channel_axis=-1)
        if n_channels == 4
        else (denoise_image(image[:, :, 0], 25)[:, :, None])
    )
    np.testing.assert_array_equal(out[:, :, :-1], colour_out)


def test_stack_is_denoised_image_by_image(pair):
    _, noisy, ref = pair
    stack = np.stack([noisy, noisy[::-1]])
    out = denoise_image(stack, SIGMA)
    assert out.shape == stack.shape
    np.testing.assert_array_equal(out[0], ref)
    np.testing.assert_array_equal(out[1], denoise_image(noisy[::-1], SIGMA))
    model = pretrained_denoiser(25)
    np.testing.assert_allclose(model.denoise(stack, SIGMA), out, atol=1e-12)


@pytest.mark.parametrize(
    "image, kwargs, error, match",
    [
        (np.zeros((48, 48), dtype=bool), {}, TypeError, "real integer"),
        (np.zeros((48, 48), dtype=complex), {}, TypeError, "real integer"),
        (np.zeros((2, 48, 48, 3)), {}, ValueError, "3-D"),
        (np.zeros((48, 48)), dict(channel_axis=-1), ValueError, "must be 3-D"),
        (np.zeros((48, 48, 3)), dict(channel_axis=3), ValueError, "out of range"),
        (np.zeros((48, 48)), dict(sigma=-1.0), ValueError, "'sigma' parameter"),
        (np.zeros((48, 48), np.uint8), dict(sigma=300), ValueError, "at most"),
    ],
)
def test_errors(image, kwargs, error, match):
    with pytest.raises(error, match=match):
        denoise_image(image, **kwargs)
