"""This checkout against another commit, interleaved in one process.

The other commit's package is unpacked under another name
(``sklearn_ergo_before``; its imports are relative) and both are timed in
turns (ABAB...), medians, so the load of a busy machine falls on both:

* **kernels**: ``apply_acc``, ``adjoint_acc``, ``weight_grad_acc`` of
  ``ConvolutionalOperator`` (valid) on 64 crops of 64x64 and one 512x512
  image, 16 filters 5x5 and 48 of 7x7, one thread;
* **layer**: one 64x64 crop's forward with tape and backward
  (:mod:`sklearn_ergo._chambolle_pock`, 48 filters 7x7, 20 layers, l1);
* **gradient**: ``images_loss_grad`` of the log-penalty map on 64 crops of
  64x64, 48 filters 7x7, 2 stages x 20 layers, ``n_jobs=1``;
* **dense**: ``unrolled_loss_grad``, N = 4096, L = 50, 64x64, ergodic,
  ``n_jobs=1`` and the default ``n_jobs=None``;
* **denoise**: ``denoise_image`` on the 512x512 image of
  ``bench_denoise.py`` (default ``n_jobs``: every core);
* **gil** (no comparison): two Python threads each multiplying 1000x1000
  float32 matrices 6 times, over one thread doing both shares, with
  ``scipy.linalg.blas.sgemm`` and with ``np.dot`` (one BLAS thread): about
  1 when the calls hold the GIL, 0.5 when they release it and a second core
  is free (the CPU time over the wall time tells which).

::

    git archive REV sklearn_ergo | tar -x -C /tmp/before
    python benchmarks/bench_before_after.py /tmp/before [--sections ...]
"""

import argparse
import importlib
import itertools
import os
import shutil
import sys
import tempfile
import threading
import time
from functools import partial

import numpy as np
from _common import machine, markdown_table
from threadpoolctl import threadpool_limits

SECTIONS = ("kernels", "layer", "gradient", "dense", "denoise", "gil")


def load_before(tree):
    """The package of ``tree/sklearn_ergo`` imported as ``sklearn_ergo_before``."""
    folder = tempfile.mkdtemp()
    shutil.copytree(
        os.path.join(tree, "sklearn_ergo"), os.path.join(folder, "sklearn_ergo_before")
    )
    sys.path.insert(0, folder)
    return "sklearn_ergo_before"


def workloads(name, sections, rng):
    """``{(section, case): callable}`` for the package ``name``."""
    conv, cp, pen, stp, umaps = (
        importlib.import_module(f"{name}.{k}")
        for k in (
            "_convolutional",
            "_chambolle_pock",
            "_penalties",
            "_steps",
            "_unrolled_map",
        )
    )
    pkg = importlib.import_module(name)
    out = {}
    cases = (("64 x 64²", 64, (64, 64)), ("512²", 1, (512, 512)))
    for dtype in ("float32", "float64"):
        for (m, p), (label, N, shape) in itertools.product(((16, 5), (48, 7)), cases):
            if "kernels" not in sections:
                break
            K = rng(0).standard_normal((m, p * p)).astype(dtype)
            op = conv.ConvolutionalOperator(K, shape, p)
            X = rng(1).standard_normal((N, op.n_primal)).astype(dtype)
            Y = rng(2).uniform(-1, 1, (N, op.n_dual)).astype(dtype)
            Z, R, G = np.empty_like(Y), np.empty_like(X), np.zeros_like(K)
            case = f"{label} {m}x{p}² {dtype}"
            out[("kernels", f"{case} apply")] = partial(op.apply_acc, X, Z, 0.5)
            out[("kernels", f"{case} adjoint")] = partial(op.adjoint_acc, Y, R, 0.5)
            out[("kernels", f"{case} weight grad")] = partial(
                op.weight_grad_acc, Y, X, G, 0.5
            )
        m, p, L = 48, 7, 20
        K = (0.05 * rng(3).standard_normal((m, p * p))).astype(dtype)
        if "layer" in sections:
            op = conv.ConvolutionalOperator(K, (64, 64), p)
            norm = op.norm_and_grad()[0]
            steps = stp.AcceleratedSteps().schedule(norm, L, dtype)
            alpha = np.full(L, 1.0 / L)
            X = rng(4).standard_normal((1, 4096)).astype(dtype)
            g = rng(5).standard_normal(X.shape).astype(dtype)
            fwd = partial(cp.forward, op, X, steps, pen.L1(), alpha, record=True)
            out[("layer", f"64² crop, forward with tape {dtype}")] = fwd
            out[("layer", f"64² crop, backward {dtype}")] = partial(
                cp.backward, op, X, fwd()[1], steps, pen.L1(), alpha, g
            )
        if "gradient" in sections:
            clean = rng(6).uniform(size=(64, 64, 64)).astype(dtype)
            noisy = (clean + 0.1 * rng(7).standard_normal(clean.shape)).astype(dtype)
            umap = umaps.UnrolledMap(
                L, penalty=pen.Log(), steps=stp.AcceleratedSteps(), n_stages=2
            )
            params = {"K": K, "eps": np.full(m, 0.05)}
            out[("gradient", f"64 crops 64², 48x7², 2 x 20, {dtype}")] = partial(
                conv.images_loss_grad, umap, params, noisy, clean, n_jobs=1
            )
        if "dense" in sections:
            walk = np.cumsum(rng(8).standard_normal((4096, 64)), axis=1) / 8
            Xc = walk.astype(dtype)
            Xn = (Xc + 0.3 * rng(9).standard_normal(Xc.shape)).astype(dtype)
            Kd = (rng(10).standard_normal((64, 64)) / 8).astype(dtype)
            for n_jobs in (1, None):
                case = f"N=4096 L=50 64x64 ergodic {dtype} n_jobs={n_jobs}"
                out[("dense", case)] = partial(
                    pkg.unrolled_loss_grad,
                    Kd,
                    Xn,
                    Xc,
                    n_layers=50,
                    unroll="ergodic",
                    n_jobs=n_jobs,
                )
    if "denoise" in sections:
        from skimage import data
        from skimage.color import rgb2gray

        clean = rgb2gray(data.immunohistochemistry())
        noisy = clean + 25 / 255 * rng(0).standard_normal(clean.shape)
        out[("denoise", "denoise_image 512², sigma 25/255")] = partial(
            pkg.denoise_image, noisy, 25 / 255
        )
    return out


def gil_check(repeats):
    """Two threads against one doing both: scipy's sgemm and np.dot."""
    from scipy.linalg.blas import sgemm

    A = np.random.default_rng(0).standard_normal((1000, 1000)).astype(np.float32)
    products = {
        "scipy.linalg.blas.sgemm": lambda: sgemm(1.0, A, A),
        "np.dot": lambda: np.dot(A, A),
    }
    rows = []
    with threadpool_limits(1, "blas"):
        for name, product in products.items():

            def work(product=product):
                for _ in range(6):
                    product()

            ratios, cpu = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                work()
                work()
                serial = time.perf_counter() - start
                threads = [threading.Thread(target=work) for _ in range(2)]
                start, start_cpu = time.perf_counter(), time.process_time()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - start
                ratios.append(wall / serial)
                cpu.append((time.process_time() - start_cpu) / wall)
            rows.append([name, f"{np.median(ratios):.2f}", f"{np.median(cpu):.2f}"])
    print(markdown_table(["product", "2 threads / serial", "CPU / wall"], rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", help="folder holding the other commit's sklearn_ergo")
    parser.add_argument("--sections", nargs="+", default=SECTIONS, choices=SECTIONS)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    def rng(seed):
        return np.random.default_rng(seed)

    load = "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    print(f"# bench_before_after on {machine()}, {load}; medians of {args.repeats}\n")
    if "gil" in args.sections:
        print("## Do the products release the GIL?\n")
        gil_check(args.repeats)
        print()
    names = {"before": load_before(args.before), "after": "sklearn_ergo"}
    runs = {v: workloads(name, args.sections, rng) for v, name in names.items()}
    times = {key: {v: [] for v in runs} for key in runs["after"]}
    rows = []
    for key in times:
        # The kernels run with one BLAS thread; the map's drivers set it.
        with threadpool_limits(1 if key[0] in ("kernels", "layer") else None, "blas"):
            for v in runs:  # warm-up: scratch buffers, pools, model files
                runs[v][key]()
            for _ in range(args.repeats):
                for v in runs:
                    start = time.perf_counter()
                    runs[v][key]()
                    times[key][v].append(time.perf_counter() - start)
        before, after = (np.median(times[key][v]) for v in ("before", "after"))
        rows.append(
            [key[0], key[1], f"{1e3 * before:.1f}", f"{1e3 * after:.1f}"]
            + [f"{before / after:.2f}x"]
        )
        print("| " + " | ".join(rows[-1]) + " |", flush=True)
    if rows:
        print("\n" + markdown_table(HEADER, rows))
    print("\nload average at the end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))


HEADER = ["section", "case", "before ms", "after ms", "speed-up"]

if __name__ == "__main__":
    main()
