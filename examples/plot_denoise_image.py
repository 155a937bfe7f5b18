"""
Denoising a photograph: noisy, TV, ours, BM3D
==============================================

A held-out gray image (scikit-learn's ``china``, never seen in training) with
Gaussian noise of standard deviation 25/255, denoised by total variation
(``skimage.restoration.denoise_tv_chambolle`` with its weight tuned on
scikit-image's bundled pictures, see ``benchmarks/denoise_table.py``), by the
shipped convolutional model (trained on Train400)
(:func:`sklearn_ergo.denoise_image`) and, when the ``bm3d`` package is
installed, by BM3D.  Saves ``denoise_image.png`` (or ``--output``).

    python examples/plot_denoise_image.py [--output FILE]
"""

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.restoration import denoise_tv_chambolle  # noqa: E402

from sklearn_ergo import denoise_image  # noqa: E402
from sklearn_ergo.datasets import load_gray_image, psnr  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--output", default="denoise_image.png")
parser.add_argument("--tv-weight", type=float, default=0.0722)
args = parser.parse_args()

sigma = 25 / 255
clean = load_gray_image("china.jpg")[100:356, 250:506]
noisy = clean + sigma * np.random.default_rng(0).standard_normal(clean.shape)

results = {"noisy": noisy}
timings = {"noisy": 0.0}
for name, fn in [
    ("TV (tuned)", lambda y: denoise_tv_chambolle(y, weight=args.tv_weight)),
    ("ours (convolutional)", lambda y: denoise_image(y, sigma)),
]:
    start = time.perf_counter()
    results[name] = fn(noisy)
    timings[name] = time.perf_counter() - start
try:
    import bm3d

    start = time.perf_counter()
    results["BM3D"] = bm3d.bm3d(noisy, sigma_psd=sigma)
    timings["BM3D"] = time.perf_counter() - start
except ImportError:
    print("bm3d is not installed: no BM3D panel.")

fig, axes = plt.subplots(
    1, len(results), figsize=(4 * len(results), 4.6), layout="constrained"
)
for ax, (name, image) in zip(axes, results.items(), strict=True):
    ax.imshow(np.clip(image, 0, 1), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{name}\n{psnr(np.clip(image, 0, 1), clean):.2f} dB")
    ax.axis("off")
    print(
        f"{name:22s} {psnr(np.clip(image, 0, 1), clean):.2f} dB {timings[name]:.2f} s"
    )

fig.savefig(args.output, dpi=80)
print(f"saved {args.output}")
