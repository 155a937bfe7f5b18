"""The geometric self-ensemble: its transforms, its mean, its use by the denoisers."""

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_ergo import denoise_image
from sklearn_ergo._ensemble import TRANSFORMS, _backward, _forward, self_ensemble
from sklearn_ergo._pretrained import pretrained_denoiser

# The eight symmetries of the square, written out on an (N, H, W) stack.
DIHEDRAL = {
    "identity": lambda a: a,
    "rot90": lambda a: np.rot90(a, 1, axes=(1, 2)),
    "rot180": lambda a: a[:, ::-1, ::-1],
    "rot270": lambda a: np.rot90(a, -1, axes=(1, 2)),
    "transpose": lambda a: a.transpose(0, 2, 1),
    "anti-transpose": lambda a: a[:, ::-1, ::-1].transpose(0, 2, 1),
    "flip rows": lambda a: a[:, ::-1, :],
    "flip columns": lambda a: a[:, :, ::-1],
}
INVERSE = {name: name for name in DIHEDRAL} | {"rot90": "rot270", "rot270": "rot90"}
NAMES = {
    1: ["identity"],
    2: ["identity", "transpose"],
    4: ["identity", "transpose", "rot180", "anti-transpose"],
    8: list(DIHEDRAL),
}


def _name(k, flip, a):
    """Which named symmetry the transform ``(k, flip)`` is, found on ``a``."""
    b = _forward(a, k, flip)
    hits = [
        n for n, f in DIHEDRAL.items() if f(a).shape == b.shape and (f(a) == b).all()
    ]
    assert len(hits) == 1
    return hits[0]


def _not_equivariant(images):
    """A map that sees the orientation: cumulative sums down and across."""
    return np.cumsum(images, axis=1) * 0.3 + np.cumsum(images, axis=2) ** 2 * 0.01


@pytest.mark.parametrize("n", sorted(TRANSFORMS))
def test_transforms_are_the_documented_nested_groups(n):
    a = np.arange(2 * 5 * 7, dtype=float).reshape(2, 5, 7)
    names = [_name(k, flip, a) for k, flip in TRANSFORMS[n]]
    assert names[0] == "identity" and len(set(names)) == n
    assert set(names) == set(NAMES[n])
    if n > 1:  # nested: more copies only add estimates
        assert set(NAMES[n // 2]) < set(NAMES[n])
    for k, flip in TRANSFORMS[n]:  # _backward undoes _forward
        assert (_backward(_forward(a, k, flip), k, flip) == a).all()
        for k2, flip2 in TRANSFORMS[n]:  # a group: closed under composition
            composed = _forward(_forward(a, k, flip), k2, flip2)
            matches = [
                t
                for t in TRANSFORMS[n]
                if (c := _forward(a, *t)).shape == composed.shape
                and (c == composed).all()
            ]
            assert len(matches) == 1


@pytest.mark.parametrize("n", sorted(TRANSFORMS))
def test_mean_of_the_mapped_back_outputs(n):
    images = np.random.default_rng(0).uniform(size=(3, 6, 9))
    expected = np.mean(
        [
            DIHEDRAL[INVERSE[name]](_not_equivariant(DIHEDRAL[name](images)))
            for name in NAMES[n]
        ],
        axis=0,
    )
    out = self_ensemble(_not_equivariant, images, n)
    assert out.shape == images.shape
    np.testing.assert_allclose(out, expected, rtol=1e-13)
    if n > 1:  # the copies differ, so the test can tell subsets apart
        assert not np.allclose(out, _not_equivariant(images))


def test_input_untouched_when_the_map_returns_it():
    images = np.random.default_rng(1).uniform(size=(1, 4, 4))
    before = images.copy()
    out = self_ensemble(lambda a: a, images, 8)
    np.testing.assert_array_equal(images, before)
    np.testing.assert_allclose(out, images)


def test_shipped_model_with_copies_is_the_mean_of_its_outputs():
    rng = np.random.default_rng(2)
    clean = np.kron(rng.uniform(size=(3, 4)), np.ones((12, 12)))  # 36 x 48
    noisy = clean + 25 / 255 * rng.standard_normal(clean.shape)
    model = pretrained_denoiser(25, fast=True).set_params(nonlocal_blend=False)
    expected = np.mean(
        [
            DIHEDRAL[INVERSE[name]](model.denoise(DIHEDRAL[name](noisy[None])))
            for name in NAMES[4]
        ],
        axis=0,
    )[0]
    kw = {"fast": True, "nonlocal_blend": False}
    out = denoise_image(noisy, 25 / 255, self_ensemble=4, **kw)
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=1e-6)
    plain = denoise_image(noisy, 25 / 255, **kw)
    assert np.abs(out - plain).max() > 1e-4
    ensembled = model.set_params(self_ensemble=4).denoise(noisy)
    np.testing.assert_allclose(ensembled, out, atol=1e-12)
    # The non-local blend comes after the mean, with the noisy image beside it
    # (at the file's own level the image is not rescaled).
    blend = model.nonlocal_.apply(expected, noisy, model.noise_std_)
    blended = denoise_image(noisy, 25 / 255, fast=True, self_ensemble=4)
    np.testing.assert_allclose(blended, np.clip(blend, 0, 1), atol=1e-6)


@pytest.mark.parametrize("bad", [0, 3, 16, 2.0])
def test_bad_number_of_copies(bad):
    image = np.zeros((16, 16))
    with pytest.raises(InvalidParameterError, match="self_ensemble"):
        denoise_image(image, 0.1, self_ensemble=bad)
    model = pretrained_denoiser(25, fast=True).set_params(self_ensemble=bad)
    with pytest.raises(InvalidParameterError, match="self_ensemble"):
        model.denoise(image)
