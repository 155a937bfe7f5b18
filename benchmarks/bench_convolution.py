"""Convolution kernels against the GEMM rate of the same flops, before and after.

Times, side by side in one run (interleaved repeats, medians):

* **kernels**: ``apply`` (``𝒦 x``) and ``adjoint`` (``𝒦^T y``) of
  ``ConvolutionalOperator`` (valid boundary) on one 512x512 image and on a
  batch of 64 crops of 64x64, for 16 filters of 5x5 and 48 of 7x7, against
  ``np.dot`` of the im2col shapes ``(positions, p^2) @ (p^2, m)`` into a
  preallocated output (the same ``2 positions p^2 m`` flops, the machine's
  rate for them) and against the implementation of 74a8ed7 (``old``: a whole
  im2col, one matmul; col2im by ``p^2`` strided adds), kept verbatim below;
* **CP layer**: one unrolled Chambolle-Pock layer (apply, dual update,
  adjoint, primal update; :func:`sklearn_ergo._chambolle_pock.forward`
  without tape, averaged over its layers), new and old operator;
* **gradient**: one training gradient,
  ``images_loss_grad`` of the log-penalty ``UnrolledMap`` on 64 crops of 64x64
  with 48 filters of 7x7, 2 stages x 20 layers (forward with tape and
  backward), against the GEMM time of its ``2 S (3 L + 1) + 3 (S - 1)``
  convolution-sized products; ``--old-gradient`` also times the old operator.

Float32 and float64, 1 and 2 threads.  With T threads the old operator and
the GEMM use T BLAS threads; the new operator is timed both ways, ``blas``
(T BLAS threads, tiles in sequence) and ``tiles`` (``n_threads=T`` Python
threads over tiles, one BLAS thread each); the gradient uses ``n_jobs=T``.
``% GEMM`` is the GEMM's time for the same flops over the measured time.
Peak memory is the resident-set growth of one call (``_common``).

Run ``python benchmarks/bench_convolution.py`` (all sections, about 10 min on
2 cores), ``--quick`` for a smoke run, ``--sections kernels layer gradient``
to choose.
"""

import argparse
import functools
import itertools
import os
import time
from functools import partial

import numpy as np
from _common import machine, markdown_table, peak_memory_mib
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits

import sklearn_ergo._convolutional as convolutional_module
from sklearn_ergo._chambolle_pock import forward
from sklearn_ergo._convolutional import (
    ConvolutionalOperator,
    images_loss_grad,
    symbol_norm_bound,
)
from sklearn_ergo._penalties import L1, Log
from sklearn_ergo._steps import AcceleratedSteps
from sklearn_ergo._unrolled_map import UnrolledMap

CASES = [("512x512", 1, (512, 512)), ("64 x 64x64", 64, (64, 64))]
FILTERS = [(16, 5), (48, 7)]
DTYPES = ["float32", "float64"]


class OldConvolution:
    """The valid-boundary operator of 74a8ed7, verbatim (the 'before' column)."""

    def __init__(self, weights, image_shape, patch_size, boundary="valid"):
        H, W = image_shape
        p = patch_size
        self.weights, self.image_shape, self.patch_size = weights, (H, W), p
        self.n_filters = len(weights)
        self._grid = (H - p + 1, W - p + 1)
        self.n_positions = self._grid[0] * self._grid[1]
        self.n_primal, self.n_dual = H * W, self.n_positions * self.n_filters

    def _columns(self, X):
        p = self.patch_size
        images = X.reshape(-1, *self.image_shape)
        windows = sliding_window_view(images, (p, p), axis=(1, 2))
        return windows.reshape(-1, p * p)

    def apply(self, X, out=None):
        N = X.shape[0]
        if out is None:
            out = np.empty((N, self.n_dual), dtype=np.result_type(X, self.weights))
        np.matmul(
            self._columns(X),
            self.weights.T,
            out=out.reshape(N * self.n_positions, self.n_filters),
        )
        return out

    def adjoint(self, Y, out=None):
        N, p = Y.shape[0], self.patch_size
        Hg, Wg = self._grid
        cols = (Y.reshape(N * self.n_positions, self.n_filters) @ self.weights).reshape(
            N, Hg, Wg, p, p
        )
        canvas = np.zeros((N, Hg + p - 1, Wg + p - 1), dtype=cols.dtype)
        for u in range(p):
            for v in range(p):
                canvas[:, u : u + Hg, v : v + Wg] += cols[:, :, :, u, v]
        if out is None:
            return canvas.reshape(N, -1)
        out[...] = canvas.reshape(N, -1)
        return out

    def weight_grad(self, Y, X):
        return Y.reshape(-1, self.n_filters).T @ self._columns(X)

    def norm_and_grad(self):
        return symbol_norm_bound(self.weights, self.patch_size)


def interleaved(functions, repeats):
    """Median seconds of each function, run in turn ``repeats`` times."""
    times = {name: [] for name in functions}
    for fn in functions.values():  # warm-up (scratch buffers, pools)
        fn()
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def gemm_reference(n_positions, p, m, dtype, rng):
    """``np.dot`` of the im2col shapes into a preallocated output."""
    A = rng.standard_normal((n_positions, p * p)).astype(dtype)
    B = rng.standard_normal((p * p, m)).astype(dtype)
    C = np.empty((n_positions, m), dtype=dtype)
    return lambda: np.dot(A, B, out=C)


def blas_limit(threads):
    return threadpool_limits(threads, user_api="blas")


def kernels_section(threads_list, repeats, cases, rng):
    rows = []
    for (label, N, shape), (m, p), dtype, threads in itertools.product(
        cases, FILTERS, DTYPES, threads_list
    ):
        K = (0.1 * rng.standard_normal((m, p * p))).astype(dtype)
        X = rng.standard_normal((N, shape[0] * shape[1])).astype(dtype)
        old = OldConvolution(K, shape, p)
        serial = ConvolutionalOperator(K, shape, p)
        tiled = ConvolutionalOperator(K, shape, p, n_threads=threads)
        Y = rng.standard_normal((N, old.n_dual)).astype(dtype)
        Z, R = np.empty_like(Y), np.empty_like(X)
        gemm = gemm_reference(N * old.n_positions, p, m, dtype, rng)
        with blas_limit(threads):
            t = interleaved(
                {
                    "gemm": gemm,
                    "old apply": partial(old.apply, X, out=Z),
                    "old adjoint": partial(old.adjoint, Y, out=R),
                    "blas apply": partial(serial.apply_acc, X, Z),
                    "blas adjoint": partial(serial.adjoint_acc, Y, R),
                },
                repeats,
            )
        if threads > 1:
            with blas_limit(1):
                t.update(
                    interleaved(
                        {
                            "tiles apply": partial(tiled.apply_acc, X, Z),
                            "tiles adjoint": partial(tiled.adjoint_acc, Y, R),
                        },
                        repeats,
                    )
                )
        flops = 2.0 * N * old.n_positions * p * p * m
        for mode in ["old", "blas"] + (["tiles"] if threads > 1 else []):
            both = t[f"{mode} apply"] + t[f"{mode} adjoint"]
            rows.append(
                [
                    label,
                    f"{m}x{p}²",
                    dtype,
                    threads,
                    "old" if mode == "old" else f"new ({mode})",
                    f"{1e3 * t['gemm']:.2f} ({flops / t['gemm'] / 1e9:.0f})",
                    f"{1e3 * t[f'{mode} apply']:.2f}",
                    f"{1e3 * t[f'{mode} adjoint']:.2f}",
                    f"{2 * flops / both / 1e9:.0f}",
                    f"{100 * 2 * t['gemm'] / both:.0f} %",
                ]
            )
        print(markdown_table(HEADER_KERNELS, rows[-(3 if threads > 1 else 2) :]))
    return rows


HEADER_KERNELS = [
    "images",
    "filters",
    "dtype",
    "threads",
    "kernel",
    "GEMM ms (GFLOP/s)",
    "apply ms",
    "adjoint ms",
    "apply+adjoint GFLOP/s",
    "% GEMM",
]


def layer_section(threads_list, repeats, cases, rng, n_layers=5):
    rows = []
    for (label, N, shape), (m, p), dtype, threads in itertools.product(
        cases, FILTERS, DTYPES, threads_list
    ):
        K = (0.05 * rng.standard_normal((m, p * p))).astype(dtype)
        X = rng.standard_normal((N, shape[0] * shape[1])).astype(dtype)
        norm = symbol_norm_bound(K, p)[0]
        steps = AcceleratedSteps().schedule(norm, n_layers, dtype)
        alpha = np.zeros(n_layers)
        alpha[-1] = 1.0
        ops = {"old": OldConvolution(K, shape, p)}
        ops["new (blas)"] = ConvolutionalOperator(K, shape, p)
        if threads > 1:
            ops["new (tiles)"] = ConvolutionalOperator(K, shape, p, n_threads=threads)
        calls = {
            name: functools.partial(forward, op, X, steps, L1(), alpha)
            for name, op in ops.items()
        }
        gemm = gemm_reference(N * ops["old"].n_positions, p, m, dtype, rng)
        t, peaks = {}, {}
        for name, call in [("gemm", gemm), *calls.items()]:
            blas = 1 if name == "new (tiles)" else threads
            with blas_limit(blas):
                t.update(interleaved({name: call}, repeats))
                if name != "gemm":
                    peaks[name] = peak_memory_mib(call)
        for name in calls:
            per_layer = t[name] / n_layers
            rows.append(
                [
                    label,
                    f"{m}x{p}²",
                    dtype,
                    threads,
                    name,
                    f"{1e3 * per_layer:.1f}",
                    f"{N * shape[0] * shape[1] / per_layer / 1e6:.1f}",
                    f"{100 * 2 * t['gemm'] / per_layer:.0f} %",
                    f"{peaks[name]:.0f}" if peaks[name] is not None else "-",
                ]
            )
        print(markdown_table(HEADER_LAYER, rows[-len(calls) :]))
    return rows


HEADER_LAYER = [
    "images",
    "filters",
    "dtype",
    "threads",
    "operator",
    "ms per layer",
    "Mpixel/s",
    "% GEMM",
    "peak MiB (5 layers)",
]


def gradient_section(threads_list, repeats, rng, old, n_crops=64, crop=64):
    m, p, n_layers, n_stages = 48, 7, 20, 2
    rows = []
    for dtype, threads in ((d, t) for d in DTYPES for t in threads_list):
        clean = rng.uniform(size=(n_crops, crop, crop)).astype(dtype)
        noisy = (clean + 0.1 * rng.standard_normal(clean.shape)).astype(dtype)
        K = 0.05 * rng.standard_normal((m, p * p))
        eps = np.full(m, 0.05)

        umap = UnrolledMap(
            n_layers, penalty=Log(), steps=AcceleratedSteps(), n_stages=n_stages
        )

        params = {"K": K.astype(dtype), "eps": eps}

        def grad(umap=umap, params=params, noisy=noisy, clean=clean, threads=threads):
            return images_loss_grad(umap, params, noisy, clean, n_jobs=threads)

        n_positions = n_crops * (crop - p + 1) ** 2
        pixel_layers = n_crops * crop * crop * n_stages * n_layers
        gemm = gemm_reference(n_positions, p, m, dtype, rng)
        n_products = 2 * n_stages * (3 * n_layers + 1) + 3 * (n_stages - 1)
        variants = {"new": grad}
        if old and threads == 1:
            variants["old"] = _with_old_operator(grad)
        with blas_limit(threads):
            t = interleaved({"gemm": gemm}, 5)
            for name, fn in variants.items():
                t.update(interleaved({name: fn}, repeats))
                peak = peak_memory_mib(fn, children=threads > 1)
                rows.append(
                    [
                        dtype,
                        threads,
                        name,
                        f"{t[name]:.2f}",
                        f"{pixel_layers / t[name] / 1e6:.2f}",
                        f"{100 * n_products * t['gemm'] / t[name]:.0f} %",
                        f"{peak:.0f}" if peak is not None else "-",
                    ]
                )
                print(markdown_table(HEADER_GRADIENT, rows[-1:]))
    return rows


HEADER_GRADIENT = [
    "dtype",
    "threads (n_jobs)",
    "operator",
    "s per gradient",
    "Mpixel-layers/s",
    "% GEMM",
    "peak MiB",
]


def _with_old_operator(fn):
    def run():
        new = convolutional_module.ConvolutionalOperator
        convolutional_module.ConvolutionalOperator = OldConvolution
        try:
            return fn()
        finally:
            convolutional_module.ConvolutionalOperator = new

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--sections", nargs="+", default=["kernels", "layer", "gradient"]
    )
    parser.add_argument("--old-gradient", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = CASES[:1] if args.quick else CASES
    repeats = 2 if args.quick else args.repeats
    # Other programs on the cores slow the whole-image GEMM (memory bound)
    # more than the cache-sized tiles: read every ratio with the load.
    load = "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    print(f"# bench_convolution on {machine()}, {load}\n")
    if "kernels" in args.sections:
        print("## Kernels (valid boundary)\n")
        rows = kernels_section(args.threads, repeats, cases, rng)
        print("\n" + markdown_table(HEADER_KERNELS, rows) + "\n")
    if "layer" in args.sections:
        print("## One Chambolle-Pock layer\n")
        rows = layer_section(args.threads, repeats, cases, rng)
        print("\n" + markdown_table(HEADER_LAYER, rows) + "\n")
    if "gradient" in args.sections:
        print("## One training gradient (64 crops 64x64, 48 filters 7x7, 2 x 20)\n")
        rows = gradient_section(
            args.threads, 1 if args.quick else 3, rng, args.old_gradient
        )
        print("\n" + markdown_table(HEADER_GRADIENT, rows) + "\n")
    print("load average at the end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
