"""The demo behind ``python -m sklearn_ergo demo``: learn K on natural-image
patches, then denoise patches of another image and compare with tuned patch TV."""

import time
import warnings

from sklearn.exceptions import ConvergenceWarning

from ._init import finite_difference_operator
from ._unrolled import unrolled_denoise


def tuned_tv_denoise(est, X_noisy):
    """Denoise with patch TV at the weight ``est.fit`` tuned (``init="tv"``).

    This is the operator learning started from, with the same L and unroll
    mode: the baseline a fitted ``AnalysisOperatorLearner`` must beat.
    """
    tv = finite_difference_operator(X_noisy.shape[1]) * est.init_weight_
    X_tv = unrolled_denoise(
        tv, X_noisy / est.scale_, n_layers=est.n_layers, unroll=est.unroll
    )
    return X_tv * est.scale_


def run_demo(
    n_patches=20_000,
    n_layers=20,
    max_iter=20,
    noise_std=0.1,
    n_jobs=None,
    random_state=0,
):
    """Fit on china.jpg patches, evaluate on flower.jpg patches; print PSNRs."""
    from ._analysis_operator import AnalysisOperatorLearner
    from .datasets import make_noisy_patches, psnr

    print(
        f"Training pairs: {n_patches} 8x8 patches of china.jpg, noise std {noise_std}"
    )
    X, Y = make_noisy_patches(
        "china.jpg", n_patches, noise_std=noise_std, random_state=random_state
    )
    X_test, Y_test = make_noisy_patches(
        "flower.jpg", 5000, noise_std=noise_std, random_state=random_state + 1
    )
    est = AnalysisOperatorLearner(
        n_layers=n_layers,
        max_iter=max_iter,
        n_jobs=n_jobs,
        random_state=random_state,
        verbose=1,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        # The demo runs a fixed budget of max_iter iterations on purpose.
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, Y)
    elapsed = time.perf_counter() - start
    X_tv = tuned_tv_denoise(est, X_test)
    rows = [
        ("noisy input", psnr(X_test, Y_test)),
        ("patch TV, weight tuned on training pairs", psnr(X_tv, Y_test)),
        ("learned operator", psnr(est.predict(X_test), Y_test)),
    ]
    print(
        f"\nFit: {est.n_iter_} L-BFGS iterations, L = {n_layers}, "
        f"unroll='{est.unroll}', {elapsed:.1f} s"
    )
    print("PSNR on 5000 patches of flower.jpg (never seen in training):")
    for name, value in rows:
        print(f"  {name:<42s} {value:6.2f} dB")
    print(f"  gain of learning over tuned TV: {rows[2][1] - rows[1][1]:+.2f} dB")
    return dict(rows)
