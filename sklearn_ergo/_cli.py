"""Command line: ``demo``, ``denoise`` image files, ``train`` a denoiser on images.

``main(argv)`` takes the arguments after the program name, starting with the
subcommand, and returns the exit status: 0 when everything succeeded, 1 when
a file failed or on a user error (one line on stderr per error), 2 on bad
arguments (argparse's message).  Image files are read and written with
Pillow (``pip install "sklearn-ergo[image]"``) at their own bit depth.
"""

import argparse
import os
import pathlib
import sys
import time

import numpy as np

from ._ensemble import TRANSFORMS
from ._image_io import (
    ImageFileError,
    as_training_image,
    channel_axis_of,
    image_extensions,
    pillow,
    read_image,
    write_image,
)
from ._penalties import PENALTIES

PROG = "python -m sklearn_ergo"
#: Training images the non-local blend of ``train --data`` is fitted on, at most.
BLEND_IMAGES = 100


class CommandError(Exception):
    """A user error, reported as one line on stderr."""


def _number(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _sigma(text):
    value = _number(text)
    if not (np.isfinite(value) and 0 < value <= 255):
        raise argparse.ArgumentTypeError(
            f"sigma must be in (0, 255] (8-bit units), got {text}"
        )
    return value


def _positive_float(text):
    value = _number(text)
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _int_from(low, what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


_positive_int = _int_from(1, "positive")
_count = _int_from(0, "0 or more")


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="Learned analysis-operator image denoising."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_denoise(sub)
    _add_train(sub)
    return parser


def _add_demo(sub):
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


def _add_denoise(sub):
    den = sub.add_parser(
        "denoise",
        help="denoise image files or folders",
        description="Denoise gray, RGB or RGBA images (PNG, TIFF, JPEG, ...) at "
        "their own bit depth: a 16-bit file stays 16-bit, alpha is kept.  Without "
        "--sigma the noise level of every image is estimated.  One line per "
        "image: its name, the noise level used (8-bit units) and the seconds "
        "taken.  Exit status: 0 if every image was denoised, 1 if any failed "
        "(the others are still written) or on a user error, 2 on bad arguments.",
    )
    den.add_argument(
        "inputs",
        nargs="+",
        metavar="input",
        help="noisy image files, or folders (their image files, not recursive)",
    )
    den.add_argument(
        "-o",
        "--output",
        required=True,
        help="output folder (created if needed; each image keeps its name), or "
        "an output file when the input is one file",
    )
    den.add_argument(
        "--sigma",
        type=_sigma,
        default=None,
        help="noise standard deviation in 8-bit units (0-255) whatever the bit "
        "depth, e.g. 25 (25 x 257 in a 16-bit file); default: estimated per image",
    )
    den.add_argument(
        "--data-range",
        type=_positive_float,
        default=None,
        help="range of the images' values, to which --sigma and the printed "
        "levels are relative, e.g. 4095 for 12-bit data in 16-bit files "
        "(default: the file's: 255 for 8-bit, 65535 for 16-bit, 1 for floats "
        "in [0, 1])",
    )
    model = den.add_mutually_exclusive_group()
    model.add_argument(
        "--model", help="a model .npz from 'train' (default: the shipped model)"
    )
    model.add_argument(
        "--fast",
        action="store_true",
        help="the shipped fast model: two stages of 12 iterations instead of "
        "three of 20, 0.6x the time (0.4x with --no-nonlocal) for 0.02-0.05 "
        "dB less PSNR on BSD68 and Set12",
    )
    den.add_argument(
        "--self-ensemble",
        type=int,
        choices=sorted(TRANSFORMS),
        default=1,
        metavar="N",
        help="denoise N flipped and rotated copies of each image (1, 2, 4 or "
        "8) and average them before the non-local blend: N times the model's "
        "time for about 0.04 / 0.06 / 0.07 dB more PSNR with 2 / 4 / 8 on "
        "Set12 without the blend, 0.05 dB with 8 and the blend (default: 1)",
    )
    den.add_argument(
        "--no-nonlocal",
        action="store_true",
        help="skip the model's non-local blend (every shipped model's last "
        "step): 0.7-0.9x the time, for 0.05-0.16 dB less PSNR on Set12, most on "
        "images that repeat themselves",
    )
    den.add_argument(
        "-j",
        "--n-jobs",
        type=int,
        default=1,
        help="images denoised in parallel (joblib; -1: all cores)",
    )
    den.add_argument(
        "--overwrite", action="store_true", help="replace existing output files"
    )


def _add_train(sub):
    tr = sub.add_parser(
        "train",
        help="train a denoiser on clean image files or a folder of them",
        description="Learn a convolutional denoiser from clean images, adding "
        "Gaussian noise of --sigma; shows the progress.  With image files: "
        "L-BFGS on a few redrawn crops (ImageDenoiser).  With --data DIR: "
        "mini-batch Adam on random crops of the folder's images with fresh "
        "noise and random flips and rotations at every step, validated on "
        "--validation DIR (whole images) or else on fixed crops of the "
        "training images, resumable from a checkpoint (--penalty log, "
        "shaped_log, shifted_log or blended_log).",
    )
    tr.add_argument("images", nargs="*", help="clean training image files")
    tr.add_argument(
        "--data",
        help="folder of clean training images (8- or 16-bit; colour is made gray)",
    )
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
        choices=("l1", "log", "shaped_log", "shifted_log", "blended_log"),
        help="l1 (convex); log, the log penalty (reweighted l1 stages; with "
        "image files trained after and from the l1 model, twice --max-iter "
        "iterations in all, the better of the two on the validation draw "
        "saved); shaped_log, the log penalty with a learned shape per "
        "filter; or shifted_log, whose stages also pull each filter's "
        "response towards a learned gain of the previous stage's; or "
        "blended_log, whose stages also stay close to a learned blend of the "
        "noisy image and the previous stage's output.  Default: "
        "log, or with --start the start model's",
    )
    tr.add_argument(
        "--n-stages",
        type=_positive_int,
        default=2,
        help="reweighted stages of --penalty log, shaped_log, shifted_log or "
        "blended_log",
    )
    tr.add_argument(
        "--nonlocal-blend",
        action="store_true",
        help="after the model, fit a non-local blend on the training images "
        f"(at most {BLEND_IMAGES} of them with --data): what denoise applies "
        "after every shipped model, 0.05-0.16 dB on Set12 for them",
    )
    tr.add_argument("--n-jobs", type=int, default=None)
    tr.add_argument("--random-state", type=int, default=0)
    folder = tr.add_argument_group("with --data")
    folder.add_argument("--validation", help="folder of clean validation images")
    folder.add_argument(
        "--start",
        help="fine-tune a trained model: a model file, or 'shipped' for the "
        "model denoise_image runs at --sigma; its settings replace --n-filters, "
        "--patch-size, --n-layers and --n-stages",
    )
    folder.add_argument(
        "--n-refine",
        type=_count,
        help="reaction-diffusion steps after the stages, learned with them "
        "(default 0; with --start the start model's, and more append steps "
        "that start as the identity)",
    )
    folder.add_argument(
        "--stages-fixed",
        action="store_true",
        help="learn only the refinement steps, the stages as they start (with "
        "--start: the steps of the shipped model were learned so)",
    )
    folder.add_argument(
        "--steps", type=_positive_int, default=1000, help="Adam steps (default 1000)"
    )
    folder.add_argument(
        "--learning-rate",
        type=float,
        help="initial (default 0.01; with --start 0.003, which fine-tuned the "
        "shipped model)",
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


def _demo(args):
    from ._demo import run_demo

    pillow()
    run_demo(args.n_patches, args.n_layers, args.max_iter, n_jobs=args.n_jobs)


def _jobs(args):
    """The (input, output) pairs; errors in the arguments as CommandError."""
    extensions = image_extensions()
    inputs, skipped = [], 0
    for name in args.inputs:
        path = pathlib.Path(name)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file())
            images = [p for p in files if p.suffix.lower() in extensions]
            skipped += len(files) - len(images)
            inputs += images
        else:
            inputs.append(path)  # a missing or unreadable file fails on its own
    if skipped:
        print(f"skipped {skipped} file(s) without an image extension", flush=True)
    if not inputs:
        raise CommandError(f"no image files in {' '.join(args.inputs)}")
    output = pathlib.Path(args.output)
    single = (
        len(args.inputs) == 1
        and not pathlib.Path(args.inputs[0]).is_dir()
        and not output.is_dir()
        and not args.output.endswith(("/", os.sep))
    )
    if single:
        return [(inputs[0], output)]
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(
            f"cannot create output folder {args.output!r}: {exc}"
        ) from exc
    names = [p.name for p in inputs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CommandError(
            f"several inputs are named {', '.join(twice)}: their outputs in "
            f"{args.output} would overwrite each other"
        )
    return [(p, output / p.name) for p in inputs]


def _denoise_file(source, target, args, model=None):
    """Denoise one file as the options ``args`` say, with ``model`` if given.

    Returns (sigma in 8-bit units or None, error or None).
    """
    from ._image_data import as_planes
    from ._noise import estimate_sigma
    from ._pretrained import denoise_image

    sigma, data_range = args.sigma, args.data_range
    try:
        if target.exists() and not args.overwrite:
            raise CommandError(f"{str(target)!r} exists (use --overwrite)")
        image = read_image(source)
        axis = channel_axis_of(image)
        if data_range is None:
            data_range = as_planes(image, axis).data_range()
        if sigma is None:
            level = estimate_sigma(image, channel_axis=axis) * 255 / data_range
        else:
            level = sigma
        units = level * data_range / 255
        if not level:
            out = image
        elif model is None:
            out = denoise_image(
                image,
                units,
                channel_axis=axis,
                data_range=data_range,
                fast=args.fast,
                self_ensemble=args.self_ensemble,
                nonlocal_blend=not args.no_nonlocal,
            )
        else:
            out = model.denoise(image, units, channel_axis=axis)
        write_image(target, out)
    except (CommandError, ValueError, TypeError, OSError) as exc:
        return None, str(exc)
    return level, None


def _denoise(args):
    from joblib import Parallel, delayed

    model = None
    if args.model is not None:
        from ._model_io import load_denoiser

        try:
            model = load_denoiser(args.model)  # loaded once, not per file
            model.set_params(
                self_ensemble=args.self_ensemble,
                nonlocal_blend=model.nonlocal_blend and not args.no_nonlocal,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
    jobs = _jobs(args)

    def run(source, target):
        start = time.perf_counter()
        level, error = _denoise_file(source, target, args, model)
        return source, target, level, error, time.perf_counter() - start

    results = Parallel(n_jobs=args.n_jobs, return_as="generator_unordered")(
        delayed(run)(source, target) for source, target in jobs
    )
    errors = []
    for k, (source, target, level, error, seconds) in enumerate(results, 1):
        if error is None:
            how = "given" if args.sigma is not None else "estimated"
            print(
                f"[{k}/{len(jobs)}] {source} -> {target}: sigma {level:.2f} "
                f"({how}), {seconds:.1f} s",
                flush=True,
            )
        else:
            errors.append(error)
            print(f"[{k}/{len(jobs)}] {source}: failed", flush=True)
            print(f"{PROG} denoise: error: {error}", file=sys.stderr, flush=True)
    if errors:
        if len(jobs) > 1:
            print(f"{len(errors)} of {len(jobs)} images failed", flush=True)
        return 1
    return 0


def _train(args):
    if args.data is not None:
        if args.images:
            raise CommandError("give image files or --data DIR, not both")
        return _train_folder(args)
    if not args.images:
        raise CommandError("give clean image files or --data DIR")
    if args.start is not None or args.n_refine is not None:
        raise CommandError("--start and --n-refine go with --data")
    args.penalty = args.penalty or "log"
    from ._image_denoiser import ImageDenoiser
    from ._model_io import save_denoiser

    try:
        images = [as_training_image(read_image(path)) for path in args.images]
    except ImageFileError as exc:
        raise CommandError(str(exc)) from exc
    common = dict(
        n_filters=args.n_filters,
        patch_size=args.patch_size,
        n_layers=args.n_layers,
        noise_std=args.sigma / 255.0,
        crop_size=args.crop_size,
        n_crops=args.n_crops,
        max_iter=args.max_iter,
        nonlocal_blend=args.nonlocal_blend,
        n_jobs=args.n_jobs,
        random_state=args.random_state,
        verbose=1,
    )
    phases = [dict(penalty="l1")]
    if PENALTIES[args.penalty].reweighted:
        phases.append(dict(penalty=args.penalty, n_stages=args.n_stages))
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
        ImageModel,
        random_crops,
        train,
        trained_denoiser,
    )
    from ._model_io import load_denoiser, save_denoiser
    from ._pretrained import denoiser_for_level
    from .datasets import load_image_folder

    if args.start is None:
        args.penalty = args.penalty or "log"
    if args.penalty is not None and not PENALTIES[args.penalty].reweighted:
        raise CommandError(
            "--data trains a reweighted model: --penalty log, shaped_log, "
            "shifted_log or blended_log"
        )
    learning_rate = args.learning_rate or (0.01 if args.start is None else 0.003)
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
        if args.start is None:
            model = ImageModel(
                args.n_filters,
                args.patch_size,
                args.n_layers,
                args.n_stages,
                penalty=args.penalty,
                n_refine=args.n_refine or 0,
                stages_fixed=args.stages_fixed,
                n_jobs=args.n_jobs,
            )
        else:
            start = (
                denoiser_for_level(args.sigma)
                if args.start == "shipped"
                else load_denoiser(args.start)
            )
            model = ImageModel.from_denoiser(
                start,
                args.sigma / 255.0,
                penalty=args.penalty,
                n_refine=args.n_refine,
                stages_fixed=args.stages_fixed,
                n_jobs=args.n_jobs,
            )
        result = train(
            model,
            images,
            validation,
            noise_std=args.sigma / 255.0,
            n_steps=args.steps,
            batch=args.n_crops,
            crop=args.crop_size,
            learning_rate=learning_rate,
            validate_every=args.validate_every,
            checkpoint=checkpoint,
            resume=args.resume,
            seed=args.random_state,
            log=lambda line: print(line, flush=True),
        )
        den = trained_denoiser(model, result.best_params, args.sigma / 255.0)
        if args.nonlocal_blend:
            print("fitting the non-local blend", flush=True)
            # Evenly spaced images, one noise draw (its own seed).
            fit_on = images[:: -(-len(images) // BLEND_IMAGES)]
            rng = np.random.default_rng([args.random_state, 2])
            den.set_params(nonlocal_blend=True)
            den._fit_nonlocal(fit_on, None, rng, sigma=args.sigma / 255.0)
        save_denoiser(den, output)
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
        0 on success, 1 if a file failed or on a user error (one line on
        stderr per error), 2 on bad arguments (argparse's message).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or an argparse error already printed
        return int(exc.code or 0)
    try:
        status = {"demo": _demo, "denoise": _denoise, "train": _train}[args.command](
            args
        )
    except (CommandError, ImageFileError) as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return status or 0
