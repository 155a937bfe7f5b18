"""Linear analysis operators as seen by the unrolled solver.

The solver stores samples as rows (``X`` has shape ``(n_samples, n_primal)``)
and only needs four things from an operator built on the weights ``K``:
``apply`` (``x -> K x``), ``adjoint`` (``y -> K^T y``), ``weight_grad``
(the gradient with respect to ``K`` of ``<Y, apply(X)>``) and its spectral
norm with that norm's gradient.  A dense ``K`` is the case of section 2 of the
maths notes; a convolutional operator (the same ``K`` at every patch position)
implements the same four methods, so one forward/backward pass serves both.

An operator may also offer the fused, in-place variants ``apply_acc``,
``adjoint_acc`` and ``weight_grad_acc`` (``out <- alpha * A(X) + beta * out``):
the solver then folds its step sizes and updates into the matrix products
instead of spending extra passes over memory on them.  Operators without them
get a generic fallback (:func:`sklearn_ergo._chambolle_pock.fused`).  One
that runs threads within a chunk (over tiles of a large image) says how many
in ``n_threads``, and the map's per-stage elementwise work shares them.
"""

import functools

import numpy as np
from scipy.linalg.blas import get_blas_funcs


def scratch(cache, like, *key):
    """Scratch array like ``like`` from the dict ``cache``: one per key, shape, dtype.

    Every layer's products reuse it instead of allocating their own.
    """
    key = (*key, like.shape, like.dtype)
    if key not in cache:
        cache[key] = np.empty_like(like)
    return cache[key]


class DenseOperator:
    """``K`` of shape ``(m, n)`` acting on row-stacked samples ``X @ K.T``.

    Parameters
    ----------
    weights : ndarray of shape (n_components, n_features)
        The analysis operator ``K``.
    """

    def __init__(self, weights):
        self.weights = weights
        self.n_dual, self.n_primal = weights.shape
        self._scratch = {}

    def apply(self, X, out=None):
        """Return ``K x`` for every row ``x`` of ``X``, shape ``(N, m)``."""
        return np.matmul(X, self.weights.T, out=out)

    def adjoint(self, Y, out=None):
        """Return ``K^T y`` for every row ``y`` of ``Y``, shape ``(N, n)``."""
        return np.matmul(Y, self.weights, out=out)

    def weight_grad(self, Y, X):
        """Gradient of ``sum_i <Y_i, K X_i>`` with respect to ``K``: ``Y^T X``."""
        return Y.T @ X

    # Fused variants, with ``np.dot`` into C-contiguous ``out``: it releases
    # the GIL, so chunks in threads run their products at once, where SciPy's
    # BLAS wrappers (not ``threadsafe`` in f2py) hold it.
    def apply_acc(self, X, out, alpha=1.0, beta=0.0):
        """``out <- alpha * X K^T + beta * out`` in place."""
        if not _dot_writes(out, X, self.weights):
            _gemm(alpha, self.weights.T, X.T, beta, out.T, trans_a=1)
            return
        self._product(X, True, out, alpha, beta)

    def adjoint_acc(self, Y, out, alpha=1.0, beta=0.0):
        """``out <- alpha * Y K + beta * out`` in place."""
        if not _dot_writes(out, Y, self.weights):
            _gemm(alpha, self.weights.T, Y.T, beta, out.T)
            return
        self._product(Y, False, out, alpha, beta)

    def weight_grad_acc(self, Y, X, out, alpha=1.0):
        """``out <- out + alpha * Y^T X`` in place."""
        # Summed over blocks of samples: OpenBLAS's GEMM accumulating in
        # place reaches 25-35% more GFLOP/s on these small-output products
        # with an inner dimension of ~128 than with the whole chunk (measured
        # for m, n = 64..112).  np.dot, which cannot accumulate, pays three
        # calls per block: there blocks of 1024 are 10-25% faster than 128.
        if not _dot_writes(out, X, Y):  # e.g. a float64 sum of float32 products
            for start in range(0, len(X), _GEMM_BLOCK):
                stop = start + _GEMM_BLOCK
                _gemm(alpha, X[start:stop].T, Y[start:stop].T, 1.0, out.T, trans_b=1)
            return
        block = self._buffer("grad", out)
        axpy = blas("axpy", out.dtype)
        for start in range(0, len(X), _DOT_BLOCK):
            stop = start + _DOT_BLOCK
            np.dot(Y[start:stop].T, X[start:stop], out=block)
            axpy(block.ravel(), out.ravel(), a=alpha)

    def _product(self, A, transpose, out, alpha, beta):
        """``out <- alpha * A op(K) + beta * out``, ``op(K)`` = ``K^T`` or ``K``."""
        # The small operand carries the scale, not the product; every layer
        # of a constant step rule asks for the same one, made once.
        key = (transpose, alpha, out.dtype)
        B = self._scratch.get(key)
        if B is None:
            B = self.weights.T if transpose else self.weights
            if alpha != 1.0:
                B = B * out.dtype.type(alpha)
            self._scratch[key] = B
        if beta == 0.0:
            np.dot(A, B, out=out)
            return
        product = np.dot(A, B, out=self._buffer("product", out))
        if beta != 1.0:
            out *= beta
        out += product

    def _buffer(self, name, like):
        """Scratch array shaped like ``like``, kept by this operator."""
        return scratch(self._scratch, like, name)

    def norm_and_grad(self):
        """Spectral norm ``||K||_2`` and its gradient ``u v^T`` (top singular pair).

        The gradient exists where the top singular value is simple, which is
        the generic case; at a tie any element of the subdifferential is
        returned.
        """
        # SVD in float64: the step sizes derived from the norm must satisfy
        # sigma * tau * ||K||^2 < 1 to the last bit, whatever the working dtype.
        u, s, vt = np.linalg.svd(self.weights.astype(np.float64, copy=False))
        return float(s[0]), np.outer(u[:, 0], vt[0])


_GEMM_BLOCK, _DOT_BLOCK = 128, 1024


def _dot_writes(out, a, b):
    """Whether ``np.dot`` can write the product of ``a`` and ``b`` into ``out``."""
    return out.flags.c_contiguous and a.dtype == out.dtype and b.dtype == out.dtype


def _gemm(alpha, a, b, beta, c, trans_a=0, trans_b=0):
    """``c <- alpha op(a) op(b) + beta c`` for Fortran-ordered ``c``, in place."""
    res = blas("gemm", c.dtype)(
        alpha, a, b, beta=beta, c=c, trans_a=trans_a, trans_b=trans_b, overwrite_c=True
    )
    if res is not c:
        # f2py worked on a copy (``c`` of another order or dtype): write back.
        c[...] = res


@functools.cache
def blas(name, dtype):
    """The BLAS routine ``name`` for ``dtype`` (float32 or float64), looked up once."""
    return get_blas_funcs(name, dtype=dtype)


def axpy(x, y, a):
    """``y += a * x`` in place: one pass, no temporary.

    BLAS axpy for C-contiguous arrays of one dtype (SciPy's wrapper holds
    the GIL, but for one pass over memory only); ``a == 1`` is NumPy's add,
    which releases it.
    """
    if a == 1.0:
        y += x
    elif x.dtype == y.dtype and x.flags.c_contiguous and y.flags.c_contiguous:
        # ravel: a view of a contiguous array, and cheaper to call than reshape
        blas("axpy", y.dtype)(x.ravel(), y.ravel(), a=a)
    else:
        y += a * x
