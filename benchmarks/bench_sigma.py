"""Noise levels between the shipped ones: which operator, rescaled, works best.

``denoise_image(image, sigma)`` rescales the image so that its noise has the
level ``s`` of a shipped operator, denoises and scales back.  For noise
levels between the shipped ones this script reports the mean PSNR on held-out
images (those of ``benchmarks/denoise_table.py``, 256x256 centre crops)
when the lower and the upper neighbouring operator is used.  Measured (see
benchmarks/DENOISE_RESULTS.md): the upper neighbour is better up to 25, and
between 25 and 50 the log-penalty model of 25 beats the l1 model of 50,
which is the rule of ``denoise_image``.

    python benchmarks/bench_sigma.py [--quick] [--levels 30 40 45]
"""

import argparse

import numpy as np
from denoise_table import held_out_images, psnr

from sklearn_ergo._pretrained import PRETRAINED_LEVELS, pretrained_denoiser


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--levels", type=float, nargs="+", default=(7, 12, 20, 35))
    args = parser.parse_args(argv)
    images = list(held_out_images(128 if args.quick else 256).values())
    levels = (20,) if args.quick else args.levels
    models = {s: pretrained_denoiser(s) for s in PRETRAINED_LEVELS}
    print("| sigma | lower level | upper level |\n|---|---|---|")
    for level in levels:
        lo = max(s for s in PRETRAINED_LEVELS if s < level)
        hi = min(s for s in PRETRAINED_LEVELS if s > level)
        rng = np.random.default_rng(0)
        noisy = [x + level / 255 * rng.standard_normal(x.shape) for x in images]
        scores = {}
        for s in (lo, hi):
            scores[s] = np.mean(
                [
                    psnr(models[s].denoise(y, sigma=level / 255), x)
                    for x, y in zip(images, noisy, strict=True)
                ]
            )
        print(
            f"| {level} | {lo}: {scores[lo]:.2f} dB | {hi}: {scores[hi]:.2f} dB |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
