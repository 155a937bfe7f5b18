"""Fit cost against the number of samples N and against ``n_jobs``.

One L-BFGS iteration of ``AnalysisOperatorLearner.fit`` is one full-batch
evaluation of the loss and its gradient (one epoch over the N training
pairs), so the script times that evaluation, through the very function
``fit`` calls, for N = 10^3 ... 10^5 and for each ``n_jobs``, interleaved
(best and median of ``--repeat``), together with its peak memory (this
process plus the joblib workers, beyond the data already in memory).  Time
should grow linearly in N (constant time per sample) and memory stay flat
(chunks of bounded size); ``n_jobs=2`` on two idle cores should approach a
2x speed-up.  The CPU time of all processes is reported too: on a machine
whose cores are busy with other work the wall-time speed-up cannot show, but
an unchanged CPU time per epoch shows that the workers add no overhead.
``--fit`` also times complete fits (``max_iter`` L-BFGS iterations, default
TV initialisation).

Data: 8x8 patches of scikit-learn's ``china.jpg`` with Gaussian noise (0.1),
normalised as ``fit`` does; without Pillow, smooth synthetic signals.

Run ``python benchmarks/bench_fit.py`` (N = 1e3, 1e4, 1e5; n_jobs = 1, 2),
``--quick`` (< 60 s), or choose ``--N``, ``--n-jobs``, ``--L``.
"""

import argparse
import os
import sys
import time
from functools import partial

import numpy as np
from _common import (
    best_and_median,
    cpu_seconds,
    machine,
    markdown_table,
    peak_memory_mib,
    timed,
)
from joblib import effective_n_jobs

from sklearn_ergo import AnalysisOperatorLearner
from sklearn_ergo._init import finite_difference_operator
from sklearn_ergo._unrolled_map import UnrolledMap


def make_data(N, n_features=64, seed=0):
    try:
        from sklearn_ergo.datasets import make_noisy_patches

        X, Y = make_noisy_patches("china.jpg", N, random_state=seed)
        source = "china.jpg patches"
    except ImportError:
        rng = np.random.default_rng(seed)
        Y = np.cumsum(rng.standard_normal((N, n_features)), axis=1) / 8
        X = Y + 0.1 * rng.standard_normal(Y.shape)
        source = "synthetic signals"
    scale = np.sqrt(np.mean(X**2))
    return X / scale, Y / scale, source


def epoch(K, X, Y, n_layers, n_jobs):
    """One full-batch loss and gradient, as one L-BFGS iteration of ``fit``."""
    return UnrolledMap(n_layers).loss_grad({"K": K}, X, Y, n_jobs=n_jobs)


def _gemm_rate(seconds=1.0):
    """GFLOP/s of single-threaded solver-sized GEMMs run for ``seconds``."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((512, 112)), rng.standard_normal((112, 64))
    with threadpool_limits(1):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            A @ B
            count += 1
        return count * 2 * A.shape[0] * A.shape[1] * B.shape[1] / seconds / 1e9


def attainable_speedup(n_jobs):
    """Aggregate GEMM throughput of ``n_jobs`` busy processes over one's.

    What the cores actually deliver right now: other programs running on the
    machine, or shared execution units, bring it below ``n_jobs``.
    """
    from joblib import Parallel, delayed

    single = _gemm_rate()
    return (
        sum(Parallel(n_jobs=n_jobs)(delayed(_gemm_rate)() for _ in range(n_jobs)))
        / single
    )


def blas_threads_check(K, N, n_layers, repeat):
    """One epoch with the library's single-threaded chunks vs default BLAS threads.

    Monkeypatches the library's thread limit away to show what it avoids:
    cache-sized GEMMs split over BLAS threads, whose waits are costly when
    the cores are busy.
    """
    import contextlib

    from sklearn_ergo import _parallel

    X, Y, _ = make_data(N)
    single = _parallel.one_blas_thread
    modes = {"1 (library)": single, "default": contextlib.nullcontext}
    times = {name: [] for name in modes}
    order = list(modes.items())
    try:
        for rep in range(repeat):
            for name, limit in order if rep % 2 == 0 else order[::-1]:
                _parallel.one_blas_thread = limit
                times[name].append(timed(partial(epoch, K, X, Y, n_layers, 1))[0])
    finally:
        _parallel.one_blas_thread = single
    rows = [
        [N, name, f"{min(t):.3f} / {np.median(t):.3f}"] for name, t in times.items()
    ]
    return markdown_table(["N", "BLAS threads", "epoch best / median (s)"], rows)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run (< 60 s)")
    p.add_argument("--N", type=int, nargs="+", default=[1000, 10_000, 100_000])
    p.add_argument("--n-jobs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--L", type=int, default=20, help="n_layers (fit's default)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--fit", action="store_true", help="also time complete fits")
    p.add_argument(
        "--blas-threads-check",
        type=int,
        metavar="N",
        help="also time an epoch of N samples with default BLAS threads",
    )
    p.add_argument("--max-iter", type=int, default=5, help="L-BFGS iterations")
    args = p.parse_args(argv)
    if args.quick:
        args.N, args.repeat, args.fit = [1000, 10_000], 2, False
    return args


def main(argv=None):
    args = parse_args(argv)
    print(f"# {machine()}; n_layers = {args.L}; K: 112 x 64 (TV of 8x8 patches)")
    print(f"# command: python {' '.join(sys.argv)}")
    K = 0.1 * finite_difference_operator(64)
    for n_jobs in args.n_jobs:  # start the workers before anything is timed
        epoch(K, *make_data(200)[:2], args.L, n_jobs)
    rows = []
    for N in args.N:
        X, Y, source = make_data(N)
        times = {j: [] for j in args.n_jobs}
        cpu = {j: [] for j in args.n_jobs}
        for rep in range(args.repeat):
            for j in args.n_jobs if rep % 2 == 0 else args.n_jobs[::-1]:
                cpu_before = cpu_seconds()
                times[j].append(timed(partial(epoch, K, X, Y, args.L, j))[0])
                cpu[j].append(cpu_seconds() - cpu_before)
        base = min(times[args.n_jobs[0]])
        base_cpu = np.median(cpu[args.n_jobs[0]])
        for j in args.n_jobs:
            best, med = best_and_median(times[j])
            mem = peak_memory_mib(partial(epoch, K, X, Y, args.L, j), children=True)
            rows.append(
                [
                    N,
                    j,
                    f"{best:.3f} / {med:.3f}",
                    f"{1e6 * best / N:.1f}",
                    f"{base / best:.2f}x",
                    f"{np.median(cpu[j]):.2f} ({base_cpu / np.median(cpu[j]):.2f})",
                    "-" if mem is None else f"{mem:.0f}",
                    f"{X.nbytes * 2 / 2**20:.0f}",
                ]
            )
            print("  " + ", ".join(map(str, rows[-1])), flush=True)
    print(f"\n# data: {source}")
    for j in args.n_jobs[1:]:
        print(
            f"# attainable speed-up of n_jobs={j} now (GEMM throughput of {j} "
            f"busy processes over one): {attainable_speedup(j):.2f}x"
        )
    print()
    header = [
        "N",
        "n_jobs",
        "epoch best / median (s)",
        "us per sample",
        f"speed-up vs n_jobs={args.n_jobs[0]}",
        "CPU s (ratio)",
        "peak MiB (beyond data)",
        "data MiB (X, y)",
    ]
    print(markdown_table(header, rows))
    if args.fit:
        fit_rows = []
        for N in args.N:
            X, Y, _ = make_data(N)
            for j in args.n_jobs:
                est = AnalysisOperatorLearner(
                    n_layers=args.L, max_iter=args.max_iter, tol=0.0, n_jobs=j
                )
                start = time.perf_counter()
                est.fit(X, Y)
                seconds = time.perf_counter() - start
                fit_rows.append([N, j, f"{seconds:.1f}", est.n_iter_])
                print("  " + ", ".join(map(str, fit_rows[-1])), flush=True)
        print()
        print(markdown_table(["N", "n_jobs", "fit (s)", "L-BFGS iterations"], fit_rows))
    if args.blas_threads_check:
        print()
        print(blas_threads_check(K, args.blas_threads_check, args.L, args.repeat))
    print(f"\n# effective CPUs for n_jobs=-1: {effective_n_jobs(-1)}, os: {os.name}")


if __name__ == "__main__":
    main()
