import numpy as np
import pytest
from conftest import fd_gradient, fd_relative_error

from sklearn_ergo import unrolled_denoise, unrolled_loss_grad
from sklearn_ergo._steps import STEP_FACTOR
from sklearn_ergo._unrolled_map import output_weights

SHAPES = [(3, 5), (5, 5), (8, 5)]  # m < n, m = n, m > n


def make_problem(m, n, seed, n_samples=6):
    rng = np.random.default_rng(seed)
    X_clean = rng.standard_normal((n_samples, n))
    X_noisy = X_clean + 0.5 * rng.standard_normal((n_samples, n))
    K = 0.5 * rng.standard_normal((m, n))
    return K, X_noisy, X_clean, rng


def gradient_error(K, X_noisy, X_clean, rng, **kw):
    """FD relative error of ``unrolled_loss_grad``; the gradient summed over
    chunks of 2 samples."""
    _, grad = unrolled_loss_grad(K, X_noisy, X_clean, chunk_size=2, **kw)

    def loss(K):
        return unrolled_loss_grad(K, X_noisy, X_clean, **kw)[0]

    return fd_relative_error(loss, K, grad, rng)


@pytest.mark.parametrize("shape", SHAPES, ids=["m<n", "m=n", "m>n"])
@pytest.mark.parametrize("n_layers", [1, 2, 7, 50])
@pytest.mark.parametrize("explicit_steps", [True, False], ids=["fixed", "default"])
@pytest.mark.parametrize("penalty", ["l1", "huber"])
@pytest.mark.parametrize("unroll", ["last", "ergodic"])
def test_gradient_matches_finite_differences(
    unroll, penalty, explicit_steps, n_layers, shape
):
    K, X_noisy, X_clean, rng = make_problem(*shape, seed=n_layers)
    kw = dict(n_layers=n_layers, unroll=unroll, penalty=penalty, huber_eps=0.3)
    if explicit_steps:
        kw["sigma"] = 0.9 / np.linalg.norm(K, 2)
        kw["tau"] = 0.8 * kw["sigma"]
    assert gradient_error(K, X_noisy, X_clean, rng, **kw) <= 1e-6


@pytest.mark.parametrize("weights", ["linear", "array"])
@pytest.mark.parametrize("penalty", ["l1", "huber"])
def test_gradient_for_ergodic_weightings(weights, penalty):
    K, X_noisy, X_clean, rng = make_problem(6, 5, seed=11)
    if weights == "array":
        weights = rng.uniform(size=9)
    kw = dict(n_layers=9, unroll="ergodic", ergodic_weights=weights, penalty=penalty)
    assert gradient_error(K, X_noisy, X_clean, rng, **kw) <= 1e-6


def test_full_gradient_entrywise():
    K, X_noisy, X_clean, _ = make_problem(4, 3, seed=5)
    kw = dict(n_layers=7, unroll="ergodic", penalty="huber")
    _, grad = unrolled_loss_grad(K, X_noisy, X_clean, **kw)
    fd = fd_gradient(lambda K: unrolled_loss_grad(K, X_noisy, X_clean, **kw)[0], K)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)


def test_step_rule_dependence_is_part_of_the_gradient():
    # Freezing the default steps at their values gives the same loss but a
    # different gradient: the term from d||K||/dK is what makes it exact.
    K, X_noisy, X_clean, rng = make_problem(5, 5, seed=7)
    step = STEP_FACTOR / np.linalg.norm(K, 2)
    kw = dict(n_layers=5, unroll="last")
    loss, grad = unrolled_loss_grad(K, X_noisy, X_clean, **kw)
    loss_fixed, grad_fixed = unrolled_loss_grad(
        K, X_noisy, X_clean, sigma=step, tau=step, **kw
    )
    assert loss == pytest.approx(loss_fixed, rel=1e-12)
    cosine = (
        np.vdot(grad, grad_fixed) / np.linalg.norm(grad) / np.linalg.norm(grad_fixed)
    )
    assert cosine < 0.999
    assert gradient_error(K, X_noisy, X_clean, rng, **kw) <= 1e-6


def test_loss_is_half_mean_squared_error():
    K, X_noisy, X_clean, _ = make_problem(4, 5, seed=8)
    loss, _ = unrolled_loss_grad(K, X_noisy, X_clean, n_layers=4)
    X_hat = unrolled_denoise(K, X_noisy, n_layers=4)
    assert loss == pytest.approx(0.5 * np.mean(np.sum((X_hat - X_clean) ** 2, axis=1)))


@pytest.mark.parametrize("unroll", ["last", "ergodic"])
def test_chunks_and_jobs_do_not_change_the_result(unroll):
    K, X_noisy, X_clean, _ = make_problem(6, 5, seed=9, n_samples=40)
    kw = dict(n_layers=6, unroll=unroll)
    loss, grad = unrolled_loss_grad(K, X_noisy, X_clean, **kw)
    for extra in ({"chunk_size": 7}, {"chunk_size": 7, "n_jobs": 2}):
        loss_c, grad_c = unrolled_loss_grad(K, X_noisy, X_clean, **kw, **extra)
        assert loss_c == pytest.approx(loss, rel=1e-12)
        np.testing.assert_allclose(grad_c, grad, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(
            unrolled_denoise(K, X_noisy, **kw, **extra),
            unrolled_denoise(K, X_noisy, **kw),
            rtol=1e-12,
        )


def test_float32_stays_float32():
    K, X_noisy, X_clean, _ = make_problem(6, 5, seed=10)
    args = [a.astype(np.float32) for a in (K, X_noisy, X_clean)]
    loss, grad = unrolled_loss_grad(*args, n_layers=5, unroll="ergodic")
    assert grad.dtype == np.float32
    assert unrolled_denoise(args[0], args[1], n_layers=5).dtype == np.float32
    loss64, grad64 = unrolled_loss_grad(
        K, X_noisy, X_clean, n_layers=5, unroll="ergodic"
    )
    np.testing.assert_allclose(grad, grad64, rtol=1e-3, atol=1e-5)


def test_output_weights():
    np.testing.assert_array_equal(output_weights(3, "last"), [0, 0, 1])
    np.testing.assert_allclose(output_weights(4, "ergodic"), 0.25)
    np.testing.assert_allclose(
        output_weights(3, "ergodic", "linear"), [1 / 6, 2 / 6, 3 / 6]
    )
    np.testing.assert_allclose(output_weights(2, "ergodic", [1.0, 3.0]), [0.25, 0.75])


@pytest.mark.parametrize(
    "weights, match",
    [
        ("quadratic", "ergodic_weights must be"),
        ([1.0, 2.0], r"shape \(2,\); expected \(3,\)"),
        ([1.0, -1.0, 1.0], "non-negative"),
        ([0.0, 0.0, 0.0], "not all zero"),
        ([1.0, np.nan, 1.0], "finite"),
    ],
)
def test_output_weights_errors(weights, match):
    with pytest.raises(ValueError, match=match):
        output_weights(3, "ergodic", weights)


def test_invalid_arguments():
    K, X_noisy, X_clean, _ = make_problem(4, 5, seed=12)
    with pytest.raises(ValueError, match="sigma \\* tau \\* \\|\\|K\\|\\|\\^2 < 1"):
        unrolled_loss_grad(K, X_noisy, X_clean, n_layers=3, sigma=1.0, tau=1.0)
    with pytest.raises(ValueError, match="both sigma and tau"):
        unrolled_loss_grad(K, X_noisy, X_clean, n_layers=3, sigma=0.1)
    with pytest.raises(ValueError, match="same shape"):
        unrolled_loss_grad(K, X_noisy, X_clean[:, :4], n_layers=3)
    with pytest.raises(ValueError, match="K has 5 columns but X has 4"):
        unrolled_loss_grad(K, X_noisy[:, :4], X_clean[:, :4], n_layers=3)
    with pytest.raises(ValueError, match="'n_layers' parameter of unrolled_loss"):
        unrolled_loss_grad(K, X_noisy, X_clean, n_layers=0)
    with pytest.raises(ValueError, match="'unroll' parameter of unrolled_loss_grad"):
        unrolled_loss_grad(K, X_noisy, X_clean, n_layers=2, unroll="first")
    with pytest.raises(ValueError, match="non-zero K"):
        unrolled_loss_grad(np.zeros_like(K), X_noisy, X_clean, n_layers=2)
    with pytest.raises(ValueError, match="NaN"):
        unrolled_loss_grad(K, np.full_like(X_noisy, np.nan), X_clean, n_layers=2)
