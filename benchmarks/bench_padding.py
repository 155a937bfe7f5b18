"""How far to pad whole images before denoising: PSNR and time per padding.

``denoise_image`` pads every image symmetrically by ``DENOISE_PADDING (p - 1)``
pixels (``sklearn_ergo._convolutional``), runs the model and crops back.  This
script denoises the validation set (Set12: choices are made on it, never on
BSD68) with the padding at each multiple of ``--times`` under the protocol of
``denoise_table.py`` (clean / 255 plus Gaussian noise of std sigma/255, seed 0,
not clipped; output clipped to [0, 1]; PSNR with peak 1; mean over the set),
with the shipped model or ``--model``, and prints the mean PSNR and the
seconds per image (both cores, float32 as ``denoise_image`` runs).

    python benchmarks/bench_padding.py --data DIR [--sigmas 15 25 50] [--times 1 2 3]
"""

import argparse
import pathlib
import time

import numpy as np

import sklearn_ergo._convolutional as convolutional
from sklearn_ergo import load_denoiser
from sklearn_ergo._image_training import benchmark_noise, psnr
from sklearn_ergo._pretrained import denoiser_for_level
from sklearn_ergo.datasets import load_image_folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=pathlib.Path)
    parser.add_argument("--set", default="set12")
    parser.add_argument(
        "--model", help="a model file (default: the shipped one of each σ)"
    )
    parser.add_argument("--sigmas", type=float, nargs="+", default=[15, 25, 50])
    parser.add_argument("--times", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args(argv)
    fixed = None if args.model is None else load_denoiser(args.model)
    clean = load_image_folder(args.data / args.set)
    p = (fixed or denoiser_for_level(args.sigmas[0])).patch_size
    print(f"{args.set}, {len(clean)} images, filters {p}x{p}\n")
    print(
        f"| sigma | padding (pixels) | PSNR (dB) | vs {args.times[0]} (p - 1) "
        "| seconds per image |"
    )
    print("|---|---|---|---|---|")
    default = convolutional.DENOISE_PADDING
    try:
        for level in args.sigmas:
            sigma = level / 255.0
            model = fixed or denoiser_for_level(level)
            pairs = list(zip(clean, benchmark_noise(clean, sigma), strict=True))
            first = None
            for times in args.times:
                convolutional.DENOISE_PADDING = times
                start = time.perf_counter()
                outs = [model.denoise(y, sigma=sigma) for _, y in pairs]
                seconds = (time.perf_counter() - start) / len(pairs)
                score = np.mean(
                    [psnr(o, x) for o, (x, _) in zip(outs, pairs, strict=True)]
                )
                first = score if first is None else first
                print(
                    f"| {level:g} | {times} (p - 1) = {times * (p - 1)} "
                    f"| {score:.3f} | {score - first:+.3f} | {seconds:.2f} |",
                    flush=True,
                )
    finally:
        convolutional.DENOISE_PADDING = default
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
