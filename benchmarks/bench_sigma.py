"""Noise levels between trained ones: the shipped model against one trained there.

``denoise_image`` serves a noise level with the shipped model of the nearest
level (5, 15, 25 or 50), applied to the image rescaled so that its noise has
that model's level.  At every ``LEVEL`` of ``--tuned LEVEL=MODEL`` this
script compares it with ``MODEL``: a model trained at ``LEVEL`` (fine-tuned
there by ``train_bsd.py --start``, or an earlier model), or another shipped
model rescaled (``sklearn_ergo/pretrained/sigma25.npz``), on the sets of ``--data``
under the protocol of ``denoise_table.py`` (clean / 255 plus Gaussian noise
of std LEVEL/255 with seed 0, not clipped; output clipped to [0, 1]; PSNR
with peak 1; mean over the set).  Issue 12 asks for the shipped model within
0.1 dB of a model trained at the level, at 20 and 35.

    python benchmarks/bench_sigma.py --data DIR \\
        --tuned 20=benchmarks/runs/sigma20-shaped/model.npz \\
                35=benchmarks/runs/sigma35-shaped/model.npz
"""

import argparse
import pathlib

import numpy as np

from sklearn_ergo import denoise_image, load_denoiser
from sklearn_ergo._image_training import benchmark_noise, psnr
from sklearn_ergo.datasets import load_image_folder


def level_and_model(text):
    level, _, path = text.partition("=")
    try:
        return float(level), load_denoiser(path)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=pathlib.Path)
    parser.add_argument("--sets", nargs="+", default=["set12", "bsd68"])
    parser.add_argument(
        "--tuned", nargs="+", required=True, type=level_and_model, metavar="S=MODEL"
    )
    args = parser.parse_args(argv)
    print(
        "| set | sigma | denoise_image | MODEL, rescaled | difference |\n"
        "|---|---|---|---|---|"
    )
    for name in args.sets:
        clean = load_image_folder(args.data / name)
        for level, tuned in args.tuned:
            sigma = level / 255.0
            pairs = list(zip(clean, benchmark_noise(clean, sigma), strict=True))
            shipped = np.mean([psnr(denoise_image(y, sigma), x) for x, y in pairs])
            trained = np.mean([psnr(tuned.denoise(y, sigma), x) for x, y in pairs])
            print(
                f"| {name} | {level:g} | {shipped:.3f} | {trained:.3f} "
                f"| {shipped - trained:+.3f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
