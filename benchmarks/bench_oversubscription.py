"""Time of one gradient with thread workers, with and without the BLAS cap.

Worker threads of one process share its BLAS pool; without a cap each of the
``n_jobs`` workers runs GEMMs on every core.  This times ``unrolled_loss_grad``
under joblib's threading backend with the cap of ``_unrolled._parallel`` and
with a plain ``Parallel`` (the cap removed), and with ``n_jobs=1``.

    python benchmarks/bench_oversubscription.py [--quick]
"""

import argparse
import time

import joblib
import numpy as np

from sklearn_ergo import _unrolled, unrolled_loss_grad
from sklearn_ergo._init import finite_difference_operator


def uncapped(n_jobs):
    return _unrolled.Parallel(n_jobs=n_jobs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5000 samples")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n_samples = 5_000 if args.quick else 20_000
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_samples, 64))
    Y = X + 0.1 * rng.standard_normal(X.shape)
    K = 0.1 * finite_difference_operator(64)
    capped = _unrolled._parallel
    print(f"N = {n_samples}, n = 64, m = 112, L = 10, {joblib.cpu_count()} CPUs")
    for name, factory, n_jobs in [
        (f"threading, n_jobs={args.n_jobs}, capped", capped, args.n_jobs),
        (f"threading, n_jobs={args.n_jobs}, uncapped", uncapped, args.n_jobs),
        ("n_jobs=1", capped, 1),
    ]:
        _unrolled._parallel = factory
        times = []
        with joblib.parallel_config(backend="threading"):
            for _ in range(args.repeats):
                start = time.perf_counter()
                unrolled_loss_grad(K, X, Y, n_layers=10, n_jobs=n_jobs)
                times.append(time.perf_counter() - start)
        print(f"{name:36s} best {min(times):6.2f} s  median {np.median(times):6.2f} s")
    _unrolled._parallel = capped


if __name__ == "__main__":
    main()
