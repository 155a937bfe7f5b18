"""Tests of unroll="implicit": the true bilevel gradient of the Huber denoiser."""

import warnings

import numpy as np
import pytest
from conftest import fd_gradient
from sklearn.exceptions import ConvergenceWarning

from sklearn_ergo import AnalysisOperatorLearner, unrolled_denoise, unrolled_loss_grad
from sklearn_ergo._implicit import NEWTON_TOL, solve_lower_level
from sklearn_ergo._operators import DenseOperator

EPS = 0.05


def _problem(m, n, N=5, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    K = 0.5 * rng.standard_normal((m, n))
    X_clean = rng.standard_normal((N, n))
    return K, X_clean + noise * rng.standard_normal((N, n)), X_clean


def _implicit(K, X_noisy, X_clean):
    return unrolled_loss_grad(
        K,
        X_noisy,
        X_clean,
        n_layers=1,
        unroll="implicit",
        penalty="huber",
        huber_eps=EPS,
    )


@pytest.mark.parametrize("m, n", [(4, 6), (6, 6), (9, 5)])
def test_gradient_matches_finite_differences(m, n):
    K, X_noisy, X_clean = _problem(m, n)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        _, grad = _implicit(K, X_noisy, X_clean)
        fd = fd_gradient(lambda K: _implicit(K, X_noisy, X_clean)[0], K)
    # Both regimes of the Huber function are visited at the solution.
    U = (
        unrolled_denoise(
            K, X_noisy, n_layers=1, unroll="implicit", penalty="huber", huber_eps=EPS
        )
        @ K.T
    )
    assert 0 < np.mean(np.abs(U) < EPS) < 1
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max())


def test_solution_is_the_limit_of_chambolle_pock():
    K, X_noisy, _ = _problem(7, 5, seed=1)
    X_hat, n_iter, converged = solve_lower_level(
        DenseOperator(K), X_noisy, EPS, max_iter=100
    )
    assert converged and n_iter < 100
    stationarity = X_hat - X_noisy + np.clip(X_hat @ K.T / EPS, -1, 1) @ K
    bound = NEWTON_TOL * (1 + np.linalg.norm(X_noisy, axis=1))
    assert np.all(np.linalg.norm(stationarity, axis=1) <= bound)
    X_cp = unrolled_denoise(K, X_noisy, n_layers=5000, penalty="huber", huber_eps=EPS)
    np.testing.assert_allclose(X_cp, X_hat, atol=1e-10)


def test_unrolled_gradients_approach_the_implicit_one():
    # Methods must agree: the exact gradient of the unrolled last iterate
    # converges to the implicit gradient (CP converges linearly for Huber),
    # the ergodic one too, but only like 1 / L.
    K, X_noisy, X_clean = _problem(6, 5, seed=2)
    _, g_imp = _implicit(K, X_noisy, X_clean)

    def rel_err(L, unroll):
        _, g = unrolled_loss_grad(
            K,
            X_noisy,
            X_clean,
            n_layers=L,
            unroll=unroll,
            penalty="huber",
            huber_eps=EPS,
        )
        return np.linalg.norm(g - g_imp) / np.linalg.norm(g_imp)

    assert rel_err(3000, "last") < 1e-9
    e1, e2 = rel_err(300, "ergodic"), rel_err(3000, "ergodic")
    assert 5 < e1 / e2 < 20


def test_l1_is_refused():
    K, X_noisy, X_clean = _problem(4, 6)
    with pytest.raises(ValueError, match="penalty='huber'"):
        unrolled_loss_grad(K, X_noisy, X_clean, n_layers=5, unroll="implicit")
    with pytest.raises(ValueError, match="penalty='huber'"):
        AnalysisOperatorLearner(unroll="implicit").fit(X_noisy, X_clean)


def test_unknown_mode_lists_implicit():
    K, X_noisy, X_clean = _problem(4, 6)
    with pytest.raises(ValueError, match="implicit"):
        unrolled_loss_grad(K, X_noisy, X_clean, n_layers=5, unroll="bogus")


def test_estimator_implicit():
    rng = np.random.default_rng(3)
    X_clean = np.repeat(rng.uniform(size=(150, 3)), 3, axis=1)
    X_noisy = X_clean + 0.1 * rng.standard_normal(X_clean.shape)
    est = AnalysisOperatorLearner(
        unroll="implicit", penalty="huber", max_iter=5, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=5
        est.fit(X_noisy, X_clean)
    assert est.loss_curve_[-1] < est.loss_curve_[0]
    s = est.scale_
    expected = s * unrolled_denoise(
        est.components_,
        X_noisy / s,
        n_layers=1,
        unroll="implicit",
        penalty="huber",
    )
    np.testing.assert_allclose(est.predict(X_noisy), expected)
    assert est.predict(X_noisy.astype(np.float32)).dtype == np.float32
