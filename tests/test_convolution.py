"""Tests of the convolutional operator, its norm bound and the exact gradient."""

import functools

import numpy as np
import pytest
from conftest import fd_relative_error
from joblib import parallel_config
from scipy.sparse.linalg import LinearOperator, svds

from sklearn_ergo._convolutional import (
    BOUNDARIES,
    ConvolutionalOperator,
    denoise_images,
    images_loss_grad,
    on_images,
    symbol_norm_bound,
)
from sklearn_ergo._init import initial_filters, tv_filters
from sklearn_ergo._penalties import make_penalty
from sklearn_ergo._steps import AcceleratedSteps, step_rule
from sklearn_ergo._unrolled_map import UnrolledMap

TV2 = np.array([[-1.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 1.0, 0.0]])


def operator_norm(op):
    A = LinearOperator(
        (op.n_dual, op.n_primal),
        matvec=lambda x: op.apply(x.reshape(1, -1))[0],
        rmatvec=lambda y: op.adjoint(y.reshape(1, -1))[0],
        dtype=np.float64,
    )
    return svds(A, k=1, tol=1e-12, random_state=0, return_singular_vectors=False)[0]


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("p", [1, 2, 3, 5])
def test_adjoint_and_weight_grad(boundary, p):
    rng = np.random.default_rng(p)
    H, W = 7, 9
    K = rng.standard_normal((4, p * p))
    op = ConvolutionalOperator(K, (H, W), p, boundary)
    X = rng.standard_normal((3, H * W))
    Y = rng.standard_normal((3, op.n_dual))
    value = np.vdot(op.apply(X), Y)
    assert np.vdot(X, op.adjoint(Y)) == pytest.approx(value, rel=1e-12)
    # <Y, 𝒦_K X> is linear in K with gradient weight_grad(Y, X).
    assert np.vdot(K, op.weight_grad(Y, X)) == pytest.approx(value, rel=1e-12)
    out = np.empty((3, op.n_dual))
    assert op.apply(X, out=out) is out
    np.testing.assert_allclose(out, op.apply(X))


def test_tv_filters_give_anisotropic_tv():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 8))
    per = ConvolutionalOperator(TV2, x.shape, 2, "periodic")
    tv_torus = (
        np.abs(np.roll(x, -1, axis=1) - x).sum()
        + np.abs(np.roll(x, -1, axis=0) - x).sum()
    )
    assert np.abs(per.apply(x.reshape(1, -1))).sum() == pytest.approx(tv_torus)
    # 𝒦^T is minus the divergence of the periodic forward differences.
    Y = rng.standard_normal((6, 8, 2))
    div = Y[..., 0] - np.roll(Y[..., 0], 1, axis=1)
    div += Y[..., 1] - np.roll(Y[..., 1], 1, axis=0)
    adj = per.adjoint(Y.reshape(1, -1))[0].reshape(x.shape)
    np.testing.assert_allclose(adj, -div, atol=1e-12)
    # Valid positions: the differences inside the image, first H-1 x W-1 rows.
    valid = ConvolutionalOperator(TV2, x.shape, 2, "valid")
    tv_valid = (
        np.abs(np.diff(x[:-1], axis=1)).sum() + np.abs(np.diff(x[:, :-1], axis=0)).sum()
    )
    assert np.abs(valid.apply(x.reshape(1, -1))).sum() == pytest.approx(tv_valid)
    # tv_filters embeds the same differences in a p x p support.
    D = tv_filters(3).reshape(2, 3, 3)[:, :2, :2].reshape(2, 4)
    np.testing.assert_array_equal(D, TV2)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("p", [2, 3, 5])
def test_symbol_bound_dominates_norm(boundary, p):
    rng = np.random.default_rng(10 + p)
    K = rng.standard_normal((3, p * p))
    bound, _ = symbol_norm_bound(K, p)
    for shape in [(p, p + 1), (8, 11), (16, 16)]:
        op = ConvolutionalOperator(K, shape, p, boundary)
        assert operator_norm(op) <= bound
    # The bound is tight: the periodic operator on a 32x32 torus comes close.
    op = ConvolutionalOperator(K, (32, 32), p, "periodic")
    assert operator_norm(op) >= 0.98 * bound


def test_symbol_bound_of_tv_and_gradient():
    bound, grad = symbol_norm_bound(TV2, 2)
    # sup_w |1 - e^{-i w1}|^2 + |1 - e^{-i w2}|^2 = 8, certified within 0.05 %.
    assert np.sqrt(8) <= bound <= np.sqrt(8) * 1.0005
    rng = np.random.default_rng(1)
    K = rng.standard_normal((4, 9))
    _, grad = symbol_norm_bound(K, 3)
    assert fd_relative_error(lambda K: symbol_norm_bound(K, 3)[0], K, grad, rng) <= 1e-7
    # Cached by the filters' values: the same answer, in a fresh array.
    grad[:] = 0.0
    again, grad2 = symbol_norm_bound(K.copy(), 3)
    assert np.abs(grad2).max() > 0
    K[0, 0] += 1.0
    assert symbol_norm_bound(K, 3)[0] != again


def test_accelerated_steps():
    steps = AcceleratedSteps(tau0=0.5).schedule(2.0, 6, np.float64)
    np.testing.assert_allclose(steps.sigma * steps.tau * 4.0, 0.99**2)
    np.testing.assert_allclose(steps.theta, 1 / np.sqrt(1 + 2 * steps.tau))
    np.testing.assert_allclose(steps.tau[1:], steps.tau[:-1] * steps.theta[:-1])
    assert (steps.sigma_power, steps.tau_power) == (2.0, 0.0)


def _problem(seed=0, shape=(3, 9, 8), m=5, p=3):
    rng = np.random.default_rng(seed)
    clean = rng.uniform(size=shape)
    noisy = clean + 0.1 * rng.standard_normal(shape)
    K = 0.1 * initial_filters(m, p, rng, scale=0.5)
    return K, noisy, clean, rng


def _check_gradient(f, K, rng, rel):
    grad = f(K)[1]["K"]
    for _ in range(2):
        assert fd_relative_error(lambda K: f(K)[0], K, grad, rng) <= rel


def _map(n_layers, unroll="last", penalty="l1", steps=None, huber_eps=0.01):
    return UnrolledMap(
        n_layers,
        unroll,
        penalty=make_penalty(penalty, huber_eps=huber_eps),
        steps=AcceleratedSteps() if steps is None else steps,
    )


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("unroll", ["last", "ergodic"])
@pytest.mark.parametrize("penalty", ["l1", "huber"])
@pytest.mark.parametrize("steps", [None, (0.5, 0.5)])
def test_gradient_core_step_rule(boundary, unroll, penalty, steps):
    """The dense step rules on the convolutional operator, through the factory."""
    K, noisy, clean, rng = _problem()
    N, H, W = noisy.shape
    make_op = functools.partial(
        ConvolutionalOperator, image_shape=(H, W), patch_size=3, boundary=boundary
    )
    umap = UnrolledMap(
        7,
        unroll,
        penalty=make_penalty(penalty),
        steps=step_rule(*(steps or (None, None))),
        operator=make_op,
    )

    def f(K):
        X, Y = noisy.reshape(N, -1), clean.reshape(N, -1)
        return umap.loss_grad({"K": K}, X, Y, chunk_size=2)

    _check_gradient(f, K, rng, rel=1e-7)


@pytest.mark.parametrize("unroll", ["last", "ergodic"])
def test_gradient_accelerated_schedule(unroll):
    # The accelerated dual steps are large, so the l1 map has kinks densely
    # enough to spoil finite differences; the Huber map is smooth enough.
    K, noisy, clean, rng = _problem(seed=3)
    umap = _map(7, unroll, "huber", huber_eps=0.1)
    _check_gradient(
        lambda K: images_loss_grad(umap, {"K": K}, noisy, clean), K, rng, rel=1e-6
    )


def test_border_scores_only_the_returned_pixels():
    """``border`` = the padding: the loss of :func:`denoise_images`' output."""
    K, noisy, clean, rng = _problem(seed=4, shape=(3, 10, 9))
    umap = _map(6, "ergodic", "huber", huber_eps=0.1)
    out = denoise_images(umap, {"K": K}, noisy, pad=False)[:, 2:-2, 2:-2]
    expected = 0.5 * np.sum((out - clean[:, 2:-2, 2:-2]) ** 2) / len(noisy)
    loss, grads = images_loss_grad(umap, {"K": K}, noisy, clean, border=2)
    assert loss == pytest.approx(expected, rel=1e-12)
    assert loss < images_loss_grad(umap, {"K": K}, noisy, clean)[0]
    _check_gradient(
        lambda K: images_loss_grad(umap, {"K": K}, noisy, clean, border=2),
        K,
        rng,
        rel=1e-6,
    )


def test_whole_images_are_padded_twice_the_patch_overlap():
    """``denoise_images`` pads by ``2 (p - 1)``, mirrored, even past the image."""
    K, noisy, _, _ = _problem(seed=5, shape=(2, 6, 5))  # p = 3: pad by 4
    umap = _map(4)
    out = denoise_images(umap, {"K": K}, noisy)
    padded = np.pad(noisy, ((0, 0), (4, 4), (4, 4)), mode="symmetric")
    expected = denoise_images(umap, {"K": K}, padded, pad=False)[:, 4:-4, 4:-4]
    np.testing.assert_array_equal(out, expected)
    tiny = noisy[:, :3, :2]  # smaller than the padding
    assert denoise_images(umap, {"K": K}, tiny).shape == tiny.shape


def test_loss_weights_are_checked():
    K, noisy, clean, _ = _problem()
    X, Y = noisy.reshape(3, -1), clean.reshape(3, -1)
    umap = on_images(_map(2), noisy.shape[1:], 3)
    for bad in (np.ones(5), -np.ones(X.shape[1])):
        with pytest.raises(ValueError, match="loss_weights"):
            umap.loss_grad({"K": K}, X, Y, loss_weights=bad)


def test_parallel_chunks_match_serial():
    K, noisy, clean, _ = _problem(shape=(5, 8, 8))
    umap = _map(5)
    loss1, grad1 = images_loss_grad(umap, {"K": K}, noisy, clean)
    with parallel_config(backend="threading"):
        loss2, grad2 = images_loss_grad(umap, {"K": K}, noisy, clean, n_jobs=2)
    assert loss2 == pytest.approx(loss1, rel=1e-12)
    np.testing.assert_allclose(grad2["K"], grad1["K"], rtol=1e-10, atol=1e-14)
    out = denoise_images(umap, {"K": K}, noisy)
    assert out.shape == noisy.shape


def test_one_image_gets_the_idle_workers_as_tile_threads():
    # Fewer chunks than workers: the convolutional operator of each chunk
    # gets workers // chunks tile threads; the results are the same.
    rng = np.random.default_rng(5)
    K = 0.3 * rng.standard_normal((4, 9))
    # 78 x 68 positions: two tiles of the banded kernels.
    umap = on_images(UnrolledMap(4, penalty=make_penalty("l1")), (80, 70), 3)
    assert umap._threads_per_chunk(1, 2).operator(K).n_threads == 2
    assert umap._threads_per_chunk(3, 2) is umap
    dense = UnrolledMap(4)
    assert dense._threads_per_chunk(1, 2) is dense
    params = {"K": K}
    image = rng.uniform(size=(1, 80, 70))
    one = denoise_images(umap, params, image, n_jobs=1)
    with parallel_config(backend="threading"):
        two = denoise_images(umap, params, image, n_jobs=2)
    np.testing.assert_allclose(two, one, rtol=1e-13, atol=1e-15)
