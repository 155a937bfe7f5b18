"""Every path of the banded convolution kernels against a dense reference.

Paths: tiles of one row, of several rows (below and above the ``p - 1``
halo, which decides whether threads may split an image's adjoint), of whole
images and of several images; one and two threads; float64 and float32;
valid and periodic boundaries; the fused products against the plain ones.
"""

import numpy as np
import pytest

from sklearn_ergo._chambolle_pock import backward, forward
from sklearn_ergo._conv_kernels import TILE_BYTES, make_tiles
from sklearn_ergo._convolutional import BOUNDARIES, ConvolutionalOperator
from sklearn_ergo._penalties import WeightedL1
from sklearn_ergo._steps import ScaledSteps
from sklearn_ergo._unrolled_map import output_weights

N, H, W = 3, 11, 9

# (patch_size, tile_positions, n_threads): with p = 3 the valid grid is 9x7,
# so 7 positions are one row per tile, 14 two rows (= p - 1), 63 one image
# and 200 three images; with p = 5, 5 positions are one row (< p - 1).
PATHS = [
    (3, None, 1),
    (3, 7, 1),
    (3, 7, 2),
    (3, 14, 2),
    (3, 63, 2),
    (3, 200, 2),
    (5, 5, 2),
    (5, 20, 2),
    (1, 9, 2),
]


def dense_matrix(K, p, boundary):
    """The operator as an explicit ``(n_dual, n_primal)`` matrix, loop by loop."""
    m = len(K)
    filters = K.reshape(m, p, p)
    Hg, Wg = (H - p + 1, W - p + 1) if boundary == "valid" else (H, W)
    A = np.zeros((Hg, Wg, m, H, W))
    for i in range(Hg):
        for j in range(Wg):
            for u in range(p):
                for v in range(p):
                    A[i, j, :, (i + u) % H, (j + v) % W] += filters[:, u, v]
    return A.reshape(Hg * Wg * m, H * W)


def dense_weight_grad(Y, X, p, boundary):
    """``d <Y, 𝒦_K X> / d K[k, u, v] = sum_positions Y[., k] x[i + u, j + v]``."""
    Hg, Wg = (H - p + 1, W - p + 1) if boundary == "valid" else (H, W)
    Y = Y.astype(np.float64).reshape(N, Hg, Wg, -1)
    images = X.astype(np.float64).reshape(N, H, W)
    grad = np.zeros((Y.shape[-1], p, p))
    for u in range(p):
        for v in range(p):
            rows, cols = (np.arange(Hg) + u) % H, (np.arange(Wg) + v) % W
            grad[:, u, v] = np.einsum("nijk,nij->k", Y, images[:, rows][:, :, cols])
    return grad.reshape(len(grad), p * p)


def tol(dtype):
    return {"rtol": 1e-12, "atol": 1e-12} if dtype == np.float64 else {"atol": 2e-4}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("p, tile_positions, n_threads", PATHS)
def test_kernels_match_dense_operator(p, tile_positions, n_threads, boundary, dtype):
    rng = np.random.default_rng(p + 10 * n_threads)
    K = rng.standard_normal((4, p * p))
    A = dense_matrix(K, p, boundary)
    op = ConvolutionalOperator(
        K.astype(dtype),
        (H, W),
        p,
        boundary,
        n_threads=n_threads,
        tile_positions=tile_positions,
    )
    X = rng.standard_normal((N, H * W)).astype(dtype)
    Y = rng.standard_normal((N, op.n_dual)).astype(dtype)
    Z = op.apply(X)
    assert Z.dtype == dtype
    np.testing.assert_allclose(Z, X @ A.T, **tol(dtype))
    np.testing.assert_allclose(op.adjoint(Y), Y @ A, **tol(dtype))
    # <Y, 𝒦_K X> is linear in K with gradient weight_grad(Y, X).
    grad = op.weight_grad(Y, X)
    np.testing.assert_allclose(grad, dense_weight_grad(Y, X, p, boundary), **tol(dtype))
    # The adjoint identity <𝒦x, y> = <x, 𝒦^T y> in the working dtype.
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    assert np.vdot(Z.astype(np.float64), Y64) == pytest.approx(
        np.vdot(X64, op.adjoint(Y).astype(np.float64)),
        rel=1e-12 if dtype == np.float64 else 1e-5,
    )


def random_problem(rng, p, tile_positions, n_threads, boundary, dtype):
    """Five random filters, their operator on one tile path, and images."""
    K = rng.standard_normal((5, p * p)).astype(dtype)
    op = ConvolutionalOperator(
        K, (H, W), p, boundary, n_threads=n_threads, tile_positions=tile_positions
    )
    return K, op, rng.standard_normal((N, H * W)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("p, tile_positions, n_threads", PATHS[:1] + PATHS[3:5])
def test_fused_products_match_plain(p, tile_positions, n_threads, boundary, dtype):
    rng = np.random.default_rng(7)
    K, op, X = random_problem(rng, p, tile_positions, n_threads, boundary, dtype)
    Y = rng.standard_normal((N, op.n_dual)).astype(dtype)
    alpha = -0.7
    for beta in [0.0, 1.0, 0.3]:
        out = rng.standard_normal(Y.shape).astype(dtype)
        expected = alpha * op.apply(X) + beta * out
        op.apply_acc(X, out, alpha, beta)
        np.testing.assert_allclose(out, expected, **tol(dtype))
        out = rng.standard_normal(X.shape).astype(dtype)
        expected = alpha * op.adjoint(Y) + beta * out
        op.adjoint_acc(Y, out, alpha, beta)
        np.testing.assert_allclose(out, expected, **tol(dtype))
    out = rng.standard_normal(K.shape).astype(dtype)
    expected = out + alpha * op.weight_grad(Y, X)
    op.weight_grad_acc(Y, X, out, alpha)
    np.testing.assert_allclose(out, expected, **tol(dtype))
    # Outputs BLAS cannot write in place (non-contiguous) go through a copy.
    out = np.zeros((op.n_dual, N), dtype=dtype).T
    op.apply_acc(X, out)
    np.testing.assert_allclose(out, op.apply(X), **tol(dtype))
    out = np.zeros((H * W, N), dtype=dtype).T
    op.adjoint_acc(Y, out, 2.0)
    np.testing.assert_allclose(out, 2.0 * op.adjoint(Y), **tol(dtype))
    out = np.zeros((p * p, 5), dtype=dtype).T
    op.weight_grad_acc(Y, X, out)
    np.testing.assert_allclose(out, op.weight_grad(Y, X), **tol(dtype))


def _clipper(dual):
    """``post`` that clips a range of the flat ``dual`` to [-1, 1]."""
    flat = dual.reshape(-1)

    def clip(start, stop):
        np.clip(flat[start:stop], -1, 1, out=flat[start:stop])

    return clip


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("p, tile_positions, n_threads", PATHS)
def test_dual_step_with_adjoint(p, tile_positions, n_threads, boundary, dtype):
    # The solver's dual step with the primal product fused in: per tile, in
    # two waves where bands of one image overlap (valid), or after (periodic,
    # and a primal BLAS cannot write in place).
    rng = np.random.default_rng(11)
    _, op, X = random_problem(rng, p, tile_positions, n_threads, boundary, dtype)
    prev = rng.standard_normal((N, op.n_dual)).astype(dtype)
    start = rng.standard_normal(X.shape).astype(dtype)
    dual_ref = np.clip(-0.7 * op.apply(X) + 0.3 * prev, -1, 1)
    primal_ref = 0.8 * start + 0.5 * op.adjoint(dual_ref)
    for order in ("C", "F"):
        primal = np.empty_like(start, order=order)
        dual = np.empty_like(prev)
        adjoint = (primal, 0.5, start, 0.8)
        op.apply_update(X, dual, -0.7, 0.3, prev, _clipper(dual), adjoint)
        np.testing.assert_allclose(dual, dual_ref, **tol(dtype))
        np.testing.assert_allclose(primal, primal_ref, **tol(dtype))


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("n_threads", [1, 2])
def test_weight_grad_finite_differences(boundary, n_threads):
    """``f(K) = ||𝒦_K X - T||^2 / 2`` has gradient ``weight_grad(𝒦_K X - T, X)``."""
    rng = np.random.default_rng(3)
    p = 3

    def f(K):
        op = ConvolutionalOperator(
            K, (H, W), p, boundary, n_threads=n_threads, tile_positions=14
        )
        residual = op.apply(X) - T
        return 0.5 * np.vdot(residual, residual), op.weight_grad(residual, X)

    K = rng.standard_normal((4, p * p))
    X = rng.standard_normal((N, H * W))
    T = rng.standard_normal((N, ConvolutionalOperator(K, (H, W), p, boundary).n_dual))
    _, grad = f(K)
    for _ in range(3):
        d = rng.standard_normal(K.shape)
        h = 1e-5
        fd = (f(K + h * d)[0] - f(K - h * d)[0]) / (2 * h)
        assert np.vdot(grad, d) == pytest.approx(fd, rel=1e-8)


def test_tiles_cover_positions_once():
    for n_images, grid, target in [(1, (9, 7), 14), (5, (4, 4), 40), (2, (3, 5), 1)]:
        tiles = make_tiles(n_images, grid, target)
        covered = np.zeros((n_images, *grid), dtype=int)
        start = 0
        for n0, n1, i0, i1 in tiles:
            covered[n0:n1, i0:i1] += 1
            # tiles are consecutive ranges of the position-major dual rows
            assert start == (n0 * grid[0] + i0) * grid[1]
            start += (n1 - n0) * (i1 - i0) * grid[1]
        np.testing.assert_array_equal(covered, 1)


@pytest.mark.parametrize("m, p", [(2, 3), (16, 5), (48, 7)])
def test_default_tiles_hold_the_same_bytes_in_each_dtype(m, p):
    op = ConvolutionalOperator(np.ones((m, p * p)), (40, 40), p)
    tiles = {
        dtype: op._kernel(dtype).tile_positions for dtype in (np.float64, np.float32)
    }
    # A tile's scratch block (p^2 values per position) and dual rows (m).
    for dtype, itemsize in ((np.float64, 8), (np.float32, 4)):
        assert 0 <= TILE_BYTES - tiles[dtype] * itemsize * (p * p + m) < 8 * (p * p + m)
    if (m, p) == (48, 7):
        assert tiles[np.float32] == 8192
    assert (
        ConvolutionalOperator(np.ones((2, 9)), (40, 40), 3, tile_positions=7)
        ._kernel(np.float32)
        .tile_positions
        == 7
    )


@pytest.mark.parametrize("tile_positions", [None, 3000])
def test_an_image_is_transformed_alone_in_any_batch(tile_positions):
    # Tiles of several whole images: each image's products and adds are its
    # own, so a batch changes no bit of an image's float32 output.
    # Filters and crops of training's sizes (a product over several images
    # rounded differently from one image's on an earlier machine's BLAS).
    rng = np.random.default_rng(4)
    K = rng.standard_normal((48, 49)).astype(np.float32)
    shape = (40, 40)
    op = ConvolutionalOperator(K, shape, 7, n_threads=2, tile_positions=tile_positions)
    X = rng.standard_normal((5, shape[0] * shape[1])).astype(np.float32)
    Y = rng.standard_normal((len(X), op.n_dual)).astype(np.float32)
    Z, R = op.apply(X), op.adjoint(Y)
    for k in range(len(X)):
        np.testing.assert_array_equal(op.apply(X[k : k + 1])[0], Z[k])
        np.testing.assert_array_equal(op.adjoint(Y[k : k + 1])[0], R[k])


class _WholeArrays:
    """The operator without ``apply_update``: the solver's whole-array path."""

    def __init__(self, op):
        self.op = op
        self.weights, self.n_dual, self.n_primal = op.weights, op.n_dual, op.n_primal
        self.apply_acc, self.adjoint_acc = op.apply_acc, op.adjoint_acc
        self.weight_grad_acc = op.weight_grad_acc


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("p, tile_positions, n_threads", [(3, 7, 1), (3, 14, 2)])
def test_tilewise_updates_match_whole_arrays(p, tile_positions, n_threads, dtype):
    # The prox, the mask and the bounds' gradient run per tile (several tiles
    # per image here, with per-coordinate bounds): the same elementwise
    # operations as on the whole arrays, up to BLAS axpy rounding the tail of
    # a vector (here: of a tile) without fused multiply-adds.
    rng = np.random.default_rng(3)
    K = (0.3 * rng.standard_normal((4, p * p))).astype(dtype)
    op = ConvolutionalOperator(
        K, (H, W), p, n_threads=n_threads, tile_positions=tile_positions
    )
    X = rng.standard_normal((N, H * W)).astype(dtype)
    g = rng.standard_normal(X.shape).astype(dtype)
    penalty = WeightedL1(rng.uniform(0.2, 1.0, (N, op.n_dual)).astype(dtype))
    steps = ScaledSteps().schedule(op.norm_and_grad()[0], 6, dtype)
    alpha = output_weights(6, "ergodic")
    results = []
    for operator in (op, _WholeArrays(op)):
        out, tape = forward(operator, X, steps, penalty, alpha, record=True)
        bound_grad = np.zeros_like(penalty.bounds)
        grads = backward(
            operator, X, tape, steps, penalty, alpha, g, bound_grad=bound_grad
        )
        results.append((out, *tape, bound_grad, *grads[:2]))
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for tiled, whole in zip(*results, strict=True):
        scale = np.abs(whole).max()
        np.testing.assert_allclose(tiled, whole, rtol=rtol, atol=rtol * scale)
