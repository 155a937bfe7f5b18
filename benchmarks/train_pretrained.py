"""Train the pretrained convolutional denoisers shipped in ``sklearn_ergo/pretrained``.

Only the bundled scikit-image images ``camera``, ``astronaut`` (gray),
``coins``, ``moon``, ``text``, ``brick``, ``grass``, ``gravel`` and ``page``
are used.  One operator per noise level, each started from tuned
anisotropic TV; progress (training loss, PSNR on a held-out draw of crops and
noise) is printed after every draw of fresh crops and noise.

    python benchmarks/train_pretrained.py            # all levels, ~minutes
    python benchmarks/train_pretrained.py --quick    # smoke test, < 60 s
    python benchmarks/train_pretrained.py --levels 25 --output /tmp/models

Needs scikit-image (``pip install "sklearn-ergo[benchmarks]"``).
"""

import argparse
import pathlib
import time

from sklearn_ergo import ImageDenoiser
from sklearn_ergo._pretrained import PRETRAINED_LEVELS, save_denoiser

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

# Chosen by measurement (see the README's denoising section).
SETTINGS = dict(
    n_filters=16,
    patch_size=5,
    n_layers=20,
    unroll="last",
    crop_size=64,
    n_crops=16,
    max_iter=40,
    redraw_every=5,
)


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
    parser.add_argument("--levels", type=int, nargs="+", default=PRETRAINED_LEVELS)
    parser.add_argument(
        "--output",
        type=pathlib.Path,
        default=pathlib.Path(__file__).parents[1] / "sklearn_ergo" / "pretrained",
    )
    parser.add_argument("--quick", action="store_true", help="tiny run, < 60 s")
    parser.add_argument("--n-jobs", type=int, default=None)
    args = parser.parse_args(argv)
    settings = dict(SETTINGS)
    if args.quick:
        settings.update(n_filters=4, n_layers=5, crop_size=32, n_crops=2, max_iter=2)
    images = training_images()
    args.output.mkdir(parents=True, exist_ok=True)
    for level in args.levels:
        print(f"== sigma = {level}/255: {settings}", flush=True)
        start = time.perf_counter()
        den = ImageDenoiser(
            noise_std=level / 255.0,
            random_state=level,
            n_jobs=args.n_jobs,
            verbose=1,
            **settings,
        ).fit(images)
        path = args.output / f"sigma{level}.npz"
        save_denoiser(den, path)
        gain = max(den.validation_psnr_) - den.validation_psnr_[0]
        print(
            f"saved {path} ({time.perf_counter() - start:.0f} s): held-out PSNR "
            f"{den.validation_psnr_[0]:.2f} -> {max(den.validation_psnr_):.2f} dB "
            f"({gain:+.2f} dB over the tuned initial operator)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
