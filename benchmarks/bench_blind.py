"""Blind denoising: accuracy of the noise-level estimate and the PSNR it costs.

Protocol: each gray image of Set12 and BSD68 (``--data DIR`` holds
``set12/`` and ``bsd68/``) is divided by 255 and Gaussian noise of deviation
sigma/255 is added (not clipped, not quantised; seed fixed per image and
sigma).  For sigma = 5, 10, 15, 25, 35, 50 it reports

- the relative error ``|estimate - sigma| / sigma`` of
  :func:`sklearn_ergo.estimate_sigma` (mean, worst, and the mean signed
  error, i.e. the bias), next to ``skimage.restoration.estimate_sigma``;
- with ``--psnr``, the mean PSNR of :func:`sklearn_ergo.denoise_image` with
  the known sigma and in blind mode (``sigma=None``), and the cost of blind
  mode (known - blind: mean and worst over the images).  PSNR of the output
  clipped to [0, 1].  ``--psnr-every K`` denoises every K-th image only
  (the estimate is still measured on all).

Set12 is for choosing; BSD68 only for reporting.

    python benchmarks/bench_blind.py --data /work/shared/data [--psnr] [-j 2]
        [--sets set12 bsd68] [--max-images N] [--psnr-every K]
"""

import argparse
import pathlib
import time

import numpy as np
from joblib import Parallel, delayed

from sklearn_ergo import denoise_image, estimate_sigma
from sklearn_ergo._image_training import psnr

SIGMAS = (5, 10, 15, 25, 35, 50)


def load(folder, max_images=None):
    from PIL import Image

    paths = sorted(pathlib.Path(folder).glob("*.png"))[:max_images]
    out = {}
    for path in paths:
        with Image.open(path) as img:
            out[path.stem] = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    return out


def noisy_version(clean, sigma, index):
    rng = np.random.default_rng([sigma, index])
    return clean + sigma / 255 * rng.standard_normal(clean.shape)


def one_image(clean, sigma, index, with_psnr):
    from skimage.restoration import estimate_sigma as sk_estimate

    noisy = noisy_version(clean, sigma, index)
    row = {
        "ours": estimate_sigma(noisy) * 255 / sigma - 1,
        "skimage": sk_estimate(noisy) * 255 / sigma - 1,
    }
    if with_psnr:
        row["known"] = psnr(denoise_image(noisy, sigma / 255), clean)
        row["blind"] = psnr(denoise_image(noisy), clean)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with set12/, bsd68/")
    parser.add_argument("--sets", nargs="+", default=("set12", "bsd68"))
    parser.add_argument("--sigmas", type=float, nargs="+", default=SIGMAS)
    parser.add_argument("--psnr", action="store_true", help="also denoise")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--psnr-every", type=int, default=1)
    parser.add_argument("-j", "--n-jobs", type=int, default=1)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for name in args.sets:
        images = list(load(pathlib.Path(args.data) / name, args.max_images).values())
        n_psnr = len(range(0, len(images), args.psnr_every)) if args.psnr else 0
        print(f"\n## {name} ({len(images)} images, PSNR on {n_psnr})\n")
        header = (
            "| sigma | ours: mean / worst abs. rel. error, bias "
            "| skimage: mean / worst, bias |"
        )
        if args.psnr:
            header += " PSNR known / blind (dB) | blind cost: mean / worst (dB) |"
        print(header)
        print("|---" * (header.count("|") - 1) + "|")
        for sigma in args.sigmas:
            rows = Parallel(n_jobs=args.n_jobs)(
                delayed(one_image)(
                    clean, sigma, i, args.psnr and i % args.psnr_every == 0
                )
                for i, clean in enumerate(images)
            )
            cells = [f"{sigma:g}"]
            for key in ("ours", "skimage"):
                err = np.array([r[key] for r in rows])
                cells.append(
                    f"{np.mean(np.abs(err)):.1%} / {np.max(np.abs(err)):.1%}, "
                    f"{np.mean(err):+.1%}"
                )
            if args.psnr:
                known = np.array([r["known"] for r in rows if "known" in r])
                blind = np.array([r["blind"] for r in rows if "blind" in r])
                cost = known - blind
                cells.append(f"{known.mean():.2f} / {blind.mean():.2f}")
                cells.append(f"{cost.mean():+.3f} / {cost.max():+.3f}")
            print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
