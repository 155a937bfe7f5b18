"""Tests of the log penalty's reweighted-l1 stages and their exact gradient."""

import functools

import numpy as np
import pytest
from joblib import parallel_config

from sklearn_ergo._chambolle_pock import backward, constant_steps, forward
from sklearn_ergo._convolution import ConvolutionalOperator
from sklearn_ergo._operators import DenseOperator
from sklearn_ergo._prox import L1Norm, WeightedL1
from sklearn_ergo._reweighted import reweighted_forward
from sklearn_ergo._unrolled import output_weights
from sklearn_ergo.image import (
    accelerated_steps,
    convolutional_denoise,
    convolutional_log_loss_grad,
    convolutional_loss_grad,
    initial_filters,
)


def _problem(seed=0, shape=(3, 9, 8), m=4, p=3):
    rng = np.random.default_rng(seed)
    clean = rng.uniform(size=shape)
    noisy = clean + 0.2 * rng.standard_normal(shape)
    K = 0.3 * initial_filters(m, p, rng)
    eps = rng.uniform(0.02, 0.2, size=m)
    return K, eps, noisy, clean, rng


def test_weighted_l1_prox_and_mask():
    b = np.array([0.5, 1.0, 2.0, 0.1])
    F = WeightedL1(b)
    z = np.array([-1.0, 0.3, 3.0, 0.05])
    y = F.prox_conjugate(z.copy(), 0.7)
    np.testing.assert_array_equal(y, [-0.5, 0.3, 2.0, 0.05])
    # Moreau: prox_{F*}(z) = z - prox_F(z), with prox_F weighted soft thresholding.
    np.testing.assert_allclose(y, z - np.sign(z) * np.maximum(np.abs(z) - b, 0))
    np.testing.assert_array_equal(F.active(y, np.empty(4)), [0, 1, 0, 1])
    assert F.value(z) == pytest.approx(np.sum(b * np.abs(z)))
    np.testing.assert_array_equal(L1Norm().active(y, np.empty(4)), np.abs(y) < 1.0)


@pytest.mark.parametrize("unroll", ["last", "ergodic"])
def test_backward_bound_gradient_matches_finite_differences(unroll):
    rng = np.random.default_rng(0)
    K = rng.standard_normal((6, 5))
    X = rng.standard_normal((4, 5))
    target = rng.standard_normal((4, 5))
    steps = constant_steps(0.3, 0.3, 9)
    alpha = output_weights(9, unroll)
    bounds = rng.uniform(0.05, 0.6, size=(4, 6))
    op = DenseOperator(K)

    def loss(b):
        out = forward(op, X, steps, WeightedL1(b), alpha)[0]
        return 0.5 * np.sum((out - target) ** 2)

    out, tape = forward(op, X, steps, WeightedL1(bounds), alpha, record=True)
    grad = np.zeros_like(bounds)
    backward(
        op, X, tape, steps, WeightedL1(bounds), alpha, out - target, bound_grad=grad
    )
    assert np.abs(grad).max() > 0
    h = 1e-7
    for d in rng.standard_normal((3, *bounds.shape)):
        fd = (loss(bounds + h * d) - loss(bounds - h * d)) / (2 * h)
        assert np.vdot(grad, d) == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("unroll", ["last", "ergodic"])
@pytest.mark.parametrize("n_stages", [1, 2, 3])
def test_gradient_matches_finite_differences(unroll, n_stages):
    K, eps, noisy, clean, rng = _problem()

    def f(K, eps):
        return convolutional_log_loss_grad(
            K, eps, noisy, clean, n_layers=6, n_stages=n_stages, unroll=unroll
        )

    loss, grad_K, grad_eps = f(K, eps)
    # The map is piecewise smooth (a dual coordinate entering or leaving its
    # box is a kink); with h = 1e-6 one direction here crosses a kink.
    h = 1e-7
    for _ in range(2):
        dK, de = rng.standard_normal(K.shape), rng.standard_normal(eps.shape)
        fd_K = (f(K + h * dK, eps)[0] - f(K - h * dK, eps)[0]) / (2 * h)
        assert np.vdot(grad_K, dK) == pytest.approx(fd_K, rel=1e-6)
        fd_e = (f(K, eps + h * de)[0] - f(K, eps - h * de)[0]) / (2 * h)
        if n_stages == 1:
            assert fd_e == 0.0 and np.all(grad_eps == 0.0)
        else:
            assert np.vdot(grad_eps, de) == pytest.approx(fd_e, rel=1e-6)


def test_one_stage_is_the_l1_model_and_large_eps_tends_to_it():
    K, eps, noisy, clean, _ = _problem(seed=1)
    kw = dict(n_layers=8)
    loss1, grad1, _ = convolutional_log_loss_grad(
        K, eps, noisy, clean, n_stages=1, **kw
    )
    loss, grad = convolutional_loss_grad(K, noisy, clean, **kw)
    assert loss1 == loss
    np.testing.assert_array_equal(grad1, grad)
    far = convolutional_log_loss_grad(K, 1e9 * eps, noisy, clean, n_stages=3, **kw)
    assert far[0] == pytest.approx(loss, rel=1e-6)
    # Small eps: later stages regularise edges less, and the output differs.
    near = convolutional_log_loss_grad(K, eps, noisy, clean, n_stages=3, **kw)
    assert abs(near[0] - loss) > 1e-3 * loss


def test_stages_decrease_the_log_energy():
    """Converged stages are majorize-minimize steps of the non-convex energy."""
    rng = np.random.default_rng(2)
    clean = np.kron(rng.uniform(size=(3, 3)), np.ones((5, 5)))
    noisy = (clean + 0.1 * rng.standard_normal(clean.shape)).reshape(1, -1)
    K = 0.08 * initial_filters(2, 2, rng)
    eps = np.array([0.02, 0.02])
    op = ConvolutionalOperator(K, clean.shape, 2)
    steps = accelerated_steps(op.norm_and_grad()[0], 400)
    alpha = output_weights(400, "last")

    def energy(x):
        z = np.abs(op.apply(x)).reshape(-1, 2)
        return np.sum(eps * np.log1p(z / eps)) + 0.5 * np.sum((x - noisy) ** 2)

    energies = [
        energy(reweighted_forward(op, noisy, eps, steps, alpha, s)[0])
        for s in (1, 2, 3, 4)
    ]
    assert all(np.diff(energies) < 0), energies


def test_parallel_chunks_and_denoise():
    K, eps, noisy, clean, _ = _problem(shape=(5, 8, 8))
    serial = convolutional_log_loss_grad(K, eps, noisy, clean, n_layers=5)
    with parallel_config(backend="threading"):
        par = convolutional_log_loss_grad(K, eps, noisy, clean, n_layers=5, n_jobs=2)
    assert par[0] == pytest.approx(serial[0], rel=1e-12)
    for a, b in zip(par[1:], serial[1:], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    den = functools.partial(convolutional_denoise, K, noisy, n_layers=5, pad=False)
    out = den(penalty="log", eps=eps)
    loss = 0.5 * np.sum((out - clean) ** 2) / len(noisy)
    assert loss == pytest.approx(serial[0], rel=1e-12)
    with pytest.raises(ValueError, match="eps must hold 4 positive"):
        den(penalty="log", eps=np.r_[eps, 1.0])
    with pytest.raises(ValueError, match="eps must hold"):
        den(penalty="log", eps=-eps)
