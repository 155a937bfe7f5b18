"""What the geometric self-ensemble gains, by number of copies, on BSD68 and Set12.

Every image is denoised once in each of the eight flips and rotations
(:data:`sklearn_ergo._ensemble.TRANSFORMS`), with the shipped model of the
level (``denoise_image`` without its non-local blend, which the package
applies once, after the mean), and each output is mapped back; the mean PSNR of
the mean of every subset of copies is then read off those eight outputs: the
package's nested subsets of 1, 2, 4 and 8 copies, and the alternatives its
choice was made against (the second copy the rotation by 180 degrees instead
of the transpose; four copies the rotations).  The protocol of
``denoise_table.py``: noise of seed 0, output clipped to [0, 1], PSNR with
peak 1.  Seconds per image: the mean time of one copy, times the copies.

    python benchmarks/bench_self_ensemble.py --data DIR --sets set12 --sigmas 25 50

(DIR holds ``set12/`` and ``bsd68/``; ``--threads 1`` runs the denoiser on one
core, so that two runs can share a 2-core machine.)
"""

import argparse
import pathlib
import shlex
import sys
import time

import numpy as np
from joblib import parallel_config
from threadpoolctl import threadpool_limits

from sklearn_ergo import denoise_image
from sklearn_ergo._ensemble import TRANSFORMS, _backward, _forward
from sklearn_ergo._image_training import benchmark_noise, psnr
from sklearn_ergo.datasets import load_image_folder

ALL = TRANSFORMS[8]
SUBSETS = {
    **{str(n): TRANSFORMS[n] for n in TRANSFORMS},
    "2, rotated by 180 for the transpose": ((0, False), (2, False)),
    "4, the rotations": tuple((k, False) for k in range(4)),
}


def outputs(noisy, level):
    """The eight outputs, mapped back, and the mean seconds per copy."""
    outs, seconds = {}, []
    for k, flip in ALL:
        copy = _forward(noisy[None], k, flip)[0]
        start = time.perf_counter()
        out = denoise_image(copy, level / 255.0, nonlocal_blend=False)
        seconds.append(time.perf_counter() - start)
        outs[k, flip] = _backward(out[None], k, flip)[0]
    return outs, float(np.mean(seconds))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with set12/, bsd68/")
    parser.add_argument("--sets", nargs="+", default=["set12"])
    parser.add_argument("--sigmas", nargs="+", type=int, default=[15, 25, 50])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    print("$ python " + shlex.join(sys.argv))
    print("per image, PSNR (dB) with copies: " + " | ".join(SUBSETS), flush=True)
    rows = []
    with threadpool_limits(args.threads), parallel_config(n_jobs=args.threads):
        for name in args.sets:
            clean = load_image_folder(pathlib.Path(args.data) / name)
            for level in args.sigmas:
                noisy = benchmark_noise(clean, level / 255.0, 0)
                scores = {s: [] for s in SUBSETS}
                seconds = []
                for x, y in zip(clean, noisy, strict=True):
                    outs, sec = outputs(y, level)
                    seconds.append(sec)
                    for s, subset in SUBSETS.items():
                        mean = np.mean([outs[t] for t in subset], axis=0)
                        scores[s].append(psnr(np.clip(mean, 0, 1), x))
                    print(
                        f"{name} sigma={level} image {len(seconds)}: "
                        + " ".join(f"{scores[s][-1]:.2f}" for s in SUBSETS),
                        flush=True,
                    )
                base = np.mean(scores["1"])
                for s, subset in SUBSETS.items():
                    mean = np.mean(scores[s])
                    rows.append(
                        f"| {name} | {level} | {s} | {mean:.3f} | {mean - base:+.3f} "
                        f"| {len(subset) * np.mean(seconds):.2f} |"
                    )
    print("\n| set | sigma | copies | mean PSNR (dB) | gain | s/image |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
