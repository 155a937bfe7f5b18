"""Does the convolutional denoiser keep its PSNR when it runs in float32?

For every image of a folder (Set12: the validation set) and every noise
level, the shipped model denoises the same noisy image as ``denoise_image``
gives it to the model (rescaled to the model's level), twice: with the
iterates in float64 and in float32 (the image and the filters cast once, the
whole unrolled solver in float32; what ``denoise_image`` does), and the
script reports the PSNR of both, their largest difference over the images
and the time of each (one thread, best of the two runs of each image).  The
target of issue 11 is a difference within 0.01 dB.

    python benchmarks/bench_float32_denoise.py --data /path/to/set12 \\
        [--levels 15 25 50] [--limit 12]
"""

import argparse
import pathlib
import time

import numpy as np
from threadpoolctl import threadpool_limits

from sklearn_ergo._convolutional import denoise_images
from sklearn_ergo._image_data import as_planes
from sklearn_ergo._image_training import psnr
from sklearn_ergo._pretrained import denoiser_for_level


def load_png(path):
    """A gray PNG as float64 in ``[0, 1]`` (skimage, a benchmark dependency)."""
    from skimage.io import imread
    from skimage.util import img_as_float

    return img_as_float(imread(path, as_gray=True))


def run(model, noisy, sigma, dtype):
    """The model's convolutional forward pass on ``noisy`` in ``dtype``."""
    params = {k: v.astype(dtype) for k, v in model._params().items()}

    def gray(images):
        out = denoise_images(model._map(), params, images.astype(dtype))
        return out.astype(np.float64)

    start = time.perf_counter()
    out = as_planes(noisy).denoise(gray, sigma, model.noise_std_)
    return out, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=pathlib.Path)
    parser.add_argument("--levels", type=int, nargs="+", default=[15, 25, 50])
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    paths = sorted(args.data.glob("*.png"))[: args.limit]
    images = [load_png(path) for path in paths]
    print(
        "| sigma | penalty | mean PSNR float64 | mean PSNR float32 "
        "| max abs difference (dB) | s/image float64 | s/image float32 |"
    )
    print("|---|---|---|---|---|---|---|")
    with threadpool_limits(1, user_api="blas"):
        for level in args.levels:
            model = denoiser_for_level(level)
            rng = np.random.default_rng(level)
            scores = {np.float64: [], np.float32: []}
            times = {np.float64: [], np.float32: []}
            for clean in images:
                noisy = clean + level / 255 * rng.standard_normal(clean.shape)
                for dtype in (np.float64, np.float32):
                    out, t1 = run(model, noisy, level / 255, dtype)
                    _, t2 = run(model, noisy, level / 255, dtype)
                    scores[dtype].append(psnr(out, clean))
                    times[dtype].append(min(t1, t2))
            p64, p32 = np.array(scores[np.float64]), np.array(scores[np.float32])
            t64, t32 = np.mean(times[np.float64]), np.mean(times[np.float32])
            print(
                f"| {level} | {model.penalty} | {p64.mean():.4f} | {p32.mean():.4f} "
                f"| {np.abs(p64 - p32).max():.5f} "
                f"| {t64:.2f} | {t32:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
