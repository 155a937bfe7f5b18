"""The convolutional analysis operator: the same ``K`` at every patch position.

``K`` has shape ``(m, p * p)``: ``m`` filters of size ``p x p`` stored
row-major.  On an image ``x`` of shape ``(H, W)`` the operator is
``(𝒦 x)_j = K P_j x`` where ``P_j`` extracts the ``p x p`` patch at position
``j`` (``docs/math.md``, section 8).  With the im2col matrix ``C(x)``
(one row per position) ``𝒦 x = C(x) K^T`` is one GEMM and
``𝒦^T Y = col2im(Y K)`` scatters and sums the patch contributions back, so
the operator implements the protocol of
:class:`~sklearn_ergo._operators.DenseOperator` on row-stacked flattened
images and the unrolled forward/backward pass runs on it unchanged.

Boundaries
----------
``"valid"``
    Only patches inside the image: ``(H - p + 1) (W - p + 1)`` positions.
    Border pixels lie in fewer patches and are regularised less; pad the
    image (e.g. symmetrically) before denoising to avoid that.
``"periodic"``
    Patches wrap around: ``H W`` positions.  With the 2x2 forward differences
    this is anisotropic total variation on the torus.

Operator norm
-------------
The step rule needs an upper bound of ``||𝒦||_2`` that holds to the last bit
(``sigma tau ||𝒦||^2 < 1``).  For both boundaries ``||𝒦||_2^2`` is at most
the supremum over frequencies ``w`` of the symbol
``f(w) = sum_k |K_k^(w)|^2`` (a periodic convolution is diagonalised by the
Fourier transform, and a valid one is a restriction of the periodic one on a
larger torus, applied to the zero-padded image).  ``f`` is a trigonometric
polynomial of degree ``p - 1`` per variable, so by Bernstein's inequality its
maximum on an ``M x M`` grid is within a factor ``1 - (p - 1)^2 h^2 / 2``
(``h = 2 pi / M``) of its supremum.  :func:`symbol_norm_bound` returns that
certified bound: it does not depend on the image size (an operator trained on
crops runs with the same steps on a whole image), costs one small FFT instead
of a power iteration whose convergence degrades like ``1 / H^2``, and is an
explicit, exactly differentiable function of ``K``.
"""

import dataclasses
import functools
import math

import numpy as np

from ._conv_kernels import ValidKernels

BOUNDARIES = ("valid", "periodic")

# Grid of the symbol's maximisation: for p = 5 the certified bound exceeds
# the grid maximum by 0.24 % at most (in norm), for p = 7 by 0.55 %.
_SYMBOL_GRID = 256


def symbol_norm_bound(K, patch_size, grid=_SYMBOL_GRID):
    """Certified upper bound of ``||𝒦||_2`` for every image size, and its gradient.

    Parameters
    ----------
    K : ndarray of shape (n_filters, patch_size ** 2)
    patch_size : int
    grid : int
        Size of the frequency grid on which the symbol is maximised.

    Returns
    -------
    bound : float
        ``sqrt(max_grid f / (1 - (p - 1)^2 h^2 / 2))`` with ``h = 2 pi / grid``.
    grad : ndarray of shape K.shape
        Its gradient with respect to ``K`` (float64), exact wherever the grid
        maximiser is unique up to the symmetry ``w -> -w``.
    """
    K = np.asarray(K, dtype=np.float64)
    # Denoising runs the same filters on image after image (and tile after
    # tile): their FFTs cost 5 % of a 256 x 256 image.
    bound, grad = _cached_norm_bound(K.tobytes(), K.shape, patch_size, grid)
    return bound, grad.copy()


@functools.lru_cache(maxsize=16)
def _cached_norm_bound(data, shape, patch_size, grid):
    K = np.frombuffer(data).reshape(shape)
    p = patch_size
    h = 2.0 * np.pi / grid
    slack = 1.0 - 0.5 * (p - 1) ** 2 * h**2
    if slack <= 0.5:
        raise ValueError(f"grid={grid} is too coarse for patch_size={p}.")
    filters = K.reshape(-1, p, p)
    # f(-w) = f(w) for real filters, so the half spectrum holds every value.
    F = np.fft.rfft2(filters, s=(grid, grid))
    f = np.einsum("kij,kij->ij", F.real, F.real) + np.einsum(
        "kij,kij->ij", F.imag, F.imag
    )
    i, j = np.unravel_index(np.argmax(f), f.shape)
    bound = float(np.sqrt(f[i, j] / slack))
    if bound == 0.0:
        return 0.0, np.zeros(K.shape)
    # d f(w) / d K_k[a] = 2 Re(conj(K_k^(w)) exp(-i w.a)) at the maximiser w.
    u, v = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    phase = np.exp(-1j * h * (i * u + j * v)).ravel()
    dfdK = 2.0 * (np.conj(F[:, i, j])[:, None] * phase[None, :]).real
    return bound, dfdK / (2.0 * slack * bound)


class ConvolutionalOperator:
    """``K`` applied at every ``p x p`` patch position of row-stacked images.

    Parameters
    ----------
    weights : ndarray of shape (n_filters, patch_size ** 2)
        The filters, row-major.
    image_shape : tuple of int (height, width)
        Shape of the images; samples are rows of length ``height * width``.
    patch_size : int
    boundary : {"valid", "periodic"}, default="valid"
        See the module docstring.
    n_threads : int, default=1
        Python threads over tiles of the positions (NumPy's products release
        the GIL);
        meant for a single-threaded BLAS, else the two pools oversubscribe
        the cores.
    tile_positions : int, default=None
        Patch positions per tile of the banded kernels (if None, those whose
        scratch block and dual rows fill
        :data:`~sklearn_ergo._conv_kernels.TILE_BYTES`: 8192 in float32 and
        4096 in float64 for 48 filters of 7x7, more for fewer or smaller ones).

    Attributes
    ----------
    n_primal : int
        ``height * width``.
    n_dual : int
        ``n_positions * n_filters``; dual rows hold one ``n_filters``-vector
        per patch position (position-major).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ergo._convolutional import ConvolutionalOperator
    >>> K = np.array([[-1.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 1.0, 0.0]])  # TV
    >>> op = ConvolutionalOperator(K, (4, 5), 2, boundary="periodic")
    >>> op.n_primal, op.n_dual
    (20, 40)
    >>> x = np.arange(20.0).reshape(1, 20)
    >>> float(np.abs(op.apply(x)).sum())  # anisotropic TV on the torus
    182.0
    """

    def __init__(
        self,
        weights,
        image_shape,
        patch_size,
        boundary="valid",
        *,
        n_threads=1,
        tile_positions=None,
    ):
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}.")
        H, W = (int(s) for s in image_shape)
        p = int(patch_size)
        if weights.ndim != 2 or weights.shape[1] != p * p:
            raise ValueError(
                f"weights must have shape (n_filters, {p * p}) for patch_size={p}, "
                f"got {weights.shape}."
            )
        if min(H, W) < p:
            raise ValueError(
                f"Images of shape {(H, W)} are smaller than the {p}x{p} filters."
            )
        self.weights = weights
        self.image_shape = (H, W)
        self.patch_size = p
        self.boundary = boundary
        self.n_threads = int(n_threads)
        self.tile_positions = tile_positions
        self.n_filters = weights.shape[0]
        if boundary == "valid":
            self._grid = (H - p + 1, W - p + 1)
            self._padded_shape = (H, W)
        else:
            # The periodic operator is the valid one on the image wrapped by
            # p - 1 pixels: same positions, the margin folded back by the
            # adjoint.
            self._grid = (H, W)
            self._padded_shape = (H + p - 1, W + p - 1)
        self.n_positions = self._grid[0] * self._grid[1]
        self.n_primal = H * W
        self.n_dual = self.n_positions * self.n_filters
        self._kernels = {}

    def _kernel(self, dtype):
        """The banded kernels with the filters in ``dtype``, built once."""
        dtype = np.dtype(dtype)
        if dtype not in self._kernels:
            self._kernels[dtype] = ValidKernels(
                self.weights.astype(dtype),
                self._padded_shape,
                self.patch_size,
                n_threads=self.n_threads,
                tile_positions=self.tile_positions,
            )
        return self._kernels[dtype]

    def _images(self, X, dtype):
        """Rows of ``X`` as ``(N, H, W)`` images in ``dtype``, wrapped if periodic."""
        images = np.ascontiguousarray(X, dtype=dtype).reshape(-1, *self.image_shape)
        if self.boundary == "periodic":
            w = self.patch_size - 1
            images = np.pad(images, ((0, 0), (0, w), (0, w)), mode="wrap")
        return images

    def apply(self, X, out=None):
        """Return ``𝒦 x`` for every row of ``X``, shape ``(N, n_dual)``."""
        if out is None:
            dtype = np.result_type(X, self.weights)
            out = np.empty((X.shape[0], self.n_dual), dtype=dtype)
        self.apply_acc(X, out)
        return out

    def adjoint(self, Y, out=None):
        """Return ``𝒦^T y`` for every row of ``Y`` (col2im), shape ``(N, n_primal)``."""
        if out is None:
            dtype = np.result_type(Y, self.weights)
            out = np.empty((Y.shape[0], self.n_primal), dtype=dtype)
        self.adjoint_acc(Y, out)
        return out

    def weight_grad(self, Y, X):
        """Gradient of ``sum_i <Y_i, 𝒦 X_i>`` with respect to ``K``: ``Y^T C(X)``."""
        out = np.zeros(self.weights.shape, dtype=np.result_type(Y, X, self.weights))
        self.weight_grad_acc(Y, X, out)
        return out

    # Fused variants (see :mod:`sklearn_ergo._operators`): the step sizes and
    # updates of the solver go into the banded GEMMs of :mod:`._conv_kernels`.
    def apply_acc(self, X, out, alpha=1.0, beta=0.0):
        """``out <- alpha 𝒦 X + beta out`` in place."""
        target = _writable(out)
        if target is not out and beta != 0.0:
            target[...] = out
        kernel = self._kernel(target.dtype)
        kernel.apply_acc(
            self._images(X, target.dtype),
            target.reshape(-1, self.n_filters),
            alpha,
            beta,
        )
        if target is not out:
            out[...] = target

    def apply_update(self, X, out, alpha, beta, prev=None, post=None, adjoint=None):
        """``out <- alpha 𝒦 X + beta prev`` (``prev=None``: ``out``), then ``post``.

        ``post(start, stop)`` is called on every finished range of the flat
        ``out`` (``out.reshape(-1)[start:stop]``).  The copy of ``prev`` and
        ``post`` run per tile of the banded kernels, in cache: the solver's
        dual update and prox then cost no extra pass over the dual (see
        :func:`sklearn_ergo._chambolle_pock.apply_update`).  With
        ``adjoint=(primal, gamma, base, c)``, ``primal <- c base + gamma
        𝒦^T out`` follows, per tile too where the boundary is valid.
        """
        if adjoint is not None:
            # primal <- c base first: the tiles accumulate into it.
            primal, gamma, base, c = adjoint
            np.multiply(base, c, out=primal)
            adjoint = (primal, gamma)
        fused = (
            adjoint is not None
            and self.boundary == "valid"
            and _writable(adjoint[0]) is adjoint[0]
            and adjoint[0].dtype == out.dtype
        )
        if _writable(out) is not out or (adjoint is not None and not fused):
            if prev is not None and beta != 0.0:
                out[...] = prev
            self.apply_acc(X, out, alpha, beta)
            if post is not None:
                post(0, out.size)
            if adjoint is not None:
                self.adjoint_acc(out, adjoint[0], adjoint[1], 1.0)
            return
        m = self.n_filters
        if fused:
            primal, gamma = adjoint
            adjoint = (primal.reshape(-1, *self.image_shape), gamma)
        self._kernel(out.dtype).apply_acc(
            self._images(X, out.dtype),
            out.reshape(-1, m),
            alpha,
            beta,
            prev=None if prev is None else prev.reshape(-1, m),
            post=None if post is None else lambda i, j: post(i * m, j * m),
            adjoint=adjoint,
        )

    def adjoint_acc(self, Y, out, alpha=1.0, beta=0.0):
        """``out <- alpha 𝒦^T Y + beta out`` in place."""
        dtype = out.dtype if out.dtype.kind == "f" else np.result_type(Y, self.weights)
        Y = np.ascontiguousarray(Y, dtype=dtype).reshape(-1, self.n_filters)
        kernel = self._kernel(dtype)
        N = out.shape[0]
        H, W = self.image_shape
        if self.boundary == "valid" and out is _writable(out) and out.dtype == dtype:
            if beta == 0.0:
                out[...] = 0.0
            elif beta != 1.0:
                out *= beta
            kernel.adjoint_add(Y, out.reshape(N, H, W), alpha)
            return
        canvas = np.zeros((N, *self._padded_shape), dtype=dtype)
        kernel.adjoint_add(Y, canvas, alpha)
        p = self.patch_size
        if self.boundary == "periodic" and p > 1:
            # Fold the wrapped margin back onto the pixels it copies.
            canvas[:, : p - 1, :] += canvas[:, H:, :]
            canvas[:, :H, : p - 1] += canvas[:, :H, W:]
        value = canvas[:, :H, :W].reshape(N, H * W)
        if beta == 0.0:
            out[...] = value
        else:
            out *= beta
            out += value

    def weight_grad_acc(self, Y, X, out, alpha=1.0):
        """``out <- out + alpha Y^T C(X)`` in place."""
        target = _writable(out)
        if target is not out:
            target[...] = out
        dtype = target.dtype
        self._kernel(dtype).weight_grad_acc(
            np.ascontiguousarray(Y, dtype=dtype).reshape(-1, self.n_filters),
            self._images(X, dtype),
            target,
            alpha,
        )
        if target is not out:
            out[...] = target

    def norm_and_grad(self):
        """Certified upper bound of ``||𝒦||_2`` and its gradient in ``K``.

        See :func:`symbol_norm_bound`; the same bound for every image size.
        """
        return symbol_norm_bound(self.weights, self.patch_size)


def _writable(out):
    """``out`` if BLAS can write into it in place, else a float64 stand-in."""
    if out.flags.c_contiguous and out.dtype in (np.float32, np.float64):
        return out
    return np.empty(out.shape, dtype=np.result_type(out.dtype, np.float32))


def pad_images(images, patch_size, times=1):
    """Symmetric padding by ``times (p - 1)`` on each side of ``(N, H, W)`` images.

    With ``p - 1``, border pixels lie in as many patches as interior ones
    under the valid convolution; training crops are padded so.
    """
    w = times * (patch_size - 1)
    return np.pad(images, ((0, 0), (w, w), (w, w)), mode="symmetric")


def patch_size_of(K):
    """Side ``p`` of the square filters in the rows of ``K`` (or ``K_s``)."""
    return math.isqrt(np.shape(K)[-1])


def on_images(umap, shape, patch_size):
    """``umap`` with the convolutional operator for images of ``shape``."""
    operator = functools.partial(
        ConvolutionalOperator, image_shape=shape, patch_size=patch_size
    )
    return dataclasses.replace(umap, operator=operator)


def images_loss_grad(
    umap, params, noisy, clean, *, border=0, n_jobs=None, stages_fixed=False
):
    """:meth:`UnrolledMap.loss_grad` on ``(N, H, W)`` images (already padded).

    The loss is ``(1 / N) sum_i ||x^_i - x_i||^2 / 2`` over the pixels more
    than ``border`` pixels from the edge: with ``border`` the padding of
    :func:`pad_images`, the pixels that :func:`denoise_images` returns.  The
    padding's mirrored noise is not independent, and its errors would
    otherwise weigh as much as the interior's on small crops.
    ``stages_fixed``: see :meth:`UnrolledMap.loss_grad`.
    """
    N, H, W = noisy.shape
    umap = on_images(umap, (H, W), patch_size_of(params["K"]))
    weights = None
    if border:
        weights = np.zeros((H, W), dtype=noisy.dtype)
        weights[border : H - border, border : W - border] = 1.0
        weights = weights.ravel()
    return umap.loss_grad(
        params,
        noisy.reshape(N, H * W),
        clean.reshape(N, H * W),
        loss_weights=weights,
        n_jobs=n_jobs,
        stages_fixed=stages_fixed,
    )


#: Whole images are padded by ``DENOISE_PADDING (p - 1)`` pixels: the
#: unrolled map carries information further than one patch, and a border
#: pixel then sees more mirrored image.  On Set12, 2 (p - 1) gave the 5x5
#: model +0.012 / +0.019 / +0.026 dB at sigma 15 / 25 / 50 over p - 1, and
#: 3 (p - 1) at most 0.002 dB more; the shipped 7x7 model +0.011 dB at
#: sigma 25, and nothing more (``benchmarks/bench_padding.py``).
DENOISE_PADDING = 2


def denoise_images(umap, params, images, *, pad=True, n_jobs=None):
    """Apply ``umap`` to ``(N, H, W)`` images, padded first with ``pad=True``."""
    p = patch_size_of(params["K"])
    w = DENOISE_PADDING * (p - 1) if pad else 0
    if pad:
        images = pad_images(images, p, DENOISE_PADDING)
    N, H, W = images.shape
    out = on_images(umap, (H, W), p).apply(
        params, images.reshape(N, H * W), n_jobs=n_jobs
    )
    return out.reshape(N, H, W)[:, w : H - w, w : W - w]
