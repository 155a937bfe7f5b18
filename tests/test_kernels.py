"""Every kernel path agrees with a plain reference and with finite differences.

Paths: the fused BLAS products of ``DenseOperator`` and the generic fallback
for operators with only ``apply``/``adjoint``/``weight_grad``; float64 and
float32; any chunking and ``n_jobs``.
"""

import numpy as np
import pytest

from sklearn_ergo import _parallel, unrolled_loss_grad
from sklearn_ergo._chambolle_pock import apply_update, backward, forward, fused
from sklearn_ergo._operators import DenseOperator
from sklearn_ergo._parallel import MAX_TAPE_BYTES, TAPE_BYTES, chunk_slices
from sklearn_ergo._penalties import make_penalty
from sklearn_ergo._steps import StepSchedule
from sklearn_ergo._unrolled_map import output_weights


class PlainOperator:
    """Only the basic protocol: exercises the generic fallback of the kernels."""

    def __init__(self, weights):
        self.weights = weights
        self.n_dual, self.n_primal = weights.shape

    def apply(self, X, out=None):
        return np.matmul(X, self.weights.T, out=out)

    def adjoint(self, Y, out=None):
        return np.matmul(Y, self.weights, out=out)

    def weight_grad(self, Y, X):
        return Y.T @ X


def reference_loss_grad(K, X, X_clean, steps, penalty, alpha):
    """docs/math.md sections 3 and 5 transcribed literally (samples as columns)."""
    L = steps.n_layers
    sig, ta, th = steps.sigma, steps.tau, steps.theta
    Xt = X.T
    n, N = Xt.shape
    r = [np.zeros((n, N))]
    ys, xbars = [], [Xt]
    y = np.zeros((K.shape[0], N))
    for l in range(L):
        zD = y + sig[l] * K @ xbars[-1]
        y = np.clip(zD / (1 + sig[l] * penalty.conjugate_l2), -1, 1)
        r.append((r[-1] - ta[l] * K.T @ y) / (1 + ta[l]))
        ys.append(y)
        xbars.append(Xt + r[-1] + th[l] * (r[-1] - r[-2]))
    out = Xt + sum(a * rl for a, rl in zip(alpha, r[1:], strict=True))
    g = (out - X_clean.T) / N
    loss = 0.5 * float(np.sum((out - X_clean.T) ** 2)) / N
    dP, dD = {L + 1: 0 * Xt}, {L + 1: 0 * y, L + 2: 0 * y}
    w = {L + 1: 0 * y, L + 2: 0 * y}
    grad = np.zeros_like(K)
    for l in range(L, 0, -1):
        theta_next = th[l] if l < L else 0.0
        comb = (1 + th[l - 1]) * w[l + 1] - theta_next * w[l + 2]
        rho = alpha[l - 1] * g + dP[l + 1] + K.T @ comb
        dP[l] = rho / (1 + ta[l - 1])
        slope = 1.0 / (1 + sig[l - 1] * penalty.conjugate_l2)
        mask = np.abs(ys[l - 1]) < 1
        dD[l] = slope * mask * (dD[l + 1] - ta[l - 1] * K @ dP[l])
        w[l] = sig[l - 1] * dD[l]
        grad += w[l] @ xbars[l - 1].T - ta[l - 1] * ys[l - 1] @ dP[l].T
    return loss, grad, dP, dD


def problem(m, n, N=11, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X_clean = np.cumsum(rng.standard_normal((N, n)), axis=1) / np.sqrt(n)
    X = X_clean + 0.3 * rng.standard_normal((N, n))
    K = rng.standard_normal((m, n)) / np.sqrt(n)
    return K.astype(dtype), X.astype(dtype), X_clean.astype(dtype)


def varying_steps(K, L, rng):
    s = 0.99 / np.linalg.norm(K, 2)
    return StepSchedule(
        s * rng.uniform(0.3, 1.0, L), s * rng.uniform(0.3, 1.0, L), rng.uniform(0, 1, L)
    )


def kernel_loss_grad(op, X, X_clean, steps, penalty, alpha, on_layer=None):
    X_hat, tape = forward(op, X, steps, penalty, alpha, record=True)
    g = (X_hat - X_clean) / len(X)
    grad_D, grad_P, _, _ = backward(
        op, X, tape, steps, penalty, alpha, g, on_layer=on_layer
    )
    return 0.5 * float(np.sum((X_hat - X_clean) ** 2)) / len(X), grad_D - grad_P


@pytest.mark.parametrize("out_dtype", [np.float64, np.float32])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weight_grad_acc_over_blocks(dtype, out_dtype):
    """Sums over blocks of samples (an uneven last one) add up to ``alpha Y^T X``.

    A float64 ``out`` of float32 products takes the BLAS path, the others
    ``np.dot``; 2500 rows span several blocks of either.
    """
    rng = np.random.default_rng(2)
    K = rng.standard_normal((6, 5)).astype(dtype)
    Y = rng.standard_normal((2500, 6)).astype(dtype)
    X = rng.standard_normal((2500, 5)).astype(dtype)
    start = rng.standard_normal((6, 5)).astype(out_dtype)
    out = start.copy()
    DenseOperator(K).weight_grad_acc(Y, X, out, 0.3)
    expected = start + 0.3 * Y.astype(np.float64).T @ X.astype(np.float64)
    rtol = 1e-12 if dtype == out_dtype == np.float64 else 1e-4
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("make_op", [DenseOperator, PlainOperator])
def test_apply_update_generic(make_op):
    """``out <- alpha K X + beta prev``, ``post``, then ``primal <- c base +
    gamma K^T out``: the path of operators without their own ``apply_update``."""
    rng = np.random.default_rng(4)
    K, X, _ = problem(5, 7)
    prev = rng.standard_normal((len(X), 5))
    base = rng.standard_normal(X.shape)
    dual_ref = np.clip(-0.7 * X @ K.T + 0.3 * prev, -1, 1)
    primal_ref = 0.8 * base + 0.5 * dual_ref @ K
    dual, primal = np.empty_like(prev), np.empty_like(base)

    def clip(start, stop):
        np.clip(dual.reshape(-1)[start:stop], -1, 1, out=dual.reshape(-1)[start:stop])

    op = fused(make_op(K))
    apply_update(op, X, dual, -0.7, 0.3, prev, clip, (primal, 0.5, base, 0.8))
    np.testing.assert_allclose(dual, dual_ref, rtol=1e-13)
    np.testing.assert_allclose(primal, primal_ref, rtol=1e-13)
    # Without prev the product accumulates onto out itself.
    apply_update(op, X, dual, 0.5, 2.0)
    np.testing.assert_allclose(dual, 0.5 * X @ K.T + 2.0 * dual_ref, rtol=1e-13)


@pytest.mark.parametrize("make_op", [DenseOperator, PlainOperator])
@pytest.mark.parametrize("unroll", ["last", "ergodic"])
@pytest.mark.parametrize("penalty", ["l1", "huber"])
@pytest.mark.parametrize("shape", [(5, 7), (9, 6)])
def test_kernels_match_reference(make_op, unroll, penalty, shape):
    """Fused and fallback paths equal the literal recursion, hook included."""
    rng = np.random.default_rng(1)
    K, X, X_clean = problem(*shape)
    L = 6
    steps = varying_steps(K, L, rng)
    pen = make_penalty(penalty, huber_eps=0.05)
    alpha = output_weights(L, unroll, rng.uniform(size=L))
    seen = {}

    def on_layer(l, d_P, d_D):
        seen[l] = (d_P.copy(), d_D.copy())

    loss, grad = kernel_loss_grad(make_op(K), X, X_clean, steps, pen, alpha, on_layer)
    ref_loss, ref_grad, dP, dD = reference_loss_grad(K, X, X_clean, steps, pen, alpha)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-11, atol=1e-14)
    assert sorted(seen) == list(range(1, L + 1))
    for l, (d_P, d_D) in seen.items():
        np.testing.assert_allclose(d_P, dP[l].T, rtol=1e-11, atol=1e-15)
        np.testing.assert_allclose(d_D, dD[l].T, rtol=1e-11, atol=1e-15)


def test_fused_returns_capable_operators_unwrapped():
    op = DenseOperator(np.eye(3))
    assert fused(op) is op
    wrapped = fused(PlainOperator(np.eye(3)))
    assert wrapped is not op and wrapped.n_dual == 3


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_products_non_contiguous_out(dtype):
    """A ``c`` that BLAS cannot update in place is still written back."""
    rng = np.random.default_rng(0)
    K = rng.standard_normal((4, 3)).astype(dtype)
    X = rng.standard_normal((5, 3)).astype(dtype)
    out = np.asfortranarray(rng.standard_normal((5, 4)).astype(dtype))
    expected = 0.5 * X @ K.T + 2.0 * out
    DenseOperator(K).apply_acc(X, out, 0.5, 2.0)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


@pytest.mark.parametrize("unroll", ["last", "ergodic"])
@pytest.mark.parametrize("penalty", ["l1", "huber"])
def test_float32_end_to_end(unroll, penalty):
    """float32 stays float32 in every buffer and agrees with float64."""
    K, X, X_clean = problem(8, 6, N=40)
    kw = dict(n_layers=10, unroll=unroll, penalty=penalty)
    loss64, grad64 = unrolled_loss_grad(K, X, X_clean, **kw)
    args32 = (a.astype(np.float32) for a in (K, X, X_clean))
    loss32, grad32 = unrolled_loss_grad(*args32, **kw)
    assert grad32.dtype == np.float32
    assert loss32 == pytest.approx(loss64, rel=1e-4)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-3, atol=1e-4 * abs(grad64).max())

    op = DenseOperator(K.astype(np.float32))
    steps = StepSchedule(np.full(3, 0.5), np.full(3, 0.5), np.ones(3))
    X32 = X.astype(np.float32)
    alpha = output_weights(3, unroll)
    pen = make_penalty(penalty, huber_eps=0.01)
    X_hat, (R, Y) = forward(op, X32, steps, pen, alpha, record=True)
    assert X_hat.dtype == R.dtype == Y.dtype == np.float32
    out = backward(op, X32, (R, Y), steps, pen, alpha, X32)
    assert out[0].dtype == out[1].dtype == np.float32


def test_chunking_and_jobs_do_not_change_the_result():
    K, X, X_clean = problem(7, 6, N=50)
    kw = dict(n_layers=5, unroll="ergodic")
    loss, grad = unrolled_loss_grad(K, X, X_clean, **kw)
    for extra in ({"chunk_size": 1}, {"chunk_size": 7}, {"n_jobs": 2}):
        other_loss, other_grad = unrolled_loss_grad(K, X, X_clean, **kw, **extra)
        assert other_loss == pytest.approx(loss, rel=1e-12)
        np.testing.assert_allclose(other_grad, grad, rtol=1e-10, atol=1e-15)


def test_default_chunks_bound_the_tape(monkeypatch):
    """Chunks keep the tape bounded, their products large, and every job busy."""
    n_layers, n, m, itemsize = 50, 64, 112, 8
    per_sample = (n_layers + 1) * (n + m) * itemsize
    slices = chunk_slices(100_000, per_sample, n_jobs=2, sample_size=n)
    sizes = [s.stop - s.start for s in slices]
    assert sum(sizes) == 100_000
    assert max(sizes) * per_sample <= TAPE_BYTES
    # 7 chunks by the budget become 8: no job waits for another's last one.
    f32_sample = (n_layers + 1) * (n + n) * 4
    assert -(-4096 // (TAPE_BYTES // f32_sample)) == 7
    assert len(chunk_slices(4096, f32_sample, n_jobs=2, sample_size=n)) == 8
    assert len(chunk_slices(10, per_sample, n_jobs=2, sample_size=n)) == 2
    assert chunk_slices(0, per_sample, n_jobs=2, sample_size=n) == []
    # Whole images have large products on their own: one image per chunk
    # when its tape alone exceeds the budget, never 32 images' tapes.
    image = chunk_slices(5, 3 * TAPE_BYTES, n_jobs=1, sample_size=76 * 76)
    assert [s.stop - s.start for s in image] == [1] * 5
    # Threads of this process (the default n_jobs=None) get chunks of at
    # least 1024 rows of 64 values, above the budget, within the cap.
    threads = (2, {"n_jobs": -1, "backend": "threading"})
    monkeypatch.setattr(_parallel, "workers", lambda n_jobs: threads)
    assert len(chunk_slices(4096, f32_sample, n_jobs=None, sample_size=n)) == 4
    slices = chunk_slices(100_000, per_sample, n_jobs=None, sample_size=n)
    assert TAPE_BYTES < max(s.stop - s.start for s in slices) * per_sample
    assert max(s.stop - s.start for s in slices) * per_sample <= MAX_TAPE_BYTES
    # Images keep one per chunk: their own positions make long passes.
    crops = chunk_slices(16, 15 * 2**20, n_jobs=None, sample_size=72 * 72)
    assert [s.stop - s.start for s in crops] == [1] * 16
