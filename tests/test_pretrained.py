"""The shipped model and how denoise_image picks one for a noise level."""

import numpy as np
import pytest

from sklearn_ergo import denoise_image
from sklearn_ergo._pretrained import (
    FAST_LEVELS,
    PRETRAINED_LEVELS,
    denoiser_for_level,
    pretrained_denoiser,
)


@pytest.fixture(scope="module")
def noisy():
    rng = np.random.default_rng(0)
    clean = np.kron(rng.uniform(0.2, 0.8, size=(5, 5)), np.ones((8, 8)))
    return np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)


SHIPPED = [(level, False) for level in PRETRAINED_LEVELS] + [
    (level, True) for level in FAST_LEVELS
]


#: Refinement steps per shipped file, (level, fast) -> steps; 1 if absent.
N_REFINE = {
    (5, False): 4,
    (15, False): 4,
    (25, False): 4,
    (50, False): 4,
    (15, True): 4,
    (25, True): 4,
    (50, True): 4,
}


@pytest.mark.parametrize("level, fast", SHIPPED)
def test_shipped_models(level, fast):
    den = pretrained_denoiser(level, fast=fast)
    # Every file sees noise 25/255: the other levels' models were fine-tuned
    # on images rescaled by 25/level, as ``denoise`` applies them.
    assert den.noise_std_ == pytest.approx(25 / 255)
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
    # Then reaction-diffusion steps, learned at the file's level: four, but
    # one in the fast file of 5.
    n_refine = N_REFINE.get((level, fast), 1)
    assert den.n_refine == n_refine
    assert den.refine_phi_.shape == (n_refine, 48, 63)
    assert np.all(np.any(den.refine_phi_ != 0, axis=(1, 2)))


def no_shared_step(a, b):
    return not any(np.array_equal(u, v) for u in a.refine_phi_ for v in b.refine_phi_)


def test_steps_learned_per_level():
    """The 5 and 15 files have the 25 files' stages and a step of their own."""
    for fast in (False, True):
        ref = pretrained_denoiser(25, fast=fast)
        for level in (5, 15):
            den = pretrained_denoiser(level, fast=fast)
            # Equal up to the round trip through the training's parameter vector.
            np.testing.assert_allclose(den.components_, ref.components_, rtol=1e-10)
            assert no_shared_step(den, ref)
    # The fast 5 and 15 files' steps were learned again after the fast stages.
    for level in (5, 15):
        assert no_shared_step(
            pretrained_denoiser(level, fast=True), pretrained_denoiser(level)
        )
    assert no_shared_step(pretrained_denoiser(50), pretrained_denoiser(25))
    # The fast 50 file: the fast 25 file's stages, its steps learned again.
    fast25, fast50 = (
        pretrained_denoiser(25, fast=True),
        pretrained_denoiser(50, fast=True),
    )
    np.testing.assert_allclose(fast50.components_, fast25.components_, rtol=1e-10)
    assert no_shared_step(fast50, fast25)


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


@pytest.mark.parametrize(
    "sigma, level, fast",
    [(4, 5, False), (10, 5, False), (11, 15, False), (15, 15, False)]
    + [(20, 15, False), (21, 25, False)]
    + [(37.5, 25, False), (38, 50, False), (50, 50, False), (80, 50, False)]
    + [(10, 5, True), (11, 15, True), (20, 15, True), (21, 25, True)]
    + [(37.5, 25, True), (38, 50, True), (80, 50, True)],
)
def test_nearest_level_serves(noisy, sigma, level, fast):
    """A level runs the model of the nearest shipped level (the lower at a tie)."""
    out = denoise_image(noisy, sigma / 255, fast=fast)
    ref = pretrained_denoiser(level, fast=fast).denoise(noisy, sigma=sigma / 255)
    np.testing.assert_array_equal(out, ref)
    picked = denoiser_for_level(sigma, fast=fast)
    np.testing.assert_array_equal(
        picked.components_, pretrained_denoiser(level, fast=fast).components_
    )


def test_levels_are_different_models(noisy):
    a, b = pretrained_denoiser(25), pretrained_denoiser(50)
    assert not np.allclose(a.components_, b.components_)
    assert not np.array_equal(
        a.denoise(noisy, sigma=50 / 255), b.denoise(noisy, sigma=50 / 255)
    )


def test_unknown_level():
    with pytest.raises(ValueError, match="level must be one of"):
        pretrained_denoiser(20)
    with pytest.raises(ValueError, match=r"level must be one of \(5, 15, 25, 50\)"):
        pretrained_denoiser(35, fast=True)
