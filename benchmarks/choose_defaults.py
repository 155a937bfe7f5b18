"""Measurements behind the defaults of AnalysisOperatorLearner.

Fits on 8x8 patches of china.jpg (noise std 0.1) and reports the PSNR on
patches of flower.jpg against patch TV with the weight tuned on the training
pairs (the operator the fit starts from), for each unroll mode and L, with
the default solver (L-BFGS, 20 iterations).

    python benchmarks/choose_defaults.py [--n-patches 20000] [--layers 10 20 50]
"""

import argparse
import time
import warnings

from sklearn.exceptions import ConvergenceWarning

from sklearn_ergo import AnalysisOperatorLearner
from sklearn_ergo._demo import tuned_tv_denoise
from sklearn_ergo.datasets import make_noisy_patches, psnr


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-patches", type=int, default=20_000)
    parser.add_argument("--layers", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--unroll", nargs="+", default=["last", "ergodic"])
    parser.add_argument("--max-iter", type=int, default=20)
    args = parser.parse_args()
    X, Y = make_noisy_patches("china.jpg", args.n_patches, random_state=0)
    X_test, Y_test = make_noisy_patches("flower.jpg", 5000, random_state=1)
    print(
        f"{'unroll':8s} {'L':>4s} {'TV dB':>7s} {'learned dB':>10s} {'gain':>6s} "
        f"{'fit s':>6s}"
    )
    for unroll in args.unroll:
        for n_layers in args.layers:
            est = AnalysisOperatorLearner(
                n_layers=n_layers, unroll=unroll, max_iter=args.max_iter, random_state=0
            )
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est.fit(X, Y)
            elapsed = time.perf_counter() - start
            tv_out = tuned_tv_denoise(est, X_test)
            tv_db, ours = psnr(tv_out, Y_test), psnr(est.predict(X_test), Y_test)
            print(
                f"{unroll:8s} {n_layers:4d} {tv_db:7.2f} {ours:10.2f} "
                f"{ours - tv_db:+6.2f} {elapsed:6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
