"""Train the convolutional log-penalty denoiser on Train400, validate on Set12.

The standard protocol of TNRD and DnCNN: clean training images only from
``DATA/train400``; at every step ``--batch`` random ``--crop`` crops under a
random flip/rotation with fresh Gaussian noise of ``--sigma``/255, one Adam
step (cosine learning-rate decay over ``--steps``, float32); every
``--validate-every`` steps the mean PSNR on the whole ``DATA/set12`` images
(fixed noise, output clipped to [0, 1], peak 1), the best parameters kept.
BSD68 is never read here.

Writes into ``--out DIR``:

- ``checkpoint.npz``: every ``--checkpoint-minutes``, at the end, on Ctrl-C,
  ``kill -INT`` or ``kill -TERM`` and when ``--max-hours`` is reached;
  ``--resume`` continues it exactly (same settings required);
- ``train.log``: the command and one progress line per validation (step,
  training loss, validation PSNR, elapsed, time left), appended on resume;
- ``model.npz``: the parameters of the best validation PSNR, readable by
  ``sklearn_ergo.load_denoiser`` and ``denoise --model``.

``--start MODEL`` fine-tunes a trained model file at another ``--sigma``:
its settings and parameters, the images scaled so that their noise has the
model's level (as ``denoise`` applies it), so that step 0 is the model as
it is used at ``--sigma``.  With ``--penalty shaped_log`` a log-penalty
model starts with the log shape (the same model) and learns its shape, and
with ``--penalty shifted_log`` a shaped-log model starts with zero gains
(the same model) and learns them too, and ``--penalty blended_log`` a
shifted-log model with zero blends; a
``--patch-size`` above the model's puts its filters in the centre of larger
supports, and a larger ``--n-stages`` appends copies of its last stage.

    python benchmarks/train_bsd.py --data ../shared/data --sigma 25 --out runs/s25
    python benchmarks/train_bsd.py --data ../shared/data --sigma 25 --out runs/s25 \
        --resume
"""

import argparse
import pathlib
import shlex
import signal
import sys

import numpy as np

from sklearn_ergo import load_denoiser
from sklearn_ergo._image_training import ImageModel, centred, save_model, train
from sklearn_ergo._init import zero_mean_random_rows
from sklearn_ergo.datasets import load_image_folder


def embedded_filters(path, n_filters, patch_size, seed):
    """The filters of the model file ``path`` in the centre of ``p x p`` supports.

    Filters beyond the file's are zero-mean and random, each with a fifth of
    the mean norm of the file's (as ``initial_filters`` sizes its extras
    against the TV differences).  ``None`` without a file.
    """
    if path is None:
        return None
    K = load_denoiser(path).components_
    K = K[-1] if K.ndim == 3 else K  # a per-stage model: its last stage
    if len(K) > n_filters:
        raise SystemExit(f"{path}: {len(K)} filters do not fit in {n_filters}.")
    D = centred(K, patch_size)
    scale = 0.2 * float(np.mean(np.linalg.norm(K, axis=1)))
    rng = np.random.default_rng(seed)
    extra = zero_mean_random_rows(n_filters - len(K), patch_size**2, scale, rng)
    return np.vstack([D, extra])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="has train400/ and set12/")
    parser.add_argument("--sigma", type=float, required=True, help="8-bit units")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--n-filters", type=int, default=48)
    parser.add_argument(
        "--patch-size", type=int, help="7; with --start: the start model's"
    )
    parser.add_argument(
        "--n-stages",
        type=int,
        help="default 2; with --start, the model's, and more append copies of "
        "its last stage",
    )
    parser.add_argument(
        "--n-layers", type=int, help="20; with --start: the start model's"
    )
    parser.add_argument("--unroll", choices=["last", "ergodic"], default="last")
    parser.add_argument(
        "--n-refine",
        type=int,
        help="reaction-diffusion steps after the stages: default 0; with "
        "--start the model's, and more append steps that start as the identity",
    )
    parser.add_argument(
        "--penalty",
        choices=["log", "shaped_log", "shifted_log", "blended_log"],
        help="log; with --start: the start model's",
    )
    parser.add_argument(
        "--stages-fixed",
        action="store_true",
        help="learn only the refinement steps (the stages run forward only)",
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--final-lr-fraction", type=float, default=0.01)
    parser.add_argument("--validate-every", type=int, default=50)
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument(
        "--max-hours", type=float, help="stop this session (checkpointed) after it"
    )
    parser.add_argument(
        "--per-stage",
        action="store_true",
        help="every stage with its own filters and eps (TNRD-like)",
    )
    parser.add_argument(
        "--init",
        help="a model file whose filters (embedded in the centre of the larger "
        "support, plus small random ones) replace the TV start",
    )
    parser.add_argument(
        "--start",
        help="a model file to fine-tune at --sigma: its settings and parameters "
        "replace those above",
    )
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # A run started in the background ignores SIGINT, and a session's end
    # sends SIGTERM: both stop it as Ctrl-C does, with a checkpoint.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = pathlib.Path(args.data)
    train_images = load_image_folder(data / "train400")
    val_images = load_image_folder(data / "set12")
    if args.start is not None:
        if args.init is not None:
            raise SystemExit("Pass --init or --start, not both.")
        den = load_denoiser(args.start)
        model = ImageModel.from_denoiser(
            den,
            args.sigma / 255.0,
            penalty=args.penalty,
            patch_size=args.patch_size,
            n_stages=args.n_stages,
            n_layers=args.n_layers,
            n_refine=args.n_refine,
            stages_fixed=args.stages_fixed,
            n_jobs=args.n_jobs,
        )
    else:
        args.patch_size = args.patch_size or 7
        args.penalty = args.penalty or "log"
        model = ImageModel(
            args.n_filters,
            args.patch_size,
            args.n_layers or 20,
            args.n_stages or 2,
            unroll=args.unroll,
            penalty=args.penalty,
            per_stage=args.per_stage,
            n_refine=args.n_refine or 0,
            stages_fixed=args.stages_fixed,
            init=embedded_filters(
                args.init, args.n_filters, args.patch_size, args.seed
            ),
            n_jobs=args.n_jobs,
        )
    with open(out / "train.log", "a") as log_file:

        def log(line):
            print(line, flush=True)
            print(line, file=log_file, flush=True)

        log("$ python " + shlex.join(sys.argv))
        result = train(
            model,
            train_images,
            val_images,
            noise_std=args.sigma / 255.0,
            n_steps=args.steps,
            batch=args.batch,
            crop=args.crop,
            learning_rate=args.lr,
            final_lr_fraction=args.final_lr_fraction,
            validate_every=args.validate_every,
            checkpoint=out / "checkpoint.npz",
            checkpoint_every=60.0 * args.checkpoint_minutes,
            resume=args.resume,
            max_seconds=None if args.max_hours is None else 3600.0 * args.max_hours,
            seed=args.seed,
            log=log,
        )
        save_model(model, result.best_params, args.sigma / 255.0, out / "model.npz")
        finished = result.step == args.steps
        log(
            f"{'finished' if finished else 'stopped'} at step {result.step}; "
            f"model.npz holds step {result.best_step} (Set12 PSNR "
            f"{result.best_psnr:.2f} dB)"
            + ("" if finished else "; continue with --resume")
        )
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
