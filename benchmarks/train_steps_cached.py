"""Learn refinement steps on cached outputs of a model's fixed stages.

``train_bsd.py --stages-fixed`` runs the model's unrolled stages (60 layers
of two convolutions each) forward at every Adam step, to feed refinement
steps that cost two convolutions each. Here the stages run once per Train400
image and noise draw, on the whole image exactly as ``denoise`` runs them
(scaled to the model's level, median-shifted, padded by 2 (p - 1)), and the
steps learn on windows of those outputs: the same loss, several times
cheaper per Adam step (one step learned: 0.62 s against 4.4-5.5 s on one
core, ``DENOISE_RESULTS.md``), and the stages' outputs at the images' borders are
those a user's image gets (``--stages-fixed`` pads each crop). The price: a
finite set of noise draws (``--draws`` per image) instead of fresh noise,
and no flips or rotations (the stages are not symmetric, so a flipped
output is not the output of the flipped image).

Each window is a ``--crop`` square scored on its pixels, inside a halo of
p - 1 pixels per learned step (a step of p x p filters reads p - 1 pixels
around each output pixel), so that the scored pixels see what the whole
image gives them.
``--add N`` appends ``N`` identity steps (the same model at step 0) to the
model's steps; ``--train new`` learns only those, ``--train all`` every
step. Adam with a cosine-decayed learning rate, the parameters stepped as
``train_bsd.py`` steps them (filters in absolute units, the rest relative
to their root mean square, absolute from the identity), float32;
Set12 (whole images, noise seed 0) is the validation, BSD68 is never read.

Writes into ``--out DIR``: ``train.log`` (the command, one line per
validation), ``checkpoint.npz`` (every validation and every
``--checkpoint-every`` seconds) and, at the end, ``model.npz`` (the stages
with the best validation's steps, readable by ``load_denoiser``).
``--resume`` continues from the checkpoint a run with the same arguments
(and the same model file) left, step for step the run that was never
stopped; ``--stop-at STEP`` ends a session there, with a checkpoint,
without changing the schedule. ``--cache FILE`` keeps the stages' outputs
for other runs on the same model, level, draws and seed.

    cd benchmarks
    python train_steps_cached.py --data DATA --sigma 25 \
        --model ../sklearn_ergo/pretrained/sigma25.npz --add 1 --train new \
        --out runs/sigma25-tail2 --cache /tmp/cache25.npz
"""

import argparse
import copy
import functools
import hashlib
import json
import pathlib
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from sklearn_ergo import load_denoiser, save_denoiser
from sklearn_ergo._convolutional import (
    DENOISE_PADDING,
    ConvolutionalOperator,
    denoise_images,
    pad_images,
)
from sklearn_ergo._image_data import median_shift
from sklearn_ergo._image_training import benchmark_noise, cosine_learning_rate, psnr
from sklearn_ergo._model_io import savez_atomic
from sklearn_ergo._optim import Adam, ParameterVector
from sklearn_ergo._refinement import PARAM_NAMES, Refinement
from sklearn_ergo.datasets import load_image_folder


def stage_outputs(den, images, noisy, sigma, with_steps=False, block=16):
    """The stages of ``den`` on whole ``noisy`` images, as ``denoise`` runs them.

    Returns the scale ``a``, and per image the padded model-domain input
    ``X``, the stages' output ``x`` (same shape; with ``with_steps`` after
    the model's refinement steps too), the model-domain clean image (padded
    alike) and the median shift ``b``.
    """
    a = den.noise_std_ / sigma
    stages = den if with_steps else without_steps(den)
    params = {k: v.astype(np.float32) for k, v in stages._params().items()}
    p = stages.patch_size
    Xs, xs, Ys, shifts = [], [], [], []
    for start in range(0, len(noisy), block):
        for clean, y in zip(
            images[start : start + block], noisy[start : start + block], strict=True
        ):
            z = (a * y)[None].astype(np.float32)
            b = median_shift(z)
            Xs.append(pad_images(z + b, p, DENOISE_PADDING)[0])
            Ys.append(pad_images((a * clean)[None] + b, p, DENOISE_PADDING)[0])
            shifts.append(float(b.ravel()[0]))
        new = Xs[start:]
        groups = [np.stack(new)] if len({v.shape for v in new}) == 1 else new
        for batch in groups:
            batch = batch.reshape(-1, *batch.shape[-2:])
            xs.extend(denoise_images(stages._map(), params, batch, pad=False))
    return a, Xs, xs, Ys, np.array(shifts)


def without_steps(den):
    """A copy of ``den`` without its refinement steps: its stages alone."""
    stages = copy.deepcopy(den)
    stages.set_params(n_refine=0)
    return stages


def file_digest(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def cached_outputs(den, model_path, images, sigma, draws, seed, with_steps, cache):
    """Train400's stage outputs (``draws`` noise draws per image), from ``cache``."""
    key = file_digest(model_path)
    key += f"-{sigma}-{draws}-{seed}-{with_steps}"
    if cache is not None and pathlib.Path(cache).exists():
        with np.load(cache) as f:
            if str(f["key"]) == key:
                return float(f["a"]), f["X"], f["x"], f["Y"]
    noisy, cleans = [], []
    for d in range(draws):
        noisy += [
            im + sigma * np.random.default_rng([seed, d, i]).standard_normal(im.shape)
            for i, im in enumerate(images)
        ]
        cleans += images
    a, X, x, Y, _ = stage_outputs(den, cleans, noisy, sigma, with_steps)
    X, x, Y = (np.stack(v).astype(np.float32) for v in (X, x, Y))
    if cache is not None:
        np.savez(cache, key=key, a=a, X=X, x=x, Y=Y)
    return a, X, x, Y


def windows(arrays, n, crop, halo, border, rng):
    """``n`` random ``crop + 2 halo`` windows of the same places in ``arrays``.

    The scored ``crop x crop`` centre lies in the image (``border`` pixels of
    padding around it), the window inside the padded array.
    """
    N, H, W = arrays[0].shape
    lo = max(halo - border, 0)
    which = rng.integers(N, size=n)
    rows = rng.integers(lo, H - 2 * border - crop - lo + 1, size=n)
    cols = rng.integers(lo, W - 2 * border - crop - lo + 1, size=n)
    size = crop + 2 * halo
    out = [np.empty((n, size, size), dtype=arr.dtype) for arr in arrays]
    for k, (i, r, c) in enumerate(zip(which, rows, cols, strict=True)):
        r0, c0 = border + r - halo, border + c - halo
        for arr, o in zip(arrays, out, strict=True):
            o[k] = arr[i, r0 : r0 + size, c0 : c0 + size]
    return out


def step_operator(shape, p):
    return functools.partial(ConvolutionalOperator, image_shape=shape, patch_size=p)


def loss_grad(steps, params, X, x, Y, halo, p, a):
    """Mean loss ``||out - clean||^2 / 2`` on the windows' centres, in image units."""
    n, size, _ = X.shape
    op = step_operator((size, size), p)
    flat = [v.reshape(n, -1) for v in (X, x)]
    cast = {k: v.astype(np.float32) for k, v in params.items()}
    out, inputs = steps.forward(op, cast, flat[1], flat[0], record=True)
    mask = np.zeros((size, size), dtype=np.float32)
    mask[halo : size - halo, halo : size - halo] = 1.0
    r = (out - Y.reshape(n, -1)) * mask.ravel()
    loss = 0.5 * float(np.vdot(r, r)) / n / a**2
    grads = steps.backward(op, cast, flat[0], inputs, r / (n * a**2))[1]
    return loss, {k: g.astype(np.float64) for k, g in grads.items()}


def batch_loss_grad(pool, threads, steps, params, X, x, Y, halo, p, a):
    """:func:`loss_grad` of the windows split among ``threads`` threads of
    ``pool`` (NumPy's products and passes release the GIL), the groups'
    means weighted by their sizes."""
    if threads == 1:
        return loss_grad(steps, params, X, x, Y, halo, p, a)
    groups = np.array_split(np.arange(len(X)), threads)
    parts = pool.map(
        lambda g: loss_grad(steps, params, X[g], x[g], Y[g], halo, p, a), groups
    )
    loss, grads = 0.0, {k: 0.0 for k in params}
    for g, (part_loss, part_grads) in zip(groups, parts, strict=True):
        w = len(g) / len(X)
        loss += w * part_loss
        for k, v in part_grads.items():
            grads[k] = grads[k] + w * v
    return loss, grads


def validate(steps, params, val, p, a, border):
    scores = []
    cast = {k: v.astype(np.float32) for k, v in params.items()}
    for X, x, clean, b in val:
        H, W = X.shape
        out = steps.forward(
            step_operator((H, W), p), cast, x.ravel()[None], X.ravel()[None]
        )[0].reshape(H, W)
        out = (out[border : H - border, border : W - border] - b) / a
        scores.append(psnr(out, clean))
    return float(np.mean(scores))


# The arguments a resumed run must share with the run that it continues.
RUN_SETTINGS = (
    "sigma", "add", "train", "draws", "steps", "batch", "crop", "lr",
    "final_lr_fraction", "validate_every", "seed",
)  # fmt: skip


def save_checkpoint(path, settings, state):
    """Write ``state`` to ``path`` atomically."""
    arrays = {"settings": np.array(json.dumps(settings, sort_keys=True))}
    for group in ("params", "best_params", "adam_m", "adam_v", "adam_t"):
        arrays.update((f"{group}/{k}", np.asarray(v)) for k, v in state[group].items())
    for name in ("t", "best", "best_step", "elapsed"):
        arrays[name] = np.array(state[name])
    arrays["losses"] = np.array(state["losses"], dtype=np.float64)
    arrays["rng"] = np.array(json.dumps(state["rng"]))
    savez_atomic(path, **arrays)


def load_checkpoint(path, settings):
    """The state saved at ``path``; ``SystemExit`` if it has other settings."""
    with np.load(path) as f:
        saved = json.loads(str(f["settings"]))
        if saved != settings:
            diff = sorted(k for k in settings if saved.get(k) != settings[k])
            raise SystemExit(
                f"{path} was written with other settings ({', '.join(diff)}); "
                "resume with the same ones."
            )
        state = {g: {} for g in ("params", "best_params", "adam_m", "adam_v", "adam_t")}
        for key in f.files:
            if "/" in key:
                group, name = key.split("/")
                state[group][name] = f[key]
        state.update((name, f[name].item()) for name in ("t", "best_step"))
        state.update((name, float(f[name])) for name in ("best", "elapsed"))
        state["losses"] = list(f["losses"])
        state["rng"] = json.loads(str(f["rng"]))
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder with train400/, set12/")
    parser.add_argument("--sigma", type=float, required=True, help="noise std x 255")
    parser.add_argument("--model", required=True, help="model file with steps")
    parser.add_argument("--add", type=int, default=1, help="identity steps appended")
    parser.add_argument("--train", choices=("new", "all"), default="new")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--cache",
        help="npz file of the stages' outputs, reused when its model, level, "
        "draws and seed match (else rewritten)",
    )
    parser.add_argument("--draws", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--final-lr-fraction", type=float, default=0.01)
    parser.add_argument("--validate-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--checkpoint-every",
        type=float,
        default=300.0,
        help="seconds, besides validations",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads sharing each batch's windows (the sum's rounding depends "
        "on it: resume with the same number for the same run)",
    )
    parser.add_argument("--resume", action="store_true", help="from --out's checkpoint")
    parser.add_argument("--stop-at", type=int, help="end this session after that step")
    args = parser.parse_args(argv)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.npz"
    if (out / "model.npz").exists():
        raise SystemExit(f"{out / 'model.npz'} exists; pass another --out.")
    if checkpoint.exists() != args.resume:
        raise SystemExit(
            f"{checkpoint} exists: pass --resume, or another --out."
            if checkpoint.exists()
            else f"--resume needs {checkpoint}, which does not exist."
        )
    settings = {k: getattr(args, k) for k in RUN_SETTINGS}
    settings["model"] = file_digest(args.model)
    log_file = open(out / "train.log", "a")

    def log(line):
        print(line, flush=True)
        print(line, file=log_file, flush=True)

    log("$ python " + shlex.join(sys.argv))
    data = pathlib.Path(args.data)
    sigma = args.sigma / 255.0
    den = load_denoiser(args.model)
    p = den.patch_size
    border = DENOISE_PADDING * (p - 1)
    # Steps that stay fixed run once, in the cache, as the stages do.
    baked = args.train == "new" and den.n_refine > 0
    start = time.perf_counter()
    a, X, x, Y = cached_outputs(
        den,
        args.model,
        load_image_folder(data / "train400"),
        sigma,
        args.draws,
        args.seed,
        baked,
        args.cache,
    )
    val_images = load_image_folder(data / "set12")
    _, Xv, xv, _, bv = stage_outputs(
        den, val_images, benchmark_noise(val_images, sigma, seed=0), sigma, baked
    )
    val = list(zip(Xv, xv, val_images, bv, strict=True))
    log(
        f"outputs of {len(X)} training and {len(val)} validation images "
        f"in {time.perf_counter() - start:.0f} s"
    )

    n_old = den.n_refine
    old = {k: getattr(den, f"{k}_") for k in PARAM_NAMES} if n_old else None
    steps = Refinement(args.add if baked else n_old + args.add)
    params = steps.initial_params(*den.components_.shape[-2:])
    if old is not None and not baked:
        for k in PARAM_NAMES:
            params[k][:n_old] = old[k]
    halo = (p - 1) * steps.n_steps
    rng = np.random.default_rng([args.seed, 1])
    # As train_bsd.py steps them: filters in absolute units, the influence
    # functions and weights relative to their root mean square (absolute
    # from the identity, where it is 0).
    scales = ParameterVector.from_params(params, (), {"refine_filters": 1.0}).scales
    adams = {k: Adam(v.shape, args.lr) for k, v in params.items()}
    if args.resume:
        state = load_checkpoint(checkpoint, settings)
        params, best_params = state["params"], state["best_params"]
        for k, adam in adams.items():
            adam.m, adam.v = state["adam_m"][k], state["adam_v"][k]
            adam.t = int(state["adam_t"][k])
        rng.bit_generator.state = state["rng"]
        first, best, best_step = state["t"] + 1, state["best"], state["best_step"]
        losses = state["losses"]
        start -= state["elapsed"]  # elapsed counts every session's wall time
        log(f"resumed from {checkpoint} at step {state['t']}")
    else:
        best = validate(steps, params, val, p, a, border)
        best_params, best_step = {k: v.copy() for k, v in params.items()}, 0
        first, losses = 1, []
        log(f"step 0/{args.steps}: validation PSNR {best:.3f} dB")
    saved_at = time.perf_counter()
    pool = ThreadPoolExecutor(args.threads) if args.threads > 1 else None

    def save(t):
        save_checkpoint(
            checkpoint,
            settings,
            {
                "t": t,
                "params": params,
                "best_params": best_params,
                "adam_m": {k: adam.m for k, adam in adams.items()},
                "adam_v": {k: adam.v for k, adam in adams.items()},
                "adam_t": {k: adam.t for k, adam in adams.items()},
                "rng": rng.bit_generator.state,
                "best": best,
                "best_step": best_step,
                "losses": losses,
                "elapsed": time.perf_counter() - start,
            },
        )

    last = args.steps if args.stop_at is None else min(args.stop_at, args.steps)
    for t in range(first, last + 1):
        lr = cosine_learning_rate(t - 1, args.steps, args.lr, args.final_lr_fraction)
        batch = windows((X, x, Y), args.batch, args.crop, halo, border, rng)
        loss, grads = batch_loss_grad(
            pool, args.threads, steps, params, *batch, halo, p, a
        )
        losses.append(loss)
        for k, g in grads.items():
            adams[k].learning_rate = lr * scales[k]
            params[k] += adams[k].step(g)
        validated = t % args.validate_every == 0 or t == args.steps
        if validated:
            score = validate(steps, params, val, p, a, border)
            if score > best:
                best, best_step = score, t
                best_params = {k: v.copy() for k, v in params.items()}
            log(
                f"step {t}/{args.steps}: loss {np.mean(losses):.6f}, validation PSNR "
                f"{score:.3f} dB (best {best:.3f} at step {best_step}), lr {lr:.5f}, "
                f"elapsed {time.perf_counter() - start:.0f} s"
            )
            losses = []
        if (
            validated
            or t == last
            or time.perf_counter() - saved_at >= args.checkpoint_every
        ):
            save(t)
            saved_at = time.perf_counter()
    if last < args.steps:
        log(f"stopped at step {last}: continue with --resume")
        return
    if baked:
        best_params = {k: np.concatenate([old[k], best_params[k]]) for k in PARAM_NAMES}
    den.set_params(n_refine=len(best_params["refine_weight"]))
    for k in PARAM_NAMES:
        setattr(den, f"{k}_", best_params[k])
    save_denoiser(den, out / "model.npz")
    checkpoint.unlink()  # the run is done: model.npz holds what it was for
    log(f"model.npz: step {best_step}, Set12 {best:.3f} dB")


if __name__ == "__main__":
    # The windows' threads are the parallelism: BLAS threads on top of them
    # oversubscribed the cores (a step took 10x as long beside other jobs).
    with threadpool_limits(1, user_api="blas"):
        main()
