"""The restructured core computes what the code before it computed.

``tests/data/reference_74a8ed7.npz`` holds outputs of commit 74a8ed7
(``tests/data/make_reference.py``); the same inputs are rebuilt here and
pushed through today's code.  Float64 must agree to 1e-12 relative (most
cases are bit-identical: the arithmetic did not change), float32 to its own
rounding.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

import sklearn_ergo._convolutional as convolutional
from sklearn_ergo import (
    load_denoiser,
    unrolled_denoise,
    unrolled_loss_grad,
)
from sklearn_ergo._convolutional import denoise_images, images_loss_grad
from sklearn_ergo._penalties import L1, Huber, Log
from sklearn_ergo._steps import AcceleratedSteps
from sklearn_ergo._unrolled_map import UnrolledMap

DATA = pathlib.Path(__file__).with_name("data")
_spec = importlib.util.spec_from_file_location(
    "make_reference", DATA / "make_reference.py"
)
ref_cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref_cases)


@pytest.fixture(scope="module")
def reference():
    with np.load(DATA / "reference_74a8ed7.npz") as data:
        return dict(data)


def _close(actual, expected, dtype=np.float64):
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    scale = max(float(np.max(np.abs(expected))), np.finfo(np.float64).tiny)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, kw", ref_cases.DENSE_CASES)
def test_dense_modes(reference, dtype, name, kw):
    K, X, Y = ref_cases.dense_inputs(dtype)
    key = f"dense/{np.dtype(dtype).name}/{name}"
    loss, grad = unrolled_loss_grad(K, X, Y, **kw)
    _close(loss, reference[f"{key}/loss"], dtype)
    _close(grad, reference[f"{key}/grad"], dtype)
    _close(unrolled_denoise(K, X, **kw), reference[f"{key}/denoise"], dtype)


def _conv_map(penalty, n_stages=1, unroll="last"):
    return UnrolledMap(
        6, unroll, penalty=penalty, steps=AcceleratedSteps(), n_stages=n_stages
    )


@pytest.mark.parametrize("unroll", ["last", "ergodic"])
def test_convolutional_models(reference, unroll):
    K, eps, noisy, clean = ref_cases.conv_inputs()
    loss, grads = images_loss_grad(_conv_map(L1(), 1, unroll), {"K": K}, noisy, clean)
    _close(loss, reference[f"conv/l1/{unroll}/loss"])
    _close(grads["K"], reference[f"conv/l1/{unroll}/grad"])
    for n_stages in (1, 3):
        key = f"conv/log{n_stages}/{unroll}"
        loss, grads = images_loss_grad(
            _conv_map(Log(), n_stages, unroll), {"K": K, "eps": eps}, noisy, clean
        )
        _close(loss, reference[f"{key}/loss"])
        _close(grads["K"], reference[f"{key}/grad_K"])
        _close(grads["eps"], reference[f"{key}/grad_eps"])


@pytest.fixture
def padding_of_74a8ed7(monkeypatch):
    """Whole images padded by ``p - 1``, as 74a8ed7 did (today: 2 (p - 1))."""
    monkeypatch.setattr(convolutional, "DENOISE_PADDING", 1)


def test_convolutional_huber_and_denoise(reference, padding_of_74a8ed7):
    K, eps, noisy, clean = ref_cases.conv_inputs()
    loss, grads = images_loss_grad(_conv_map(Huber(0.02)), {"K": K}, noisy, clean)
    _close(loss, reference["conv/huber/loss"])
    _close(grads["K"], reference["conv/huber/grad"])
    out = denoise_images(_conv_map(L1()), {"K": K}, noisy)
    _close(out, reference["conv/denoise/l1"])
    out = denoise_images(_conv_map(Log(), 2), {"K": K, "eps": eps}, noisy)
    _close(out, reference["conv/denoise/log"])


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_fit_on_demo_data(reference, solver):
    est, X = ref_cases.demo_fit(solver)
    _close(est.components_, reference[f"fit/{solver}/components"])
    _close(est.loss_curve_, reference[f"fit/{solver}/loss_curve"])
    _close(est.predict(X[:200]), reference[f"fit/{solver}/predict"])


@pytest.mark.parametrize("sigma, level", [(15, 15), (20, 25), (50, 50)])
def test_denoise_image(reference, sigma, level, padding_of_74a8ed7):
    """The models that ``denoise_image`` of 74a8ed7 chose, run by today's code."""
    clean, noise = ref_cases.reference_image()
    model = load_denoiser(DATA / "pretrained_74a8ed7" / f"sigma{level}.npz")
    out = model.denoise(clean + sigma / 255 * noise, sigma=sigma / 255)
    # 74a8ed7 clipped float output to [0, 1]; today only input in [0, 1] is
    # clipped, and this one has unclipped noise.  The convolutional model runs
    # in float32 since the kernels were made fast (float64 was bit for bit).
    _close(np.clip(out, 0.0, 1.0), reference[f"denoise_image/{sigma}"], np.float32)
