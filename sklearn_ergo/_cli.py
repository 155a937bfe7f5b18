"""Command line: ``demo``, ``denoise`` an image file, ``train`` a denoiser on images.

``main(argv)`` takes the arguments after the program name, starting with the
subcommand, and returns the exit status; every user error is one line on
stderr and a non-zero status.  Image files are read and written with Pillow
(``pip install "sklearn-ergo[image]"``).
"""

import argparse
import sys

import numpy as np

PROG = "python -m sklearn_ergo"


class CommandError(Exception):
    """A user error, reported as one line on stderr."""


def _pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise CommandError(
            'reading and writing images needs Pillow: pip install "sklearn-ergo[image]"'
        ) from exc
    return Image


def read_image(path):
    """An image file as a uint8 array, gray ``(H, W)`` or RGB ``(H, W, 3)``."""
    Image = _pillow()
    try:
        with Image.open(path) as img:
            img.load()
            mode = "L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
            if img.mode in ("I", "I;16", "F"):
                arr = np.asarray(img, dtype=np.float64)
                top = 65535.0 if arr.max() > 255 else 255.0
                return np.round(np.clip(arr / top, 0, 1) * 255).astype(np.uint8)
            return np.asarray(img.convert(mode))
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read image {path!r}: {exc}") from exc


def write_image(path, array):
    Image = _pillow()
    try:
        Image.fromarray(array).save(path)
    except (OSError, ValueError, KeyError) as exc:
        raise CommandError(f"cannot write image {path!r}: {exc}") from exc


def _sigma(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (np.isfinite(value) and 0 < value <= 255):
        raise argparse.ArgumentTypeError(
            f"sigma must be in (0, 255] (8-bit units), got {text}"
        )
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="Learned analysis-operator image denoising."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="learn K on natural-image patches and report PSNR against patch TV",
        description="Fit AnalysisOperatorLearner on patches of china.jpg and "
        "denoise patches of flower.jpg (scikit-learn's sample images, read with "
        "Pillow).",
    )
    demo.add_argument("--n-patches", type=_positive_int, default=20_000)
    demo.add_argument("--n-layers", type=_positive_int, default=20)
    demo.add_argument("--max-iter", type=_positive_int, default=20)
    demo.add_argument("--n-jobs", type=int, default=None)

    den = sub.add_parser(
        "denoise",
        help="denoise an image file",
        description="Denoise a gray or RGB image (PNG, JPEG, TIFF, ...).",
    )
    den.add_argument("input", help="noisy image file")
    den.add_argument("-o", "--output", required=True, help="denoised image file")
    den.add_argument(
        "--sigma",
        type=_sigma,
        required=True,
        help="noise standard deviation in 8-bit units (0-255), e.g. 25",
    )
    den.add_argument(
        "--model", help="a model .npz from 'train' (default: the shipped operators)"
    )

    tr = sub.add_parser(
        "train",
        help="train a denoiser on clean image files or a folder of them",
        description="Learn a convolutional denoiser from clean images, adding "
        "Gaussian noise of --sigma; shows the progress.  With image files: "
        "L-BFGS on a few redrawn crops (ImageDenoiser).  With --data DIR: "
        "mini-batch Adam on random crops of the folder's images with fresh "
        "noise and random flips and rotations at every step, validated on "
        "--validation DIR (whole images) or else on fixed crops of the "
        "training images, resumable from a checkpoint (log penalty).",
    )
    tr.add_argument("images", nargs="*", help="clean training image files")
    tr.add_argument("--data", help="folder of clean training images (8-bit gray)")
    tr.add_argument("--sigma", type=_sigma, required=True, help="noise level (0-255)")
    tr.add_argument("-o", "--output", required=True, help="model file (.npz)")
    tr.add_argument("--n-filters", type=_positive_int, default=16)
    tr.add_argument("--patch-size", type=_positive_int, default=5)
    tr.add_argument("--n-layers", type=_positive_int, default=20)
    tr.add_argument("--crop-size", type=_positive_int, default=64)
    tr.add_argument(
        "--n-crops", type=_positive_int, default=16, help="crops per draw (per step)"
    )
    tr.add_argument("--max-iter", type=_positive_int, default=40)
    tr.add_argument(
        "--penalty",
        choices=("l1", "log"),
        default="log",
        help="l1 (convex), or the log penalty (reweighted l1 stages, trained "
        "after and from the l1 model: twice --max-iter iterations in all; the "
        "better of the two on the validation draw is saved)",
    )
    tr.add_argument(
        "--n-stages", type=_positive_int, default=2, help="stages of --penalty log"
    )
    tr.add_argument("--n-jobs", type=int, default=None)
    tr.add_argument("--random-state", type=int, default=0)
    folder = tr.add_argument_group("with --data")
    folder.add_argument("--validation", help="folder of clean validation images")
    folder.add_argument(
        "--steps", type=_positive_int, default=1000, help="Adam steps (default 1000)"
    )
    folder.add_argument(
        "--learning-rate", type=float, default=0.01, help="initial (default 0.01)"
    )
    folder.add_argument(
        "--validate-every", type=_positive_int, default=100, help="steps (100)"
    )
    folder.add_argument(
        "--checkpoint", help="checkpoint file (default: OUTPUT.checkpoint.npz)"
    )
    folder.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint"
    )
    return parser


def _demo(args):
    from ._demo import run_demo

    _pillow()
    run_demo(args.n_patches, args.n_layers, args.max_iter, n_jobs=args.n_jobs)


def _denoise(args):
    from ._pretrained import denoise_image, load_denoiser

    image = read_image(args.input)
    try:
        if args.model is None:
            out = denoise_image(image, args.sigma)
        else:
            out = load_denoiser(args.model).denoise(image, sigma=args.sigma)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    write_image(args.output, out)


def _train(args):
    if args.data is not None:
        if args.images:
            raise CommandError("give image files or --data DIR, not both")
        return _train_folder(args)
    if not args.images:
        raise CommandError("give clean image files or --data DIR")
    from ._denoiser import ImageDenoiser
    from ._pretrained import save_denoiser

    images = [read_image(path) for path in args.images]
    common = dict(
        n_filters=args.n_filters,
        patch_size=args.patch_size,
        n_layers=args.n_layers,
        noise_std=args.sigma / 255.0,
        crop_size=args.crop_size,
        n_crops=args.n_crops,
        max_iter=args.max_iter,
        n_jobs=args.n_jobs,
        random_state=args.random_state,
        verbose=1,
    )
    phases = [dict(penalty="l1")]
    if args.penalty == "log":
        phases.append(dict(penalty="log", n_stages=args.n_stages))
    try:
        init, models = "tv", []
        for phase in phases:
            print(f"training the {phase['penalty']} model", flush=True)
            models.append(ImageDenoiser(init=init, **common, **phase).fit(images))
            init = models[-1].components_
        # Both phases monitor the same validation draw (same seed).
        den = max(models, key=lambda m: max(m.validation_psnr_))
        save_denoiser(den, args.output)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise CommandError(f"cannot write model {args.output!r}: {exc}") from exc
    print(
        f"saved the {den.penalty} model to {args.output}: validation PSNR "
        f"{den.validation_psnr_[0]:.2f} dB (initial) -> "
        f"{max(den.validation_psnr_):.2f} dB (best)"
    )


def _train_folder(args):
    from ._image_training import (
        ConvolutionalLogModel,
        random_crops,
        save_model,
        train,
    )
    from .datasets import load_image_folder

    if args.penalty != "log":
        raise CommandError("--data trains the log-penalty model; omit --penalty")
    output = args.output if args.output.endswith(".npz") else args.output + ".npz"
    checkpoint = args.checkpoint or output[: -len(".npz")] + ".checkpoint.npz"
    try:
        images = load_image_folder(args.data)
        if args.validation is not None:
            validation = load_image_folder(args.validation)
        else:
            # A fixed draw of crops (their own seed), denoised like whole images.
            rng = np.random.default_rng([args.random_state, 1])
            validation = list(random_crops(images, args.n_crops, args.crop_size, rng))
        model = ConvolutionalLogModel(
            args.n_filters, args.patch_size, args.n_layers, args.n_stages, args.n_jobs
        )
        result = train(
            model,
            images,
            validation,
            noise_std=args.sigma / 255.0,
            n_steps=args.steps,
            batch=args.n_crops,
            crop=args.crop_size,
            learning_rate=args.learning_rate,
            validate_every=args.validate_every,
            checkpoint=checkpoint,
            resume=args.resume,
            seed=args.random_state,
            log=lambda line: print(line, flush=True),
        )
        save_model(model, result.best_params, args.sigma / 255.0, output)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise CommandError(f"cannot write {exc.filename or output!r}: {exc}") from exc
    state = (
        "interrupted: rerun with --resume to continue" if result.interrupted else "done"
    )
    print(
        f"{state}; saved the model of step {result.best_step} (validation PSNR "
        f"{result.best_psnr:.2f} dB) to {output}"
    )


def main(argv=None):
    """Run a subcommand; ``argv`` starts with ``demo``, ``denoise`` or ``train``.

    Returns
    -------
    status : int
        0 on success, 1 on a user error (one line on stderr), 2 on bad
        arguments (argparse's message).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or an argparse error already printed
        return int(exc.code or 0)
    try:
        {"demo": _demo, "denoise": _denoise, "train": _train}[args.command](args)
    except CommandError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0
