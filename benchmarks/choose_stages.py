"""How many reweighted stages for the log penalty?  Measured on the training images.

Trains the l1 phase of ``benchmarks/train_pretrained.py`` (same settings and
seed), then, for each number of stages S and layers per stage L, starts the
log-penalty model from those filters with its weight and the scale of eps
tuned (the start of the second phase) and prints the PSNR on the held-out
draw of training crops and noise that training monitors.  No held-out test
image is used, so the choice does not peek at the table of
``benchmarks/denoise_table.py``.

    python benchmarks/choose_stages.py                 # sigma = 25, ~8 minutes
    python benchmarks/choose_stages.py --sigma 15
"""

import argparse
import time

from train_pretrained import L1_PHASE, SETTINGS, training_images

from sklearn_ergo import ImageDenoiser

GRID = ((1, 20), (2, 10), (2, 20), (2, 30), (3, 20), (4, 20))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=int, default=25)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args(argv)
    images = training_images()
    common = dict(
        SETTINGS,
        noise_std=args.sigma / 255.0,
        random_state=args.sigma,
        n_jobs=args.n_jobs,
    )
    start = time.perf_counter()
    l1 = ImageDenoiser(**common, **L1_PHASE).fit(images)
    seconds = time.perf_counter() - start
    print(f"l1 phase: {max(l1.validation_psnr_):.2f} dB ({seconds:.0f} s)")
    print("| stages S | layers per stage L | validation PSNR (dB) | seconds |")
    print("|---|---|---|---|")
    for n_stages, n_layers in GRID:
        start = time.perf_counter()
        # max_iter=1: fit tunes the start, then takes one L-BFGS step.
        den = ImageDenoiser(
            **dict(common, n_layers=n_layers),
            penalty="log" if n_stages > 1 else "l1",
            n_stages=n_stages,
            init=l1.components_,
            max_iter=1,
        ).fit(images)
        print(
            f"| {n_stages} | {n_layers} | {den.validation_psnr_[0]:.2f} | "
            f"{time.perf_counter() - start:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
