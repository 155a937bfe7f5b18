"""Fit a model file's non-local blend on Train400, its width chosen on Set12.

The blend (``sklearn_ergo/_nonlocal.py``) after the model's output is
fitted by least squares on ``--n-train`` Train400 images (every 4th of the
sorted set for 100; noise seed 1) at ``--level``, the images scaled as
``denoise`` scales them for the model, once per ``--etas`` value (with
``--search``, ``--patch`` and ``--bins`` of the blend); the one
with the best Set12 mean PSNR (noise seed 0, outputs mapped back and clipped
to ``[0, 1]``) is written, with the model, to ``--output``.  Set12 is the
validation set: BSD68 is never read here.

    python benchmarks/fit_nonlocal.py --data DATA --level 50 \\
        --model sklearn_ergo/pretrained/sigma50.npz --etas 0.3 0.4 0.5 -o out.npz
"""

import argparse
import pathlib
import time

import numpy as np

from sklearn_ergo import load_denoiser, save_denoiser
from sklearn_ergo._image_training import benchmark_noise, psnr
from sklearn_ergo._nonlocal import fit_nonlocal_blend
from sklearn_ergo.datasets import load_image_folder


def as_seen(den, clean, noisy, sigma):
    """Per image: the model's input, its output and the clean image in the
    model's scale, as ``denoise`` runs it (``ImageDenoiser._as_seen``), and the
    map back ``(a, b)``.
    """
    return [
        (z, den._denoise_once(z[None])[0], c, ab)
        for c, z, ab in den._as_seen(clean, noisy, sigma)
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=pathlib.Path, required=True)
    parser.add_argument("--model", type=pathlib.Path, required=True)
    parser.add_argument(
        "--level", type=float, required=True, help="noise level, 8-bit units"
    )
    parser.add_argument("-o", "--output", type=pathlib.Path, required=True)
    parser.add_argument("--etas", type=float, nargs="+", default=[0.4, 0.5, 0.6])
    parser.add_argument("--search", type=int, default=20)
    parser.add_argument("--patch", type=int, default=5)
    parser.add_argument(
        "--bins", type=int, nargs=2, default=[16, 8], metavar=("WEIGHT", "ENERGY")
    )
    parser.add_argument("--n-train", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.output.exists():
        raise SystemExit(f"{args.output} exists: not overwritten.")

    den = load_denoiser(args.model).set_params(nonlocal_blend=False)
    sigma = args.level / 255
    train = load_image_folder(args.data / "train400")
    train = train[:: len(train) // args.n_train][: args.n_train]
    test = load_image_folder(args.data / "set12")
    t0 = time.perf_counter()
    fit_on = as_seen(den, train, benchmark_noise(train, sigma, 1), sigma)
    scored = as_seen(den, test, benchmark_noise(test, sigma, 0), sigma)

    def set12_psnr(outputs):
        """Mean PSNR of outputs in the model's scale, mapped back and clipped."""
        return np.mean(
            [
                psnr(np.clip((o - b) / a, 0, 1), c)
                for o, (*_, (a, b)), c in zip(outputs, scored, test, strict=True)
            ]
        )

    base = set12_psnr([u for _, u, _, _ in scored])
    print(
        f"{args.model}: level {args.level:g}, Set12 without the blend {base:.3f} dB "
        f"({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    best = None
    for eta in args.etas:
        t0 = time.perf_counter()
        z, u, c, _ = zip(*fit_on, strict=True)
        blend = fit_nonlocal_blend(
            u,
            z,
            c,
            den.noise_std_,
            eta=eta,
            search=args.search,
            patch=args.patch,
            n_weight_bins=args.bins[0],
            n_energy_bins=args.bins[1],
            n_threads=args.threads,
        )
        score = set12_psnr(
            [blend.apply(u, z, den.noise_std_, args.threads) for z, u, _, _ in scored]
        )
        print(
            f"  eta {eta:g}: Set12 {score:.3f} dB ({score - base:+.3f}), "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        if best is None or score > best[0]:
            best = score, blend
    den.nonlocal_ = best[1]
    save_denoiser(den.set_params(nonlocal_blend=True), args.output)
    print(f"{args.output}: eta {best[1].eta:g}, Set12 {best[0] - base:+.3f} dB")


if __name__ == "__main__":
    main()
