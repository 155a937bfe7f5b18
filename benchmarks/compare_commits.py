"""Time this checkout against another commit, side by side.

Runs the same workload in fresh processes that import ``sklearn_ergo`` from
this working tree or from a temporary ``git worktree`` of ``REV``, taking
turns (ABAB...), and prints the median time per workload and the ratio
this / REV.  Taking turns spreads the noise of a busy machine over both.

Workloads: one ``unrolled_loss_grad`` evaluation (the ``--quick``
configurations of ``bench_gradient.py``: N = 1024, L = 50, 64 x 64, both
dtypes and unroll modes, one BLAS thread) and ``denoise_image`` on the
512 x 512 image of ``bench_denoise.py`` (sigma = 25/255).

    python benchmarks/compare_commits.py 74a8ed7 [--rounds 5]
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

WORKLOAD = r"""
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
from sklearn_ergo import denoise_image, unrolled_loss_grad

def best(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)

out = {}
rng = np.random.default_rng(0)
with threadpool_limits(1):
    for dtype in ("float64", "float32"):
        K = (0.1 * rng.standard_normal((64, 64))).astype(dtype)
        Y = np.cumsum(rng.standard_normal((1024, 64)), axis=1).astype(dtype) / 8
        X = (Y + 0.1 * rng.standard_normal(Y.shape)).astype(dtype)
        for unroll in ("last", "ergodic"):
            out[f"gradient {dtype} {unroll}"] = best(
                lambda: unrolled_loss_grad(K, X, Y, n_layers=50, unroll=unroll), 3
            )
from skimage import data
from skimage.color import rgb2gray
clean = rgb2gray(data.immunohistochemistry())
noisy = clean + 25 / 255 * np.random.default_rng(0).standard_normal(clean.shape)
out["denoise_image 512x512"] = best(lambda: denoise_image(noisy, 25 / 255), 1)
print(json.dumps(out))
"""


def run(tree):
    env = dict(os.environ, PYTHONPATH=str(tree))
    result = subprocess.run(
        [sys.executable, "-c", WORKLOAD],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    here = pathlib.Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        other = pathlib.Path(tmp) / "other"
        subprocess.run(
            [
                "git",
                "-C",
                str(here),
                "worktree",
                "add",
                "-q",
                "--detach",
                str(other),
                args.rev,
            ],
            check=True,
        )
        try:
            times = {"this": [], args.rev: []}
            for _ in range(args.rounds):
                times["this"].append(run(here))
                times[args.rev].append(run(other))
        finally:
            subprocess.run(
                ["git", "-C", str(here), "worktree", "remove", "--force", str(other)],
                check=True,
            )
    print(
        f"median of {args.rounds} alternating rounds (best of 3 per round for the "
        "gradient, one run for denoise_image), seconds\n"
    )
    print(f"| workload | this | {args.rev} | this / {args.rev} |\n|---|---|---|---|")
    for key in times["this"][0]:
        a = np.median([t[key] for t in times["this"]])
        b = np.median([t[key] for t in times[args.rev]])
        print(f"| {key} | {a:.3f} | {b:.3f} | {a / b:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
