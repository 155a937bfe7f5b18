"""Peak memory of a fit against the number of samples: the chunked tape.

The unrolled gradient needs a tape of ``(L + 1) (n + m)`` numbers per sample.
It is computed in chunks of samples (``_unrolled._CHUNK_BYTES`` of tape each),
so the memory a fit needs beyond a few copies of the data should not grow with
N.  Each
measurement runs in a fresh process on synthetic blocky 8x8 patches (noise std
0.1) and reports, for a fit and for one gradient evaluation with the default
chunks and with a single chunk of all samples:

- ``data``: X and y (float64), allocated before the measurement;
- ``traced``: peak of the memory allocated during the call (``tracemalloc``,
  which sees NumPy's buffers), i.e. the memory beyond the input data, and its
  ratio to the data;
- ``peak RSS``: the process's high-water mark (``ru_maxrss``), data included.

    python benchmarks/bench_memory.py            # N = 1e4, 3e4, 1e5 (a few minutes)
    python benchmarks/bench_memory.py --quick    # N = 1e4, 3e4 (under a minute)
"""

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
import warnings

import numpy as np

MIB = 2**20


def blocky_patches(n_samples, seed=0):
    """8x8 patches made of 2x2 constant blocks of 4x4 pixels, with noise."""
    rng = np.random.default_rng(seed)
    blocks = rng.uniform(size=(n_samples, 2, 2))
    X_clean = blocks.repeat(4, axis=1).repeat(4, axis=2).reshape(n_samples, 64)
    return X_clean + 0.1 * rng.standard_normal(X_clean.shape), X_clean


def measure(mode, n_samples, n_layers, max_iter):
    """Run one measurement in this process; return its numbers."""
    from sklearn.exceptions import ConvergenceWarning

    from sklearn_ergo import AnalysisOperatorLearner, unrolled_loss_grad
    from sklearn_ergo._init import finite_difference_operator

    X, Y = blocky_patches(n_samples)
    K = 0.05 * finite_difference_operator(64)
    start = time.perf_counter()
    tracemalloc.start()
    if mode == "fit":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            AnalysisOperatorLearner(
                n_layers=n_layers, max_iter=max_iter, random_state=0
            ).fit(X, Y)
    else:
        chunk_size = n_samples if mode == "grad, 1 chunk" else None
        unrolled_loss_grad(K, X, Y, n_layers=n_layers, chunk_size=chunk_size)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "mode": mode,
        "n_samples": n_samples,
        "data": (X.nbytes + Y.nbytes) / MIB,
        "traced": traced / MIB,
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - start,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1e4, 3e4 only")
    parser.add_argument("--n-samples", type=int, nargs="+")
    parser.add_argument("--n-layers", type=int, default=5)
    parser.add_argument("--max-iter", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, n_samples = args.child[0], int(args.child[1])
        result = measure(mode, n_samples, args.n_layers, args.max_iter)
        print(json.dumps(result))
        return
    sizes = args.n_samples or (
        [10_000, 30_000] if args.quick else [10_000, 30_000, 100_000]
    )
    max_iter = 1 if args.quick else args.max_iter
    print(f"L = {args.n_layers}, n = 64, m = 112, max_iter = {max_iter}; memory in MiB")
    print(
        f"{'mode':15s} {'N':>7s} {'data':>7s} {'traced':>8s} {'/ data':>7s} "
        f"{'peak RSS':>9s} {'s':>6s}"
    )
    for mode in ("fit", "grad, chunked", "grad, 1 chunk"):
        for n_samples in sizes:
            command = [sys.executable, __file__, "--child", mode, str(n_samples)]
            command += ["--n-layers", str(args.n_layers), "--max-iter", str(max_iter)]
            output = subprocess.run(command, capture_output=True, text=True, check=True)
            r = json.loads(output.stdout.strip().splitlines()[-1])
            print(
                f"{mode:15s} {n_samples:7d} {r['data']:7.1f} {r['traced']:8.1f} "
                f"{r['traced'] / r['data']:7.2f} {r['rss']:9.1f} {r['seconds']:6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
