"""PSNR / SSIM / wall time of image denoisers on held-out gray images.

Held-out images (none is used to train the shipped operators): scikit-learn's
``china`` and ``flower`` (gray), scikit-image's ``chelsea``, ``coffee``,
``rocket`` (gray), ``hubble_deep_field`` and ``immunohistochemistry`` (gray),
each centre-cropped to at most 512x512.  Gaussian noise with a fixed seed at
sigma in {15, 25, 50}/255.  Methods:

- ``noisy``: the input;
- ``TV``: ``skimage.restoration.denoise_tv_chambolle``, weight tuned per sigma
  on the *training* images of the shipped operators;
- ``wavelet``: ``denoise_wavelet`` (BayesShrink, soft, given sigma);
- ``NL-means``: ``denoise_nl_means`` (5x5 patches, 13x13 search, h = 0.8
  sigma, fast mode, given sigma; scikit-image's recommended setting);
- ``BM3D``: ``bm3d.bm3d`` when the ``bm3d`` package is installed;
- ``ours conv``: :func:`sklearn_ergo.denoise_image` (shipped operators);
- ``ours patch``: ``ImageDenoiser("patch")`` trained here on the training
  images (8x8 patches, overlaps averaged).

    python benchmarks/denoise_table.py            # full table (minutes)
    python benchmarks/denoise_table.py --quick    # 2 small crops, sigma 25

Needs scikit-image (``pip install "sklearn-ergo[benchmarks]"``).
"""

import argparse
import time
import warnings

import numpy as np

from sklearn_ergo import ImageDenoiser, denoise_image
from sklearn_ergo.datasets import load_gray_image

SIGMAS = (15, 25, 50)
SEED = 0


def held_out_images(max_size):
    from skimage import data
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    images = {
        "china": load_gray_image("china.jpg"),
        "flower": load_gray_image("flower.jpg"),
    }
    for name in (
        "chelsea",
        "coffee",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
    ):
        image = img_as_float(getattr(data, name)())
        images[name] = rgb2gray(image) if image.ndim == 3 else image
    out = {}
    for name, image in images.items():
        H, W = image.shape
        h, w = min(H, max_size), min(W, max_size)
        a, b = (H - h) // 2, (W - w) // 2
        out[name] = np.ascontiguousarray(image[a : a + h, b : b + w])
    return out


def psnr(x, ref):
    return 10 * np.log10(1.0 / np.mean((np.clip(x, 0, 1) - ref) ** 2))


def tune_tv_weight(sigma, training, weights):
    """The weight of denoise_tv_chambolle with the best mean PSNR on training crops."""
    from skimage.restoration import denoise_tv_chambolle

    rng = np.random.default_rng(SEED + 1)
    noisy = [x + sigma * rng.standard_normal(x.shape) for x in training]
    scores = [
        np.mean(
            [
                psnr(denoise_tv_chambolle(y, weight=w), x)
                for x, y in zip(training, noisy, strict=True)
            ]
        )
        for w in weights
    ]
    return float(weights[int(np.argmax(scores))])


def methods(sigma, tv_weight, patch_model):
    from skimage.restoration import (
        denoise_nl_means,
        denoise_tv_chambolle,
        denoise_wavelet,
    )

    out = {
        "noisy": lambda y: y,
        "TV": lambda y: denoise_tv_chambolle(y, weight=tv_weight),
        "wavelet": lambda y: denoise_wavelet(
            y, sigma=sigma, method="BayesShrink", mode="soft", rescale_sigma=True
        ),
        "NL-means": lambda y: denoise_nl_means(
            y,
            patch_size=5,
            patch_distance=6,
            h=0.8 * sigma,
            sigma=sigma,
            fast_mode=True,
        ),
    }
    try:
        import bm3d

        out["BM3D"] = lambda y: bm3d.bm3d(y, sigma_psd=sigma)
    except ImportError:
        warnings.warn("bm3d is not installed: no BM3D column.", stacklevel=2)
    out["ours conv"] = lambda y: denoise_image(y, sigma)
    if patch_model is not None:
        out["ours patch"] = lambda y: patch_model.denoise(y, sigma=sigma)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="< 60 s smoke run")
    parser.add_argument("--sigmas", type=int, nargs="+", default=SIGMAS)
    parser.add_argument(
        "--methods", nargs="+", help="run only these methods (names as in the table)"
    )
    parser.add_argument(
        "--per-image", action="store_true", help="also print PSNR per image"
    )
    args = parser.parse_args(argv)
    from skimage.metrics import structural_similarity
    from train_pretrained import training_images

    sigmas = (25,) if args.quick else tuple(args.sigmas)
    images = held_out_images(128 if args.quick else 512)
    if args.quick:
        images = dict(list(images.items())[:2])
    training = [x[:256, :256] for x in training_images()]
    if args.quick:
        training = [x[:96, :96] for x in training[:3]]
    weights = np.geomspace(0.02, 0.4, 7 if args.quick else 15)

    rows, per_image = {}, {}
    for level in sigmas:
        sigma = level / 255.0
        tv_weight = tune_tv_weight(sigma, training, weights)
        patch_model = None
        wanted = args.methods or ["ours patch"]
        if "ours patch" in wanted and not args.quick:
            start = time.perf_counter()
            patch_model = ImageDenoiser(
                "patch",
                n_layers=20,
                max_patches=10000,
                max_iter=20,
                noise_std=sigma,
                random_state=SEED,
            ).fit(training_images())
            print(
                f"sigma={level}: patch model trained in "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
        print(
            f"sigma={level}: TV weight {tv_weight:.4f} (tuned on training)", flush=True
        )
        rng = np.random.default_rng(SEED)
        noisy = {n: x + sigma * rng.standard_normal(x.shape) for n, x in images.items()}
        for method, fn in methods(sigma, tv_weight, patch_model).items():
            if args.methods and method not in args.methods:
                continue
            scores = []
            for name, x in images.items():
                start = time.perf_counter()
                out = fn(noisy[name])
                elapsed = time.perf_counter() - start
                ssim = structural_similarity(np.clip(out, 0, 1), x, data_range=1.0)
                scores.append((psnr(out, x), ssim, elapsed))
            rows.setdefault(method, {})[level] = np.mean(scores, axis=0)
            per_image.setdefault(level, {})[method] = [s[0] for s in scores]
            print(
                f"  {method:10s} PSNR {rows[method][level][0]:.2f} dB, SSIM "
                f"{rows[method][level][1]:.3f}, {rows[method][level][2]:.2f} s/image",
                flush=True,
            )

    sizes = sorted({x.shape for x in images.values()})
    print(
        f"\nMean over {len(images)} held-out images ({', '.join(images)}), "
        f"sizes {sizes}; PSNR (dB) / SSIM / seconds per image:\n"
    )
    header = "| method | " + " | ".join(f"σ = {s}" for s in sigmas) + " |"
    print(header)
    print("|---" * (len(sigmas) + 1) + "|")
    for method, by_level in rows.items():
        cells = [
            f"{by_level[s][0]:.2f} / {by_level[s][1]:.3f} / {by_level[s][2]:.2f} s"
            for s in sigmas
        ]
        print(f"| {method} | " + " | ".join(cells) + " |")
    if args.per_image:
        for level, by_method in per_image.items():
            print(f"\nPSNR (dB) per image, σ = {level}:\n")
            print("| method | " + " | ".join(images) + " |")
            print("|---" * (len(images) + 1) + "|")
            for method, values in by_method.items():
                print(f"| {method} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
