"""Tests of the per-layer backprop diagnostics against brute force."""

import numpy as np
import pytest
from conftest import fd_gradient

from sklearn_ergo import AnalysisOperatorLearner, unrolled_denoise, unrolled_loss_grad
from sklearn_ergo._penalties import make_penalty
from sklearn_ergo._steps import FixedSteps
from sklearn_ergo._unrolled_map import UnrolledMap, output_weights
from sklearn_ergo.diagnostics import (
    PROFILE_KEYS,
    _record_layers,
    backprop_profile,
    estimator_backprop_profile,
)

SIGMA = TAU = 0.3


def _naive_loss(Ks, X_noisy, X_clean, alpha, pen, e_P, e_D):
    """The unrolled loss written out from the maths notes, for brute force.

    Layer ``l`` uses its own operator ``Ks[l-1]`` and adds ``e_P[l-1]``,
    ``e_D[l-1]`` to ``z_P^[l]``, ``z_D^[l]``: derivatives with respect to
    these are ``delta_P^[l]``, ``delta_D^[l]`` and layer ``l``'s gradient term.
    """
    r = np.zeros_like(X_noisy)
    y = np.zeros((len(X_noisy), Ks[0].shape[0]))
    xbar = X_noisy.copy()
    out = np.zeros_like(X_noisy)
    for l, K in enumerate(Ks):
        y = pen.prox_conjugate(y + SIGMA * xbar @ K.T + e_D[l], SIGMA)
        r_new = (r - TAU * y @ K + e_P[l]) / (1.0 + TAU)
        xbar = X_noisy + 2.0 * r_new - r
        r = r_new
        out += alpha[l] * r
    residual = X_noisy + out - X_clean
    return 0.5 * np.vdot(residual, residual) / len(X_noisy)


@pytest.mark.parametrize("unroll", ["last", "ergodic"])
@pytest.mark.parametrize("penalty", ["l1", "huber"])
def test_profile_matches_brute_force(unroll, penalty):
    # K = [D; D] with D the 1-D differences: ker K = constants and
    # ker K^T = {(a, -a)}, so both projections have closed forms.
    rng = np.random.default_rng(0)
    n, N, L = 4, 3, 5
    D = np.diff(np.eye(n), axis=0)
    K = 0.8 * np.vstack([D, D])
    X_clean = rng.standard_normal((N, n))
    X_noisy = X_clean + 0.5 * rng.standard_normal((N, n))
    alpha = output_weights(L, unroll)
    pen = make_penalty(penalty, huber_eps=0.05)
    m = K.shape[0]
    zeros_P, zeros_D = np.zeros((L, N, n)), np.zeros((L, N, m))

    def loss_of(e_P=zeros_P, e_D=zeros_D, Ks=(K,) * L):
        return _naive_loss(list(Ks), X_noisy, X_clean, alpha, pen, e_P, e_D)

    delta_P = fd_gradient(lambda e: loss_of(e_P=e), zeros_P)
    delta_D = fd_gradient(lambda e: loss_of(e_D=e), zeros_D)
    Ks = np.broadcast_to(K, (L, *K.shape)).copy()
    terms = fd_gradient(lambda k: loss_of(Ks=k), Ks)

    prof = backprop_profile(
        K,
        X_noisy,
        X_clean,
        n_layers=L,
        unroll=unroll,
        penalty=penalty,
        huber_eps=0.05,
        sigma=SIGMA,
        tau=TAU,
        chunk_size=2,  # two chunks: the batch norms must combine exactly
    )
    assert set(prof) == set(PROFILE_KEYS)
    norm = np.linalg.norm
    P_norm = norm(delta_P.reshape(L, -1), axis=1)
    D_norm = norm(delta_D.reshape(L, -1), axis=1)
    P_range = delta_P - delta_P.mean(axis=2, keepdims=True)
    half = (delta_D[..., : n - 1] + delta_D[..., n - 1 :]) / 2
    D_range = np.concatenate([half, half], axis=2)
    assert np.all(D_norm > 0) and np.all(P_norm > 0)
    np.testing.assert_allclose(prof["delta_P_norm"], P_norm, rtol=1e-6)
    np.testing.assert_allclose(prof["delta_D_norm"], D_norm, rtol=1e-6)
    np.testing.assert_allclose(
        prof["delta_P_range_share"],
        norm(P_range.reshape(L, -1), axis=1) / P_norm,
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        prof["delta_D_range_share"],
        norm(D_range.reshape(L, -1), axis=1) / D_norm,
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        prof["grad_contribution"], norm(terms.reshape(L, -1), axis=1), rtol=1e-6
    )


def test_shares_on_known_kernel():
    # Constant inputs lie in ker K (K = differences): y = 0, r = 0 in every
    # layer and delta_P^[1] = g / (1 + tau) with g = (X_noisy - X_clean) / N,
    # whose share outside ker K is that of g without its row means, while
    # delta_D^[1] = -tau K delta_P^[1] lies in range(K).
    rng = np.random.default_rng(1)
    n, N = 6, 5
    K = 0.3 * np.diff(np.eye(n), axis=0)
    X_noisy = np.repeat(rng.standard_normal((N, 1)), n, axis=1)
    X_clean = X_noisy + rng.standard_normal((N, n))
    prof = backprop_profile(K, X_noisy, X_clean, n_layers=1)
    g = X_noisy - X_clean
    share = np.linalg.norm(g - g.mean(axis=1, keepdims=True)) / np.linalg.norm(g)
    np.testing.assert_allclose(prof["delta_P_range_share"], share)
    np.testing.assert_allclose(prof["delta_D_range_share"], 1.0)
    # Targets off by a constant per sample: delta_P in ker K, delta_D = 0.
    X_clean = X_noisy + rng.standard_normal((N, 1))
    prof = backprop_profile(K, X_noisy, X_clean, n_layers=1)
    assert prof["delta_P_norm"][0] > 0 and prof["delta_P_range_share"][0] < 1e-12
    assert prof["delta_D_norm"][0] < 1e-12
    # A K with trivial kernel has range(K^T) = R^n: share 1 in every layer.
    X_clean = X_noisy + rng.standard_normal((N, n))
    prof = backprop_profile(
        0.3 * np.eye(n), X_noisy + X_clean, X_clean, n_layers=4, unroll="ergodic"
    )
    np.testing.assert_allclose(prof["delta_P_range_share"], 1.0)
    np.testing.assert_allclose(prof["delta_D_range_share"], 1.0)


def test_kernel_rtol_treats_small_singular_values_as_kernel():
    # K = diag(1, 1e-3, 1): with kernel_rtol = 1e-2 the second coordinate
    # spans ker K.  With L = 1, delta_P^[1] is proportional to X_hat - X_clean.
    rng = np.random.default_rng(5)
    K = 0.3 * np.diag([1.0, 1e-3, 1.0])
    X_clean = rng.standard_normal((4, 3))
    X_noisy = X_clean + rng.standard_normal((4, 3))
    kw = dict(n_layers=1, sigma=1.0, tau=1.0)
    exact = backprop_profile(K, X_noisy, X_clean, **kw)
    near = backprop_profile(K, X_noisy, X_clean, kernel_rtol=1e-2, **kw)
    np.testing.assert_allclose(exact["delta_P_range_share"], 1.0)
    g = unrolled_denoise(K, X_noisy, **kw) - X_clean
    np.testing.assert_allclose(
        near["delta_P_range_share"][0],
        np.linalg.norm(g[:, [0, 2]]) / np.linalg.norm(g),
    )
    np.testing.assert_allclose(near["delta_P_norm"], exact["delta_P_norm"])


@pytest.mark.parametrize("unroll", ["last", "ergodic"])
def test_gradient_terms_add_up(unroll):
    rng = np.random.default_rng(2)
    n, m, N, L = 5, 7, 6, 12
    K = 0.3 * rng.standard_normal((m, n))
    X_clean = rng.standard_normal((N, n))
    X_noisy = X_clean + 0.3 * rng.standard_normal((N, n))
    sigma = tau = 0.9 / np.linalg.norm(K, 2)
    umap = UnrolledMap(L, unroll, "linear", steps=FixedSteps(sigma, tau))
    _, terms = _record_layers(umap, K, X_noisy, X_clean, chunk_size=4)
    _, grad = unrolled_loss_grad(
        K,
        X_noisy,
        X_clean,
        n_layers=L,
        unroll=unroll,
        ergodic_weights="linear",
        sigma=sigma,
        tau=tau,
    )
    np.testing.assert_allclose(terms.sum(axis=0), grad, rtol=1e-10, atol=1e-14)


def test_vanishing_in_last_mode_not_in_ergodic():
    # The observation the diagnostics exist for, on a TV-like operator: in
    # last mode the backward signal decays towards layer 1, while ergodic
    # injects the output gradient at every layer.
    rng = np.random.default_rng(3)
    n = 16
    K = 0.5 * np.diff(np.eye(n), axis=0)
    X_clean = np.repeat(rng.uniform(size=(40, 4)), 4, axis=1)
    X_noisy = X_clean + 0.2 * rng.standard_normal(X_clean.shape)
    last = backprop_profile(K, X_noisy, X_clean, n_layers=60)
    ergo = backprop_profile(K, X_noisy, X_clean, n_layers=60, unroll="ergodic")
    assert last["delta_P_norm"][0] < last["delta_P_norm"][-1] / 10
    assert ergo["delta_P_norm"][0] > ergo["delta_P_norm"][-1]


def test_estimator_profile_uses_scale():
    rng = np.random.default_rng(4)
    X_clean = np.repeat(rng.uniform(size=(60, 3)), 3, axis=1)
    X_noisy = X_clean + 0.1 * rng.standard_normal(X_clean.shape)
    est = AnalysisOperatorLearner(n_layers=6, max_iter=2, random_state=0)
    est.fit(X_noisy, X_clean)
    prof = estimator_backprop_profile(est, 10.0 * X_noisy, 10.0 * X_clean)
    s = est.scale_
    ref = backprop_profile(
        est.components_, 10.0 * X_noisy / s, 10.0 * X_clean / s, n_layers=6
    )
    for key in PROFILE_KEYS:
        np.testing.assert_allclose(prof[key], ref[key])


def test_implicit_has_no_profile():
    X = np.ones((3, 4))
    with pytest.raises(ValueError, match="unroll='implicit' has none"):
        backprop_profile(np.eye(4), X, X, n_layers=3, unroll="implicit")
