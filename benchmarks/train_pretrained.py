"""Train small convolutional denoisers on scikit-image's bundled pictures.

These were the shipped models until the Train400 model replaced them; the
sigma = 25 one is the start of that model's training
(``benchmarks/runs/sigma25-48x5/init.npz``).  Only the bundled scikit-image
images ``camera``, ``astronaut`` (gray), ``coins``, ``moon``, ``text``,
``brick``, ``grass``, ``gravel`` and ``page`` are used.  One model per noise
level, in two phases with the same seed (so the same held-out draw of crops
and noise is monitored): the convex l1 model from tuned anisotropic TV, then
the log penalty (reweighted l1 stages) from the l1 model's filters; the phase
with the better PSNR on that draw is saved as ``OUTPUT/sigma{level}.npz``.
Progress (training loss, PSNR on the held-out draw) is printed after every
draw of fresh crops and noise.

    python benchmarks/train_pretrained.py --output /tmp/models  # ~30 minutes
    python benchmarks/train_pretrained.py --output /tmp/models --quick  # < 60 s
    python benchmarks/train_pretrained.py --output /tmp/models --levels 25

Needs scikit-image (``pip install "sklearn-ergo[benchmarks]"``).
"""

import argparse
import pathlib
import time

from sklearn_ergo import ImageDenoiser, save_denoiser

LEVELS = (5, 10, 15, 25, 50)

TRAINING_IMAGES = (
    "camera",
    "astronaut",
    "coins",
    "moon",
    "text",
    "brick",
    "grass",
    "gravel",
    "page",
)

# Chosen by measurement (see benchmarks/DENOISE_RESULTS.md).
SETTINGS = dict(
    n_filters=16,
    patch_size=5,
    n_layers=20,
    unroll="last",
    crop_size=64,
    n_crops=16,
    redraw_every=5,
)
L1_PHASE = dict(penalty="l1", max_iter=80)
LOG_PHASE = dict(penalty="log", n_stages=2, max_iter=60)


def training_images():
    """The training images as gray float64 arrays in [0, 1]."""
    from skimage import data
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    images = []
    for name in TRAINING_IMAGES:
        image = img_as_float(getattr(data, name)())
        images.append(rgb2gray(image) if image.ndim == 3 else image)
    return images


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=LEVELS)
    parser.add_argument("--output", type=pathlib.Path, required=True)
    parser.add_argument("--quick", action="store_true", help="tiny run, < 60 s")
    parser.add_argument("--n-jobs", type=int, default=None)
    args = parser.parse_args(argv)
    settings = dict(SETTINGS)
    phases = [dict(L1_PHASE), dict(LOG_PHASE)]
    if args.quick:
        settings.update(n_filters=4, n_layers=5, crop_size=32, n_crops=2)
        for phase in phases:
            phase.update(max_iter=2)
    images = training_images()
    args.output.mkdir(parents=True, exist_ok=True)
    for level in args.levels:
        start = time.perf_counter()
        init, models = "tv", []
        for phase in phases:
            print(f"== sigma = {level}/255: {settings | phase}", flush=True)
            den = ImageDenoiser(
                noise_std=level / 255.0,
                init=init,
                random_state=level,
                n_jobs=args.n_jobs,
                verbose=1,
                **settings,
                **phase,
            ).fit(images)
            init = den.components_
            models.append(den)
            print(
                f"{phase['penalty']}: validation PSNR {den.validation_psnr_[0]:.2f} -> "
                f"{max(den.validation_psnr_):.2f} dB",
                flush=True,
            )
        # Both phases monitor the same draw (same seed): ship the better one.
        best = max(models, key=lambda m: max(m.validation_psnr_))
        path = args.output / f"sigma{level}.npz"
        save_denoiser(best, path)
        print(
            f"saved the {best.penalty} model to {path} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
