import numpy as np
import pytest
from scipy.optimize import minimize

from sklearn_ergo._chambolle_pock import backward, forward
from sklearn_ergo._operators import DenseOperator
from sklearn_ergo._penalties import L1, Huber
from sklearn_ergo._steps import constant_steps
from sklearn_ergo._unrolled_map import output_weights


def textbook_chambolle_pock(K, x_noisy, F, sigma, tau, n_layers):
    """Chambolle-Pock on x itself (not the residual), one sample, written plainly."""
    x = x_noisy.copy()
    x_bar = x.copy()
    y = np.zeros(K.shape[0])
    iterates = []
    for _ in range(n_layers):
        y = F.prox_conjugate(y + sigma * K @ x_bar, sigma)
        x_old = x
        x = (x - tau * K.T @ y + tau * x_noisy) / (1 + tau)  # prox of tau G(. - x~)
        x_bar = 2 * x - x_old
        iterates.append(x)
    return np.array(iterates)


@pytest.mark.parametrize("F", [L1(), Huber(0.2)], ids=["l1", "huber"])
@pytest.mark.parametrize("unroll", ["last", "ergodic"])
def test_forward_matches_textbook_iteration(F, unroll):
    rng = np.random.default_rng(1)
    K = rng.standard_normal((7, 5))
    X = rng.standard_normal((4, 5))
    sigma = tau = 0.9 / np.linalg.norm(K, 2)
    L = 12
    alpha = output_weights(L, unroll)
    out, _ = forward(DenseOperator(K), X, constant_steps(sigma, tau, L), F, alpha)
    for i, x in enumerate(X):
        expected = alpha @ textbook_chambolle_pock(K, x, F, sigma, tau, L)
        np.testing.assert_allclose(out[i], expected, rtol=1e-12, atol=1e-12)


def test_forward_converges_to_the_minimiser():
    rng = np.random.default_rng(2)
    K = rng.standard_normal((6, 5))
    x_noisy = rng.standard_normal(5)
    F = Huber(0.1)
    norm = np.linalg.norm(K, 2)
    steps = constant_steps(0.99 / norm, 0.99 / norm, 3000)
    x_cp = forward(
        DenseOperator(K), x_noisy[None], steps, F, output_weights(3000, "last")
    )[0][0]

    def objective(x):
        u = K @ x
        huber = np.where(np.abs(u) <= F.eps, u**2 / (2 * F.eps), np.abs(u) - F.eps / 2)
        return huber.sum() + 0.5 * np.sum((x - x_noisy) ** 2)

    x_ref = minimize(objective, x_noisy, method="BFGS", options={"gtol": 1e-12}).x
    np.testing.assert_allclose(x_cp, x_ref, atol=1e-5)


def test_backward_calls_layer_hook_in_reverse_order():
    rng = np.random.default_rng(3)
    K, X = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    L, F = 6, L1()
    steps = constant_steps(0.5, 0.5 / np.linalg.norm(K, 2) ** 2, L)
    alpha = output_weights(L, "ergodic")
    op = DenseOperator(K)
    out, tape = forward(op, X, steps, F, alpha, record=True)
    seen = []
    backward(
        op,
        X,
        tape,
        steps,
        F,
        alpha,
        out - X,
        on_layer=lambda l, dP, dD: seen.append((l, dP.shape, dD.shape)),
    )
    assert seen == [(l, (5, 3), (5, 4)) for l in range(L, 0, -1)]


def test_record_does_not_change_the_output():
    rng = np.random.default_rng(4)
    K, X = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    steps = constant_steps(0.3, 0.3, 9)
    alpha = output_weights(9, "ergodic", "linear")
    a, _ = forward(DenseOperator(K), X, steps, L1(), alpha)
    b, (R, Y) = forward(DenseOperator(K), X, steps, L1(), alpha, record=True)
    np.testing.assert_array_equal(a, b)
    assert R.shape == (10, 5, 3) and Y.shape == (9, 5, 4)
