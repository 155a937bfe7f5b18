"""Wall time and PSNR of denoising one 512x512 gray image.

scikit-image's ``immunohistochemistry`` (gray, 512x512, held out from
training) with Gaussian noise 25/255 (fixed seed): the shipped convolutional
operator (:func:`sklearn_ergo.denoise_image`, and with ``fast=True``, each
also without its non-local blend) next to
``denoise_tv_chambolle`` (weight tuned on the training images by
``benchmarks/denoise_table.py``), BM3D when installed and, with ``--model``,
other model files in the same run.  Best of ``--repeat`` runs.

    python benchmarks/bench_denoise.py [--repeat 3] [--quick] [--model PATH ...]
"""

import argparse
import time

import numpy as np

from sklearn_ergo import denoise_image, load_denoiser

TV_WEIGHT = 0.0722  # tuned for sigma = 25/255 by benchmarks/denoise_table.py


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="256x256, one run")
    parser.add_argument(
        "--model", nargs="+", default=[], help="model files to time as well"
    )
    args = parser.parse_args(argv)
    from skimage import data
    from skimage.color import rgb2gray
    from skimage.restoration import denoise_tv_chambolle

    clean = rgb2gray(data.immunohistochemistry())
    if args.quick:
        clean, args.repeat = clean[:256, :256], 1
    sigma = 25 / 255
    noisy = clean + sigma * np.random.default_rng(0).standard_normal(clean.shape)
    methods = {
        # (y, sigma) -> output; TV's weight is the one tuned at 25/255.
        "TV": lambda y, s: denoise_tv_chambolle(y, weight=TV_WEIGHT),
        "ours conv": denoise_image,
        "ours conv, fast": lambda y, s: denoise_image(y, s, fast=True),
        "ours conv, no blend": lambda y, s: denoise_image(y, s, nonlocal_blend=False),
        "ours conv, fast, no blend": lambda y, s: denoise_image(
            y, s, fast=True, nonlocal_blend=False
        ),
    }
    for path in args.model:
        methods[f"ours conv, `{path}`"] = load_denoiser(path).denoise
    try:
        import bm3d

        methods["BM3D"] = lambda y, s: bm3d.bm3d(y, sigma_psd=s)
    except ImportError:
        print("bm3d is not installed: no BM3D row.")
    print(f"{clean.shape[0]}x{clean.shape[1]} image, sigma = 25/255\n")
    print("| method | PSNR (dB) | seconds |\n|---|---|---|")
    for name, fn in methods.items():
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            out = fn(noisy, sigma)
            times.append(time.perf_counter() - start)
        psnr = 10 * np.log10(1 / np.mean((np.clip(out, 0, 1) - clean) ** 2))
        print(f"| {name} | {psnr:.2f} | {min(times):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
