"""Banded BLAS kernels of the valid convolution ``𝒦`` and its adjoint.

The operator of :mod:`._convolutional` is ``Z = C(x) K^T`` with the im2col
matrix ``C(x)`` (one row per patch position).  Built whole, ``C`` is
``p^2`` times the image (100 MB for a 512x512 image and 7x7 filters in
float64) and its strided copy costs more than the product; the adjoint's
``col2im`` was ``p^2`` strided adds over an ``(N, H, W, p, p)`` array.
Here the positions are cut into *tiles* (a band of rows of one image, or a
group of whole small images) and each tile runs in a scratch buffer that
stays in cache:

* apply: copy the tile's patches *channel-major*, ``C_t^T`` of shape
  ``(p^2, n_t)`` (``p^2`` copies whose inner loops are image rows, not
  ``p``-long patch rows), then one product writes ``C_t (alpha K)^T`` into
  the position-major dual rows in place (``beta Z_t`` added after, in cache);
* adjoint: one product gives ``T_t = (alpha K)^T Y_t^T`` channel-major, and
  ``col2im`` is ``p^2`` shifted adds of whole rows of ``T_t``;
* weight gradient: ``K += alpha Y_t^T C_t``, one small product per tile;
* the solver's dual step: apply, then its update and prox, then (optionally)
  the adjoint of the finished tile into the primal, all per tile.

Tiles are independent for apply and the weight gradient (one accumulator
per thread), and tiles whose outputs overlap (the ``p - 1`` halo rows of
neighbouring bands of one image) are run in two waves for the adjoint, so
``n_threads`` Python threads share the work.  The products are
``np.dot`` into preallocated outputs (OpenBLAS's GEMM), which releases the
GIL; SciPy's BLAS wrappers hold it (their f2py signatures are not
``threadsafe``): two threads each multiplying 1000x1000 float32 matrices
took 1.1x the time of one thread doing both with ``scipy.linalg.blas.sgemm``,
0.6x with ``np.dot``.

Only the valid boundary is implemented here; the periodic one pads the
image by wrapping and folds the margin back (:mod:`._convolutional`).
"""

import threading

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._operators import axpy
from ._parallel import run_threads, scratch_buffer

#: Bytes of a tile's working set: its scratch ``(p^2, n_t)`` block and its
#: dual rows ``(n_t, m)``, ``n_t (p^2 + m)`` values; 8192 positions in
#: float32 (4096 in float64) for 7x7 and 48 filters, 3.2 MB, within the
#: last-level cache.  Fewer, larger tiles cost less Python per layer: in
#: float32, 8192 positions took a CP layer on a 524x524 image from 36.5 to
#: 34.1 ms (two threads) and ``denoise_image(fast=True)`` from 1.31 to
#: 1.18 s, where in float64 they were 8 % slower than 4096 (one scratch run
#: each).
TILE_BYTES = 8192 * 4 * (7 * 7 + 48)


def default_tile_positions(dtype, patch_size, n_filters):
    """Patch positions per tile in ``dtype``: :data:`TILE_BYTES` of working set."""
    values = patch_size**2 + n_filters
    return max(1, TILE_BYTES // (np.dtype(dtype).itemsize * values))


def make_tiles(n_images, grid, target):
    """Tiles ``(n0, n1, i0, i1)``: images ``n0:n1``, output rows ``i0:i1``.

    Positions are ordered ``(image, row, column)``, so every tile is a
    contiguous range of the dual rows, starting at ``(n0 Hg + i0) Wg``.
    """
    Hg, Wg = grid
    per_image = Hg * Wg
    if per_image >= target:
        rows = max(1, target // Wg)
        return [
            (n, n + 1, i0, min(i0 + rows, Hg))
            for n in range(n_images)
            for i0 in range(0, Hg, rows)
        ]
    images = max(1, target // per_image)
    return [
        (n0, min(n0 + images, n_images), 0, Hg) for n0 in range(0, n_images, images)
    ]


class ValidKernels:
    """Valid convolution of ``(N, H, W)`` images with ``m`` filters ``p x p``.

    Parameters
    ----------
    weights : ndarray of shape (m, p * p), C-contiguous, the working dtype.
    image_shape : (H, W)
    patch_size : int
    n_threads : int
    tile_positions : int, default=None
        :func:`default_tile_positions` of the weights' dtype if None.
    """

    def __init__(
        self,
        weights,
        image_shape,
        patch_size,
        n_threads=1,
        tile_positions=None,
    ):
        self.K = np.ascontiguousarray(weights)
        self.image_shape = image_shape
        self.p = patch_size
        H, W = image_shape
        self.grid = (H - patch_size + 1, W - patch_size + 1)
        self.m = weights.shape[0]
        self.n_threads = n_threads
        self.tile_positions = tile_positions or default_tile_positions(
            self.K.dtype, patch_size, self.m
        )

    def _tiles(self, N):
        return make_tiles(N, self.grid, self.tile_positions)

    def _span(self, tile):
        n0, n1, i0, i1 = tile
        Hg, Wg = self.grid
        start = (n0 * Hg + i0) * Wg
        return start, start + (n1 - n0) * (i1 - i0) * Wg

    def _windows(self, images):
        """All patches as a strided view ``(N, Hg, Wg, p, p)`` (no copy)."""
        return sliding_window_view(images, (self.p, self.p), axis=(1, 2))

    def _patches(self, windows, tile, scratch):
        """The tile's patches channel-major: ``(p^2, n_t)`` in scratch."""
        n0, n1, i0, i1 = tile
        p, Wg = self.p, self.grid[1]
        n_t = (n1 - n0) * (i1 - i0) * Wg
        cols = scratch_buffer(scratch, p * p * n_t, windows.dtype, "cols").reshape(
            p * p, n_t
        )
        np.copyto(
            cols.reshape(p, p, n1 - n0, i1 - i0, Wg),
            windows[n0:n1, i0:i1].transpose(3, 4, 0, 1, 2),
        )
        return cols

    def apply_acc(
        self, images, Z, alpha=1.0, beta=0.0, *, prev=None, post=None, adjoint=None
    ):
        """``Z <- alpha 𝒦 images + beta Z``; ``Z`` of shape (N * n_positions, m).

        With ``prev`` (of ``Z``'s shape) ``Z <- alpha 𝒦 images + beta prev``,
        and ``post(start, stop)`` is called on every finished range of rows of
        ``Z``: both run on one tile at a time, while it is in cache, instead of
        as passes over the whole dual (see ``_chambolle_pock.apply_update``).
        With ``adjoint=(canvas, gamma)``, ``canvas += gamma 𝒦^T Z`` follows,
        also per tile after ``post``: the dual is then read once per layer,
        not twice (``canvas`` must not be ``images``).
        """
        KT = (alpha * self.K).T
        windows = self._windows(images)

        def tile_apply(tile, scratch):
            start, stop = self._span(tile)
            cols = self._patches(windows, tile, scratch)
            Z_t = Z[start:stop]
            if beta == 0.0:
                np.dot(cols.T, KT, out=Z_t)
            elif prev is not None:
                np.dot(cols.T, KT, out=Z_t)
                axpy(prev[start:stop], Z_t, beta)
            else:
                product = scratch_buffer(scratch, Z_t.size, Z.dtype, "product")
                product = np.dot(cols.T, KT, out=product.reshape(Z_t.shape))
                if beta != 1.0:
                    Z_t *= beta
                Z_t += product
            if post is not None:
                post(start, stop)

        if adjoint is None:
            run_threads(tile_apply, self._tiles(len(images)), self.n_threads)
            return
        canvas, gamma = adjoint
        tile_adjoint = self._tile_adjoint(Z, canvas, gamma)

        def tile_both(tile, scratch):
            tile_apply(tile, scratch)
            tile_adjoint(tile, scratch)

        self._run_adjoint(tile_both, len(canvas))

    def adjoint_add(self, Y, canvas, alpha=1.0):
        """``canvas += alpha 𝒦^T Y``; ``canvas`` of shape (N, H, W), C-contiguous."""
        self._run_adjoint(self._tile_adjoint(Y, canvas, alpha), len(canvas))

    def _tile_adjoint(self, Y, canvas, alpha):
        """The tile's share of ``canvas += alpha 𝒦^T Y``, as ``f(tile, scratch)``."""
        if not canvas.flags.c_contiguous:
            # The shifted adds run on flat views of its images.
            raise ValueError("The adjoint's canvas must be C-contiguous.")
        p, Wg = self.p, self.grid[1]
        KT = (alpha * self.K).T

        def tile_adjoint(tile, scratch):
            # Image by image, also in a tile of whole small images: with two
            # 64x64 crops per tile (float32), strided adds of the tile's
            # (images, rows, Wg) blocks took 1.04-1.06x the time (a scratch
            # timing, one thread).
            n0, n1, i0, i1 = tile
            start, per_image = self._span(tile)[0], (i1 - i0) * Wg
            for n in range(n0, n1):
                wide_adjoint(n, i0, i1, Y[start : start + per_image], scratch)
                start += per_image

        def wide_adjoint(n, i0, i1, Y_t, scratch):
            # Within one image, T gets a row per position of rows i0:i1 of
            # the full width W (the p - 1 extra columns from zero rows of Y):
            # each shifted add is then one contiguous add along the image's
            # flat rows instead of rows x Wg strided ones, 2.7x faster for
            # 64x64 crops and 7x7 filters, for 10 % more GEMM flops.
            W = canvas.shape[2]
            rows, m = i1 - i0, Y_t.shape[1]
            n_w = rows * W
            Y_w = scratch_buffer(scratch, n_w * m, Y_t.dtype, "wide").reshape(
                rows, W, m
            )
            Y_w[:, :Wg] = Y_t.reshape(rows, Wg, m)
            Y_w[:, Wg:] = 0.0
            T = scratch_buffer(scratch, p * p * n_w, Y_t.dtype, "cols").reshape(
                p * p, n_w
            )
            np.dot(KT, Y_w.reshape(n_w, m).T, out=T)
            flat = canvas[n].reshape(-1)
            # The zero columns wrap onto the next row of the tile's own
            # (halo) rows, except the last row's, left out: a neighbouring
            # band may be writing those rows in another thread.
            n_add = n_w - (W - Wg)
            for u in range(p):
                for v in range(p):
                    at = (i0 + u) * W + v
                    flat[at : at + n_add] += T[u * p + v, :n_add]

        return tile_adjoint

    def _run_adjoint(self, function, n_images):
        """``run_threads`` for tiles adding into the canvas: overlapping ones apart."""
        p = self.p
        tiles = self._tiles(n_images)
        if len(tiles) > 1 and tiles[0][1] - tiles[0][0] == 1 and self.n_threads > 1:
            # Bands of one image overlap by p - 1 rows: every other band at a
            # time writes disjoint rows (bands are at least p - 1 rows high,
            # else the threads wait on one another through a single wave).
            rows = tiles[0][3] - tiles[0][2]
            if rows >= p - 1:
                run_threads(function, tiles[0::2], self.n_threads)
                run_threads(function, tiles[1::2], self.n_threads)
                return
            run_threads(function, tiles, 1)
            return
        run_threads(function, tiles, self.n_threads)

    def weight_grad_acc(self, Y, images, out, alpha=1.0):
        """``out += alpha Y^T C(images)``; ``out`` of shape (m, p * p)."""
        windows = self._windows(images)

        # One accumulator per thread (``out`` itself in the calling thread).
        accs = {threading.get_ident(): out}

        def tile_grad(tile, scratch):
            start, stop = self._span(tile)
            cols = self._patches(windows, tile, scratch)
            acc = accs.get(threading.get_ident())
            if acc is None:
                acc = accs[threading.get_ident()] = np.zeros(out.shape, out.dtype)
            product = scratch_buffer(scratch, acc.size, acc.dtype, "grad")
            product = np.dot(Y[start:stop].T, cols.T, out=product.reshape(acc.shape))
            axpy(product, acc, alpha)

        run_threads(tile_grad, self._tiles(len(images)), self.n_threads)
        for acc in accs.values():
            if acc is not out:
                out += acc
