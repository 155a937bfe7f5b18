"""PSNR / SSIM / wall time of image denoisers on held-out gray images.

Two modes.  With ``--data DIR`` (a folder holding ``bsd68/``, ``set12/`` and
``train400/``): the standard sets of the denoising literature under its
protocol (clean / 255 plus Gaussian noise of std sigma / 255 with a fixed
seed, output clipped to [0, 1], PSNR with peak 1, mean over the set), at
sigma = 15, 25, 50: ours (:func:`sklearn_ergo.denoise_image`, also with
``fast=True``, each also without its non-local blend, with 8 copies
(``self_ensemble=8``) only when named in ``--methods``, and ``--model
FILE``), TV (weight tuned on Train400, never on
the test sets), NL-means (as below) and BM3D measured on the same noise, next to the
published BM3D, TNRD and DnCNN numbers.  The baselines' per-image PSNR and
seconds are cached in ``benchmarks/results/standard_sets.json``, keyed by
set, image, sigma, method and noise seed, so that a rerun only recomputes
ours (BM3D takes seconds per image):

    nice -n 10 python benchmarks/denoise_table.py --data ../shared/data

Without ``--data``, the original mode:
Held-out images (none is used to train the shipped operators): scikit-learn's
``china`` and ``flower`` (gray), scikit-image's ``chelsea``, ``coffee``,
``rocket`` (gray), ``hubble_deep_field`` and ``immunohistochemistry`` (gray),
each centre-cropped to at most 512x512.  Gaussian noise with a fixed seed at
sigma in {15, 25, 50}/255.  Methods:

- ``noisy``: the input;
- ``TV``: ``skimage.restoration.denoise_tv_chambolle``, weight tuned per sigma
  on the *training* images of the shipped operators;
- ``wavelet``: ``denoise_wavelet`` (BayesShrink, soft, given sigma);
- ``NL-means``: ``denoise_nl_means`` (5x5 patches, 13x13 search, h = 0.8
  sigma, fast mode, given sigma; scikit-image's recommended setting);
- ``BM3D``: ``bm3d.bm3d`` when the ``bm3d`` package is installed;
- ``ours conv``: :func:`sklearn_ergo.denoise_image` (shipped operators);
- ``ours patch``: ``ImageDenoiser("patch")`` trained here on the training
  images (8x8 patches, overlaps averaged).

    python benchmarks/denoise_table.py            # full table (minutes)
    python benchmarks/denoise_table.py --quick    # 2 small crops, sigma 25

Needs scikit-image (``pip install "sklearn-ergo[benchmarks]"``).
"""

import argparse
import functools
import json
import os
import pathlib
import time
import warnings

import numpy as np

from sklearn_ergo import ImageDenoiser, denoise_image
from sklearn_ergo._image_training import benchmark_noise, psnr
from sklearn_ergo._pretrained import load_denoiser
from sklearn_ergo.datasets import IMAGE_SUFFIXES, load_gray_image, load_image_folder

SIGMAS = (15, 25, 50)
SEED = 0


def held_out_images(max_size):
    from skimage import data
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    images = {
        "china": load_gray_image("china.jpg"),
        "flower": load_gray_image("flower.jpg"),
    }
    for name in (
        "chelsea",
        "coffee",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
    ):
        image = img_as_float(getattr(data, name)())
        images[name] = rgb2gray(image) if image.ndim == 3 else image
    out = {}
    for name, image in images.items():
        H, W = image.shape
        h, w = min(H, max_size), min(W, max_size)
        a, b = (H - h) // 2, (W - w) // 2
        out[name] = np.ascontiguousarray(image[a : a + h, b : b + w])
    return out


def tune_tv_weight(sigma, training, weights):
    """The weight of denoise_tv_chambolle with the best mean PSNR on training crops."""
    from skimage.restoration import denoise_tv_chambolle

    rng = np.random.default_rng(SEED + 1)
    noisy = [x + sigma * rng.standard_normal(x.shape) for x in training]
    scores = [
        np.mean(
            [
                psnr(denoise_tv_chambolle(y, weight=w), x)
                for x, y in zip(training, noisy, strict=True)
            ]
        )
        for w in weights
    ]
    return float(weights[int(np.argmax(scores))])


def methods(sigma, tv_weight, patch_model):
    from skimage.restoration import (
        denoise_nl_means,
        denoise_tv_chambolle,
        denoise_wavelet,
    )

    out = {
        "noisy": lambda y: y,
        "TV": lambda y: denoise_tv_chambolle(y, weight=tv_weight),
        "wavelet": lambda y: denoise_wavelet(
            y, sigma=sigma, method="BayesShrink", mode="soft", rescale_sigma=True
        ),
        "NL-means": lambda y: denoise_nl_means(
            y,
            patch_size=5,
            patch_distance=6,
            h=0.8 * sigma,
            sigma=sigma,
            fast_mode=True,
        ),
    }
    try:
        import bm3d

        out["BM3D"] = lambda y: bm3d.bm3d(y, sigma_psd=sigma)
    except ImportError:
        warnings.warn("bm3d is not installed: no BM3D column.", stacklevel=2)
    out["ours conv"] = lambda y: denoise_image(y, sigma)
    if patch_model is not None:
        out["ours patch"] = lambda y: patch_model.denoise(y, sigma=sigma)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="< 60 s smoke run")
    parser.add_argument("--sigmas", type=int, nargs="+", default=SIGMAS)
    parser.add_argument(
        "--methods", nargs="+", help="run only these methods (names as in the table)"
    )
    parser.add_argument(
        "--per-image", action="store_true", help="also print PSNR per image"
    )
    parser.add_argument("--data", help="folder with bsd68/, set12/, train400/")
    parser.add_argument("--sets", nargs="+", default=STANDARD_SETS, help="with --data")
    parser.add_argument("--model", help="with --data: also a model file (.npz)")
    parser.add_argument("--seed", type=int, default=SEED, help="with --data")
    parser.add_argument(
        "--results", default=RESULTS, help="with --data: cache of the baselines"
    )
    args = parser.parse_args(argv)
    if args.data is not None:
        return standard_sets(args)
    from skimage.metrics import structural_similarity
    from train_pretrained import training_images

    sigmas = (25,) if args.quick else tuple(args.sigmas)
    images = held_out_images(128 if args.quick else 512)
    if args.quick:
        images = dict(list(images.items())[:2])
    training = [x[:256, :256] for x in training_images()]
    if args.quick:
        training = [x[:96, :96] for x in training[:3]]
    weights = np.geomspace(0.02, 0.4, 7 if args.quick else 15)

    rows, per_image = {}, {}
    for level in sigmas:
        sigma = level / 255.0
        tv_weight = tune_tv_weight(sigma, training, weights)
        patch_model = None
        wanted = args.methods or ["ours patch"]
        if "ours patch" in wanted and not args.quick:
            start = time.perf_counter()
            patch_model = ImageDenoiser(
                "patch",
                n_layers=20,
                max_patches=10000,
                max_iter=20,
                noise_std=sigma,
                random_state=SEED,
            ).fit(training_images())
            print(
                f"sigma={level}: patch model trained in "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
        print(
            f"sigma={level}: TV weight {tv_weight:.4f} (tuned on training)", flush=True
        )
        rng = np.random.default_rng(SEED)
        noisy = {n: x + sigma * rng.standard_normal(x.shape) for n, x in images.items()}
        for method, fn in methods(sigma, tv_weight, patch_model).items():
            if args.methods and method not in args.methods:
                continue
            scores = []
            for name, x in images.items():
                start = time.perf_counter()
                out = fn(noisy[name])
                elapsed = time.perf_counter() - start
                ssim = structural_similarity(np.clip(out, 0, 1), x, data_range=1.0)
                scores.append((psnr(out, x), ssim, elapsed))
            rows.setdefault(method, {})[level] = np.mean(scores, axis=0)
            per_image.setdefault(level, {})[method] = [s[0] for s in scores]
            print(
                f"  {method:10s} PSNR {rows[method][level][0]:.2f} dB, SSIM "
                f"{rows[method][level][1]:.3f}, {rows[method][level][2]:.2f} s/image",
                flush=True,
            )

    sizes = sorted({x.shape for x in images.values()})
    print(
        f"\nMean over {len(images)} held-out images ({', '.join(images)}), "
        f"sizes {sizes}; PSNR (dB) / SSIM / seconds per image:\n"
    )
    header = "| method | " + " | ".join(f"σ = {s}" for s in sigmas) + " |"
    print(header)
    print("|---" * (len(sigmas) + 1) + "|")
    for method, by_level in rows.items():
        cells = [
            f"{by_level[s][0]:.2f} / {by_level[s][1]:.3f} / {by_level[s][2]:.2f} s"
            for s in sigmas
        ]
        print(f"| {method} | " + " | ".join(cells) + " |")
    if args.per_image:
        for level, by_method in per_image.items():
            print(f"\nPSNR (dB) per image, σ = {level}:\n")
            print("| method | " + " | ".join(images) + " |")
            print("|---" * (len(images) + 1) + "|")
            for method, values in by_method.items():
                print(f"| {method} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return 0


# -- the standard sets (--data DIR) ---------------------------------------------
# Published mean PSNR (dB) at sigma = 15 / 25 / 50, as tabulated in Zhang, Zuo,
# Chen, Meng and Zhang, "Beyond a Gaussian denoiser: residual learning of deep
# CNN for image denoising", IEEE TIP 26(7), 2017 (Tables II and III).
PUBLISHED = {
    "BM3D (Dabov et al., IEEE TIP 2007)": {
        "bsd68": (31.07, 28.57, 25.62),
        "set12": (32.37, 29.97, 26.72),
    },
    "TNRD (Chen & Pock, IEEE TPAMI 2017)": {
        "bsd68": (31.42, 28.92, 25.97),
        "set12": (32.50, 30.06, 26.81),
    },
    "DnCNN-S (Zhang et al., IEEE TIP 2017)": {
        "bsd68": (31.73, 29.23, 26.23),
        "set12": (32.86, 30.44, 27.18),
    },
}
STANDARD_SETS = ("bsd68", "set12")
BASELINES = ("TV", "NL-means", "BM3D")
RESULTS = pathlib.Path(__file__).parent / "results" / "standard_sets.json"


def _load_cache(path):
    if path.exists():
        return json.loads(path.read_text())
    return {"results": {}, "tv_weights": {}}


def _save_cache(cache, path):
    """Atomically: a killed run keeps every result finished before."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def tune_tv_weight_train400(data, level, seed, n_images=40):
    """TV weight of the best mean PSNR on the first Train400 images (never tests)."""
    from skimage.restoration import denoise_tv_chambolle

    clean = load_image_folder(data / "train400")[:n_images]
    noisy = benchmark_noise(clean, level / 255.0, seed + 1)
    weights = np.geomspace(0.01, 0.5, 25)
    scores = [
        np.mean([psnr(denoise_tv_chambolle(y, weight=w), x)
                 for x, y in zip(clean, noisy, strict=True)])
        for w in weights
    ]  # fmt: skip
    return float(weights[int(np.argmax(scores))])


def baseline(method, level, tv_weight):
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

    sigma = level / 255.0
    if method == "TV":
        return lambda y: denoise_tv_chambolle(y, weight=tv_weight)
    if method == "NL-means":
        return lambda y: denoise_nl_means(
            y, patch_size=5, patch_distance=6, h=0.8 * sigma, sigma=sigma,
            fast_mode=True,
        )  # fmt: skip
    import bm3d

    return lambda y: bm3d.bm3d(y, sigma_psd=sigma)


def standard_sets(args):
    """Mean PSNR and seconds per image on BSD68 and Set12, the literature's way."""
    data = pathlib.Path(args.data)
    cache_path = pathlib.Path(args.results)
    cache = _load_cache(cache_path)
    ours = {
        "ours": lambda y, level: denoise_image(y, level / 255.0),
        "ours fast": lambda y, level: denoise_image(y, level / 255.0, fast=True),
        "ours, no blend": lambda y, level: denoise_image(
            y, level / 255.0, nonlocal_blend=False
        ),
        "ours fast, no blend": lambda y, level: denoise_image(
            y, level / 255.0, fast=True, nonlocal_blend=False
        ),
        "ours, 8 copies": lambda y, level: denoise_image(
            y, level / 255.0, self_ensemble=8
        ),
    }
    if args.model:
        model = load_denoiser(args.model)
        ours[f"model {pathlib.Path(args.model).name}"] = lambda y, level: model.denoise(
            y, sigma=level / 255.0
        )
    # By default every method but the 8-copy ensemble (8x the time).
    default = [m for m in (*ours, *BASELINES) if m != "ours, 8 copies"]
    methods = [m for m in (*ours, *BASELINES) if m in (args.methods or default)]
    table = {}  # (set, method, level) -> (mean PSNR, mean seconds)
    per_image = {}  # (set, level) -> {method: PSNR per image, in files' order}
    files_of = {}
    for name in args.sets:
        folder = data / name
        files = sorted(
            f.name for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
        )
        files_of[name] = files
        clean = load_image_folder(folder)
        for level in args.sigmas:
            noisy = benchmark_noise(clean, level / 255.0, args.seed)
            for method in methods:
                if method in BASELINES:
                    key = f"{level}/{args.seed}"
                    if method == "TV" and key not in cache["tv_weights"]:
                        cache["tv_weights"][key] = tune_tv_weight_train400(
                            data, level, args.seed
                        )
                        _save_cache(cache, cache_path)
                    fn = baseline(method, level, cache["tv_weights"].get(key))
                else:
                    fn = functools.partial(ours[method], level=level)
                scores = []
                for file, x, y in zip(files, clean, noisy, strict=True):
                    key = f"{name}/{file}/{level}/{method}/{args.seed}"
                    if method in BASELINES and key in cache["results"]:
                        scores.append(cache["results"][key])
                        continue
                    start, cpu = time.perf_counter(), time.process_time()
                    out = fn(y)
                    scores.append(
                        {
                            "psnr": psnr(out, x),
                            "seconds": time.perf_counter() - start,
                            # All threads of this process: for one thread, the
                            # wall time on an idle core.
                            "cpu_seconds": time.process_time() - cpu,
                        }
                    )
                    if method in BASELINES:
                        cache["results"][key] = scores[-1]
                        _save_cache(cache, cache_path)
                table[name, method, level] = [
                    np.mean([s[k] for s in scores])
                    for k in ("psnr", "seconds", "cpu_seconds")
                ]
                per_image.setdefault((name, level), {})[method] = [
                    s["psnr"] for s in scores
                ]
                print(
                    f"{name} sigma={level} {method}: "
                    "{:.2f} dB, {:.2f} s/image, {:.2f} CPU s/image".format(
                        *table[name, method, level]
                    ),
                    flush=True,
                )
    levels = tuple(args.sigmas)
    print(
        f"\nMean PSNR (dB) at sigma = {' / '.join(map(str, levels))}, noise seed "
        f"{args.seed}; seconds per image: wall / CPU (all threads), mean over "
        "the set and the sigmas, baselines as measured when cached:\n"
    )
    print(
        "| method | " + " | ".join(f"{s} PSNR | {s} s/image" for s in args.sets) + " |"
    )
    print("|---" * (1 + 2 * len(args.sets)) + "|")
    for method in methods:
        cells = []
        for name in args.sets:
            cells.append(" / ".join(f"{table[name, method, s][0]:.2f}" for s in levels))
            wall, cpu = (
                np.mean([table[name, method, s][i] for s in levels]) for i in (1, 2)
            )
            cells.append(f"{wall:.2f} / {cpu:.2f}")
        print(f"| {method} | " + " | ".join(cells) + " |")
    if levels == SIGMAS:
        for method, by_set in PUBLISHED.items():
            cells = []
            for name in args.sets:
                cells += [" / ".join(f"{v:.2f}" for v in by_set[name]), "–"]
            print(f"| {method}, published | " + " | ".join(cells) + " |")
    tv = {s: cache["tv_weights"].get(f"{s}/{args.seed}") for s in levels}
    print(f"\nTV weights (tuned on Train400): {tv}")
    if args.per_image:
        for (name, level), by_method in per_image.items():
            print(f"\nPSNR (dB) per image, {name}, σ = {level}:\n")
            print("| image | " + " | ".join(by_method) + " |")
            print("|---" * (1 + len(by_method)) + "|")
            for i, file in enumerate(files_of[name]):
                cells = " | ".join(f"{v[i]:.2f}" for v in by_method.values())
                print(f"| {file} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
