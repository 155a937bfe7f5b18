"""Probe: how much a non-local estimate blended into the shipped output adds.

A measurement for the Set12 gap to BM3D that led to the package's non-local
blend (``sklearn_ergo/_nonlocal.py``, which fits coefficients per class of
pixel instead of one ``mu``); the gap is mostly images of repeated texture
(``DENOISE_RESULTS.md``, "Where Set12 is lost to BM3D"). The shipped
denoiser's output ``u`` without its blend is the *pilot*: the non-local means
of the noisy image ``x~`` with weights ``exp(-d_ij / (eta sigma)^2)``,
``d_ij`` the mean squared difference of the pilot's ``patch x patch`` patches
around pixels ``i`` and ``j`` (``j`` within ``search`` pixels of ``i``),
gives ``y``; the blend ``u + mu (y - u)`` is scored for each ``eta``:

* ``mu`` fitted by least squares on ``--n-train`` Train400 images (noise
  seed 1), then scored on the set: what a model trained on Train400 gets;
* the best ``mu`` of a grid on the set itself: an upper bound, chosen on
  the images it is scored on.

With ``--wiener`` (needs the ``bm3d`` package), BM3D's collaborative Wiener
stage with the pilot as its estimate replaces ``y``.

    python benchmarks/probe_nonlocal.py --data DIR --sigmas 15 25 50
"""

import argparse
import pathlib

import numpy as np

from sklearn_ergo import denoise_image
from sklearn_ergo._image_training import benchmark_noise, psnr
from sklearn_ergo._nonlocal import nonlocal_means
from sklearn_ergo.datasets import load_image_folder

MU_GRID = np.round(np.arange(0.0, 0.61, 0.05), 2)


def pilot_nlm(pilot, noisy, h, search=10, patch=5):
    """Pixelwise non-local means of ``noisy``, weighted by ``pilot``'s patches
    (the package's :func:`~sklearn_ergo._nonlocal.nonlocal_means`, which this
    probe led to; within 6e-7 relative of the probe's own loop before it).
    """
    y, _, _ = nonlocal_means(pilot, noisy, h, search=search, patch=patch)
    return y.astype(np.float64)


def estimates(clean, noisy, level, etas, wiener):
    """Per image: clean, pilot, and per ``eta`` (or ``"wiener"``) the estimate."""
    out = []
    for c, x in zip(clean, noisy, strict=True):
        # The model alone: the probe came before the shipped files' blend.
        u = denoise_image(x, sigma=level / 255, nonlocal_blend=False)
        ys = {eta: pilot_nlm(u, x, eta * level / 255) for eta in etas}
        if wiener:
            import bm3d

            ys["wiener"] = bm3d.bm3d(x, level / 255, stage_arg=u)
        out.append((c, u, ys))
    return out


def blended_psnr(images, key, mu):
    """Mean PSNR of ``u + mu (y - u)``, clipped to ``[0, 1]``."""
    return np.mean(
        [psnr(np.clip(u + mu * (y[key] - u), 0, 1), c) for c, u, y in images]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=pathlib.Path, required=True)
    parser.add_argument("--set", default="set12")
    parser.add_argument("--sigmas", type=int, nargs="+", default=[15, 25, 50])
    parser.add_argument("--etas", type=float, nargs="+", default=[0.4, 0.5, 0.6])
    parser.add_argument("--n-train", type=int, default=100)
    parser.add_argument("--wiener", action="store_true")
    args = parser.parse_args(argv)

    train = load_image_folder(args.data / "train400")
    train = train[:: len(train) // args.n_train][: args.n_train]
    test = load_image_folder(args.data / args.set)
    for level in args.sigmas:
        sigma = level / 255
        fit_on = estimates(
            train, benchmark_noise(train, sigma, 1), level, args.etas, False
        )
        scored = estimates(
            test, benchmark_noise(test, sigma, 0), level, args.etas, args.wiener
        )
        base = np.mean([psnr(np.clip(u, 0, 1), c) for c, u, _ in scored])
        print(f"sigma {level}: {args.set} shipped {base:.3f} dB", flush=True)
        for key in scored[0][2]:
            line = f"  eta {key}:" if key != "wiener" else "  BM3D Wiener:"
            if key != "wiener":
                # The least-squares mu of the blend on the training images.
                mu = sum(np.vdot(y[key] - u, c - u) for c, u, y in fit_on) / sum(
                    np.vdot(y[key] - u, y[key] - u) for _, u, y in fit_on
                )
                gain = blended_psnr(scored, key, mu) - base
                line += f" mu fitted on Train400 {mu:.3f}: {gain:+.3f} dB;"
            grid = [blended_psnr(scored, key, mu) - base for mu in MU_GRID]
            best = int(np.argmax(grid))
            line += f" best mu on the set {MU_GRID[best]:.2f}: {grid[best]:+.3f} dB"
            print(line, flush=True)


if __name__ == "__main__":
    main()
