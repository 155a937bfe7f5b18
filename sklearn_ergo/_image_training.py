"""Mini-batch training of a convolutional denoiser on a folder of clean images.

Every step draws ``batch`` random ``crop x crop`` crops of random training
images, each under one of the 8 symmetries of the square (rotations by
multiples of 90 degrees, with or without a flip), adds *fresh* Gaussian noise
of the training level, and takes one Adam step on the mean loss of the
batch.  Every ``validate_every`` steps the denoiser runs on whole validation
images under the protocol of the published denoising tables
(:func:`benchmark_noise`, :func:`psnr`), and the parameters with the best
validation PSNR are kept.

The model is any object with

- ``loss_grad(params, noisy, clean) -> (loss, grads)``: ``params`` and
  ``grads`` are dicts of arrays of the same shapes, ``noisy`` and ``clean``
  are ``(N, H, W)`` crops padded by ``model.pad`` pixels on each side;
- ``denoise(params, images) -> images`` for ``(N, H, W)`` images;
- ``pad`` (int), ``positive`` (the keys of parameters that must stay
  positive: they are optimised through their logarithm), ``scales`` (a dict:
  the fixed scale of a parameter group's steps, see
  :class:`~sklearn_ergo._optim.ParameterVector`; others step relative to
  their root mean square), ``settings()`` (a
  dict of JSON values that identifies the model in a checkpoint) and
  ``initial_params(clean, noisy, rng)``.

:class:`ImageModel` adapts the log-penalty convolutional denoiser of
:class:`~sklearn_ergo.ImageDenoiser` to it.  The loop never looks at the shapes in
``params``: a model with one operator per stage plugs in unchanged.

A checkpoint (``.npz``, replaced atomically) holds everything the loop
needs to continue exactly where it stopped: ``train(..., resume=True)``
after an interruption gives bit for bit the run that was never interrupted.
"""

import hashlib
import json
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import sklearn.base

from . import datasets
from ._convolutional import denoise_images, images_loss_grad
from ._image_data import median_shift
from ._image_denoiser import ImageDenoiser
from ._model_io import save_denoiser, savez_atomic
from ._optim import Adam, ParameterVector
from ._penalties import make_penalty
from ._refinement import Refinement

#: Number of symmetries of the square applied to training crops.
N_DIHEDRAL = 8

_FORMAT = "sklearn-ergo-training-checkpoint-1"


# -- data ---------------------------------------------------------------------
def dihedral(image, t):
    """Symmetry ``t`` in ``0..7`` of the square applied to the last two axes.

    ``t % 4`` quarter turns, then a left-right flip when ``t >= 4``.
    """
    out = np.rot90(image, t % 4, axes=(-2, -1))
    return np.flip(out, axis=-1) if t >= 4 else out


def random_crops(images, n, size, rng):
    """``n`` crops ``size x size`` of random images, each under a random symmetry.

    Images are drawn with probability proportional to their area, positions
    uniformly among those where the crop lies inside the image, symmetries
    uniformly among the 8 of :func:`dihedral`.

    Returns
    -------
    crops : ndarray of shape (n, size, size)
    """
    areas = np.array([im.size for im in images], dtype=np.float64)
    which = rng.choice(len(images), size=n, p=areas / areas.sum())
    crops = np.empty((n, size, size))
    for k, i in enumerate(which):
        H, W = images[i].shape
        a = rng.integers(H - size + 1)
        b = rng.integers(W - size + 1)
        crops[k] = dihedral(images[i][a : a + size, b : b + size], rng.integers(8))
    return crops


def benchmark_noise(images, sigma, seed=0):
    """Noisy copies of clean images: the protocol of the published tables.

    ``clean + sigma * n`` with standard normal ``n`` (not clipped); the noise
    of the ``i``-th image is drawn by ``np.random.default_rng([seed, i])``,
    so it depends on the image's place in the (sorted) set and on ``seed``
    only.  ``sigma`` is in the units of the images (``25 / 255`` for images
    in ``[0, 1]``).
    """
    return [
        im + sigma * np.random.default_rng([seed, i]).standard_normal(im.shape)
        for i, im in enumerate(images)
    ]


def psnr(output, clean):
    """PSNR (dB, peak 1) of an output clipped to ``[0, 1]``: the tables' protocol."""
    return float(datasets.psnr(np.clip(output, 0.0, 1.0), clean))


# -- the model ------------------------------------------------------------------
class ImageModel:
    """The reweighted convolutional :class:`ImageDenoiser`, for :func:`train`.

    ``params = {"K": ([S,] n_filters, p * p), "eps": ([S,] n_filters)}`` (and
    ``"shape": ([S,] n_filters, 8)`` for ``penalty="shaped_log"``): the
    parameters of ``ImageDenoiser(penalty=penalty, ...)._map()``, with a
    leading stage axis ``S = n_stages`` when ``per_stage``; ``unroll`` is the
    output of each stage (``"last"`` iterate or ``"ergodic"`` average).
    ``n_refine`` reaction-diffusion steps follow the stages (their
    parameters ``refine_*``, see :mod:`~sklearn_ergo._refinement`); with
    ``stages_fixed`` only they learn, and the stages run forward only.
    ``init`` filters (shape ``(n_filters, p * p)``), e.g. those of a smaller
    trained model embedded in larger supports, replace the TV start.  The
    loss is over the crops' own pixels, not their padding.

    ``start`` (a dict of ``params`` of these settings, e.g. a trained
    model's) replaces the tuned start altogether, and with ``scale`` the
    model sees every image as :meth:`ImageDenoiser.denoise` gives it to a
    model of another noise level: ``z = scale * x + b``, ``b`` moving the
    median of ``scale * x`` into ``[0, 1]``; the output is ``(D(z) - b) /
    scale``.  A model trained at ``sigma0`` thus starts at ``sigma`` (with
    ``scale = sigma0 / sigma``) exactly as ``denoise`` applies it there, and
    is saved with ``noise_std_ = sigma0``.  The loss is in the images' units.
    """

    def __init__(
        self,
        n_filters=48,
        patch_size=7,
        n_layers=20,
        n_stages=2,
        *,
        unroll="last",
        penalty="log",
        per_stage=False,
        n_refine=0,
        stages_fixed=False,
        init=None,
        start=None,
        scale=1.0,
        n_jobs=None,
    ):
        if start is not None and init is not None:
            raise ValueError("Pass init (filters) or start (parameters), not both.")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale!r}.")
        self.start = (
            None
            if start is None
            else {k: np.asarray(v, dtype=np.float64) for k, v in start.items()}
        )
        self.scale = float(scale)
        if stages_fixed and not n_refine:
            raise ValueError("stages_fixed=True needs n_refine > 0 steps to learn.")
        self.stages_fixed = bool(stages_fixed)
        self.denoiser = ImageDenoiser(
            n_filters=n_filters,
            patch_size=patch_size,
            n_layers=n_layers,
            unroll=unroll,
            penalty=penalty,
            n_stages=n_stages,
            per_stage=per_stage,
            n_refine=n_refine,
            init="tv" if init is None else np.asarray(init, dtype=np.float64),
            n_jobs=n_jobs,
        )
        self.pad = patch_size - 1
        umap = self.denoiser._map()
        if not umap.penalty.reweighted:
            raise ValueError(f"penalty must be reweighted, got {penalty!r}.")
        self.positive = umap.penalty.positive_params
        # The refinement filters start as a unit-norm basis: they step in
        # absolute units, as in the autograd probe whose steps gained; steps
        # relative to their RMS (1 / p) would be p times smaller.
        self.scales = {"refine_filters": 1.0} if n_refine else {}

    @classmethod
    def from_denoiser(
        cls,
        den,
        noise_std,
        *,
        penalty=None,
        patch_size=None,
        n_stages=None,
        n_layers=None,
        n_refine=None,
        stages_fixed=False,
        n_jobs=None,
    ):
        """A model that starts as the fitted ``den`` applied at ``noise_std``.

        Its settings and parameters (``scale = den.noise_std_ / noise_std``,
        see the class); parameters of ``penalty`` that ``den`` lacks (the
        shape of ``"shaped_log"`` for a ``"log"`` model) start where the
        model is ``den``, and a larger ``patch_size`` holds its filters in
        the centre of the larger supports.  More ``n_stages`` than ``den``'s
        append stages, one more majorize-minimize step each (with the
        parameters of its last stage when ``den`` is per-stage), and another
        ``n_layers`` unrolls every stage to that depth: the start is then not
        ``den``'s output.  More ``n_refine`` than ``den``'s append refinement
        steps that start as the identity (the same output).
        """
        penalty = penalty or den.penalty
        patch_size = patch_size or den.patch_size
        n_stages = n_stages or den.n_stages
        if n_stages < den.n_stages:
            raise ValueError(
                f"n_stages={n_stages} would drop stages of a {den.n_stages}-stage "
                "model; only adding stages is supported."
            )
        start = {"K": centred(den.components_, patch_size)}
        penalty_object = make_penalty(penalty)
        for name in penalty_object.param_names:
            value = getattr(den, f"{name}_", None)
            if value is None:
                value = penalty_object.initial_param(name, den.components_.shape[:-1])
            start[name] = value
        if den.per_stage and n_stages > den.n_stages:
            extra = n_stages - den.n_stages
            start = {
                k: np.concatenate([v, np.repeat(v[-1:], extra, axis=0)])
                for k, v in start.items()
            }
        n_refine = den.n_refine if n_refine is None else n_refine
        if n_refine < den.n_refine:
            raise ValueError(
                f"n_refine={n_refine} would drop refinement steps of a model "
                f"with {den.n_refine}; only adding steps is supported."
            )
        if den.n_refine and patch_size != den.patch_size:
            raise ValueError("A model with refinement steps keeps its patch_size.")
        if den.n_refine:
            start |= {n: getattr(den, f"{n}_") for n in Refinement.param_names}
        if n_refine > den.n_refine:
            n = patch_size**2
            added = Refinement(n_refine - den.n_refine).initial_params(n - 1, n)
            for name, value in added.items():
                start[name] = np.concatenate([start.get(name, value[:0]), value])
        return cls(
            den.components_.shape[-2],
            patch_size,
            n_layers or den.n_layers,
            n_stages,
            unroll=den.unroll,
            penalty=penalty,
            per_stage=den.per_stage,
            n_refine=n_refine,
            stages_fixed=stages_fixed,
            start=start,
            scale=den.noise_std_ / noise_std,
            n_jobs=n_jobs,
        )

    def settings(self):
        den = self.denoiser
        init = "tv"
        if not isinstance(den.init, str):  # identified by a digest of its values
            init = _digest(den.init)
        start = None
        if self.start is not None:
            start = _digest(*(self.start[k] for k in sorted(self.start)))
        # The penalty is named only when it is not "log": checkpoints of log
        # models predate the choice and stay resumable.
        # So are refinement steps, and learning them alone.
        named = {} if den.penalty == "log" else {"penalty": den.penalty}
        if den.n_refine:
            named["n_refine"] = den.n_refine
        if self.stages_fixed:
            named["stages_fixed"] = True
        return named | {
            "model": "convolutional-log",
            "n_filters": den.n_filters,
            "patch_size": den.patch_size,
            "n_layers": den.n_layers,
            "n_stages": den.n_stages,
            "unroll": den.unroll,
            "per_stage": den.per_stage,
            "init": init,
            "start": start,
            "scale": self.scale,
        }

    def loss_grad(self, params, noisy, clean):
        den, a = self.denoiser, self.scale
        noisy = a * noisy
        # At scale 1 the images are the training images themselves, in [0, 1].
        shift = median_shift(noisy) if a != 1.0 else 0.0
        loss, grads = images_loss_grad(
            den._map(),
            params,
            noisy + shift,
            a * clean + shift,
            border=self.pad,
            n_jobs=den.n_jobs,
            stages_fixed=self.stages_fixed,
        )
        return loss / a**2, {k: g / a**2 for k, g in grads.items()}

    def denoise(self, params, images, pad=True):
        den, a = self.denoiser, self.scale
        z = a * images
        shift = median_shift(z) if a != 1.0 else 0.0
        out = denoise_images(den._map(), params, z + shift, pad=pad, n_jobs=den.n_jobs)
        return (out - shift) / a

    def initial_params(self, clean, noisy, rng):
        """``start``, or the tuned start of :meth:`ImageDenoiser.fit` on the batch.

        ``K = w D`` and ``eps = w e rms`` (``rms``: each filter's response on
        the clean crops), ``(log w, log e)`` minimising the batch's loss; with
        ``per_stage`` every stage starts there.
        """
        if self.start is not None:
            return {k: v.copy() for k, v in self.start.items()}
        den = self.denoiser
        den.noise_std_ = float(np.std(noisy - clean))
        return den._start(den._map(), noisy, clean, rng)[0]


def centred(K, patch_size):
    """Filters ``(..., n, q * q)`` in the centre of ``p x p`` supports, zero around."""
    q = math.isqrt(K.shape[-1])
    if q > patch_size:
        raise ValueError(f"filters of {q}x{q} do not fit in {patch_size}x{patch_size}.")
    a = (patch_size - q) // 2
    D = np.zeros((*K.shape[:-1], patch_size, patch_size))
    D[..., a : a + q, a : a + q] = K.reshape(*K.shape[:-1], q, q)
    return D.reshape(*K.shape[:-1], patch_size**2)


def _digest(*arrays):
    """A short digest of arrays' values: identifies them in a checkpoint."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def trained_denoiser(model, params, noise_std):
    """The fitted :class:`ImageDenoiser` of trained :class:`ImageModel` parameters.

    ``noise_std`` is the training level; the denoiser's ``noise_std_`` is
    ``noise_std * model.scale``, the level the model sees.
    """
    den = sklearn.base.clone(model.denoiser)
    den.components_ = np.asarray(params["K"], dtype=np.float64)
    for name in den._map().param_names[1:]:
        setattr(den, f"{name}_", np.asarray(params[name], dtype=np.float64))
    den.noise_std_ = float(noise_std) * model.scale
    return den


def save_model(model, params, noise_std, path):
    """Save trained :class:`ImageModel` parameters as a model file.

    The file of :func:`sklearn_ergo.save_denoiser` (``load_denoiser`` and
    ``denoise --model`` read it) of :func:`trained_denoiser`.
    """
    save_denoiser(trained_denoiser(model, params, noise_std), path)


def cosine_learning_rate(step, n_steps, learning_rate, final_fraction):
    """Cosine decay from ``learning_rate`` at step 0 to ``final_fraction`` of it."""
    cos = 0.5 * (1.0 + math.cos(math.pi * min(step, n_steps) / n_steps))
    return learning_rate * (final_fraction + (1.0 - final_fraction) * cos)


# -- the loop -------------------------------------------------------------------
@dataclass(frozen=True)
class _State:
    """Everything that a step changes; replaced as a whole once a step is done."""

    step: int
    u: np.ndarray
    adam_m: np.ndarray
    adam_v: np.ndarray
    adam_t: int
    rng_state: str
    best_u: np.ndarray
    best_step: int
    best_psnr: float
    loss_sum: float  # training loss summed since the last validation
    loss_count: int
    elapsed: float  # wall seconds of the sessions before this one
    # Rows (step, mean training loss, validation PSNR, learning rate, elapsed s).
    history: tuple = field(default_factory=tuple)


@dataclass
class TrainingResult:
    """What :func:`train` returns.

    Attributes
    ----------
    params, best_params : dict of ndarray
        The last parameters, and those of the best validation PSNR.
    best_psnr : float
    best_step : int
    step : int
        Steps done.
    history : ndarray of shape (n_validations, 5)
        Rows ``(step, mean training loss since the previous row, validation
        PSNR, learning rate, elapsed seconds)``.
    interrupted : bool
        True if stopped by KeyboardInterrupt (after saving the checkpoint).
    """

    params: dict
    best_params: dict
    best_psnr: float
    best_step: int
    step: int
    history: np.ndarray
    interrupted: bool


def _config(model, **settings):
    """What a resumed run must share with the run that wrote the checkpoint."""
    return {**model.settings(), **settings}


def save_checkpoint(path, state, flat, config):
    """Write the checkpoint to ``path`` atomically (:func:`savez_atomic`): a
    failed or interrupted write leaves the previous checkpoint intact."""
    savez_atomic(
        path,
        format=np.array(_FORMAT),
        config=np.array(json.dumps(config, sort_keys=True)),
        flat=np.array(flat.to_json()),
        step=np.array(state.step),
        u=state.u,
        adam_m=state.adam_m,
        adam_v=state.adam_v,
        adam_t=np.array(state.adam_t),
        rng_state=np.array(state.rng_state),
        best_u=state.best_u,
        best_step=np.array(state.best_step),
        best_psnr=np.array(state.best_psnr),
        loss_sum=np.array(state.loss_sum),
        loss_count=np.array(state.loss_count),
        elapsed=np.array(state.elapsed),
        history=np.array(state.history, dtype=np.float64).reshape(-1, 5),
    )


def load_checkpoint(path):
    """``(state, flat, config)`` of a checkpoint written by :func:`save_checkpoint`."""
    with np.load(path, allow_pickle=False) as data:
        if "format" not in data.files or str(data["format"]) != _FORMAT:
            raise ValueError(f"{path!s} is not a training checkpoint ({_FORMAT}).")
        state = _State(
            step=int(data["step"]),
            u=data["u"],
            adam_m=data["adam_m"],
            adam_v=data["adam_v"],
            adam_t=int(data["adam_t"]),
            rng_state=str(data["rng_state"]),
            best_u=data["best_u"],
            best_step=int(data["best_step"]),
            best_psnr=float(data["best_psnr"]),
            loss_sum=float(data["loss_sum"]),
            loss_count=int(data["loss_count"]),
            elapsed=float(data["elapsed"]),
            history=tuple(tuple(row) for row in data["history"]),
        )
        return (
            state,
            ParameterVector.from_json(str(data["flat"])),
            json.loads(str(data["config"])),
        )


def _hms(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train(
    model,
    train_images,
    val_images,
    *,
    noise_std,
    n_steps,
    batch=64,
    crop=64,
    learning_rate=0.01,
    final_lr_fraction=0.01,
    validate_every=100,
    checkpoint=None,
    checkpoint_every=300.0,
    resume=False,
    until_step=None,
    max_seconds=None,
    seed=0,
    val_seed=0,
    dtype=np.float32,
    log=print,
):
    """Train ``model`` by mini-batch Adam on random crops with fresh noise.

    Parameters
    ----------
    model : ImageModel or a model of the same interface
    train_images : list of ndarray of shape (H, W)
        Clean gray images in ``[0, 1]``, each at least ``crop x crop``.
    val_images : list of ndarray of shape (H, W)
        Clean validation images, denoised whole: their noise is
        :func:`benchmark_noise` with ``val_seed``, the score the mean
        :func:`psnr`.
    noise_std : float
        Noise level in image units (``25 / 255``).
    n_steps : int
        Length of the learning-rate schedule: the run ends there.
    batch, crop : int
        Crops per step and their size (before padding by ``model.pad``).
    learning_rate, final_lr_fraction : float
        Adam's step on the scaled parameters (see
        :class:`~sklearn_ergo._optim.ParameterVector`) decays
        along a cosine from ``learning_rate`` to ``final_lr_fraction`` times it.
    validate_every : int
        Steps between validations (also at step 0 and at the last step).
    checkpoint : path or None
        Checkpoint file, written at the start, every ``checkpoint_every``
        seconds, at the end and on KeyboardInterrupt.
    resume : bool
        Continue from ``checkpoint``, which must have the same configuration.
    until_step, max_seconds : int or float, default=None
        Stop this session (with a checkpoint) after that step or that many
        seconds, without changing the schedule: ``resume`` then continues.
    seed : int
        Seeds the initial filters and every crop, symmetry and noise draw.
    val_seed : int
    dtype : float32 or float64
        Precision of the loss, gradient and validation computations; the
        parameters and Adam's moments are kept in float64.
    log : callable
        Receives one progress line per validation.

    Returns
    -------
    TrainingResult
    """
    config = _config(
        model,
        noise_std=noise_std,
        n_steps=n_steps,
        batch=batch,
        crop=crop,
        learning_rate=learning_rate,
        final_lr_fraction=final_lr_fraction,
        seed=seed,
        val_seed=val_seed,
        dtype=np.dtype(dtype).name,
    )
    small = [im.shape for im in train_images if min(im.shape) < crop]
    if small:
        raise ValueError(
            f"training images must be at least {crop}x{crop}, got {small[0]}."
        )
    run = _Run(model, train_images, val_images, config, checkpoint, dtype, log)
    state = run.resume() if resume else run.start(seed)
    stop = n_steps if until_step is None else min(until_step, n_steps)
    interrupted = False
    try:
        state = run.loop(state, stop, validate_every, checkpoint_every, max_seconds)
    except _Interrupted as exc:
        interrupted, state = True, exc.state
        log(f"interrupted at step {state.step}")
    state = run.stamp(state)
    if checkpoint is not None:
        save_checkpoint(checkpoint, state, run.flat, config)
        log(f"checkpoint at step {state.step} saved to {checkpoint}")
    return TrainingResult(
        params=run.flat.unpack(state.u),
        best_params=run.flat.unpack(state.best_u),
        best_psnr=state.best_psnr,
        best_step=state.best_step,
        step=state.step,
        history=np.array(state.history, dtype=np.float64).reshape(-1, 5),
        interrupted=interrupted,
    )


class _Interrupted(Exception):
    """A KeyboardInterrupt, carrying the last consistent state."""

    def __init__(self, state):
        self.state = state


class _Run:
    """One session of :func:`train`: its data, validation, steps and clock."""

    def __init__(self, model, train_images, val_images, config, checkpoint, dtype, log):
        self.model, self.train_images, self.val_images = model, train_images, val_images
        self.config, self.checkpoint, self.dtype, self.log = (
            config,
            checkpoint,
            dtype,
            log,
        )
        self.noise_std = config["noise_std"]
        self.val_noisy = [
            y.astype(dtype)
            for y in benchmark_noise(val_images, self.noise_std, config["val_seed"])
        ]
        self.session_start = time.perf_counter()
        self.flat = None
        self.elapsed_before = 0.0

    def validate(self, params):
        cast = {k: v.astype(self.dtype) for k, v in params.items()}
        scores = [
            psnr(self.model.denoise(cast, y[None])[0], x)
            for x, y in zip(self.val_images, self.val_noisy, strict=True)
        ]
        return float(np.mean(scores))

    def draw(self, rng):
        clean = random_crops(
            self.train_images, self.config["batch"], self.config["crop"], rng
        )
        noisy = clean + self.noise_std * rng.standard_normal(clean.shape)
        # Symmetric padding by p - 1 (whole images get more when denoised).
        w = ((0, 0), (self.model.pad,) * 2, (self.model.pad,) * 2)
        return np.pad(noisy, w, mode="symmetric"), np.pad(clean, w, mode="symmetric")

    def now(self):
        return time.perf_counter() - self.session_start

    def stamp(self, state):
        return replace(state, elapsed=self.elapsed_before + self.now())

    def start(self, seed):
        """The tuned initial model, validated and checkpointed: step 0."""
        rng = np.random.default_rng(seed)
        noisy, clean = self.draw(rng)
        params = self.model.initial_params(clean, noisy, rng)
        self.flat = ParameterVector.from_params(
            params, self.model.positive, self.model.scales
        )
        u = self.flat.pack(params)
        psnr0 = self.validate(self.flat.unpack(u))
        learning_rate = self.config["learning_rate"]
        state = _State(
            step=0,
            u=u,
            adam_m=np.zeros_like(u),
            adam_v=np.zeros_like(u),
            adam_t=0,
            rng_state=json.dumps(rng.bit_generator.state),
            best_u=u,
            best_step=0,
            best_psnr=psnr0,
            loss_sum=0.0,
            loss_count=0,
            elapsed=self.now(),
            history=((0, math.nan, psnr0, learning_rate, 0.0),),
        )
        self.elapsed_before = state.elapsed - self.now()
        n_steps = self.config["n_steps"]
        self.log(f"step 0/{n_steps}: initial model, validation PSNR {psnr0:.3f} dB")
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, state, self.flat, self.config)
        return state

    def resume(self):
        state, self.flat, saved = load_checkpoint(self.checkpoint)
        config = self.config
        if saved != json.loads(json.dumps(config, sort_keys=True)):
            diff = sorted(
                k for k in config.keys() | saved.keys() if config.get(k) != saved.get(k)
            )
            raise ValueError(
                f"{self.checkpoint!s} was written with other settings "
                f"({', '.join(diff)}); resume with the same ones."
            )
        self.elapsed_before = state.elapsed - self.now()
        self.log(f"resumed from {self.checkpoint} at step {state.step}")
        return state

    def step(self, state, rng, adam):
        """One Adam step on a fresh batch; a new state (``state`` unchanged)."""
        noisy, clean = self.draw(rng)
        params = self.flat.unpack(state.u)
        dtype = self.dtype
        loss, grads = self.model.loss_grad(
            {k: v.astype(dtype) for k, v in params.items()},
            noisy.astype(dtype),
            clean.astype(dtype),
        )
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss at step {state.step}; the checkpoint holds "
                "the last saved state: lower the learning rate."
            )
        config = self.config
        adam.m, adam.v, adam.t = state.adam_m, state.adam_v, state.adam_t
        adam.learning_rate = cosine_learning_rate(
            state.step,
            config["n_steps"],
            config["learning_rate"],
            config["final_lr_fraction"],
        )
        u = state.u + adam.step(self.flat.chain(grads, params))
        return replace(
            state,
            step=state.step + 1,
            u=u,
            adam_m=adam.m,
            adam_v=adam.v,
            adam_t=adam.t,
            rng_state=json.dumps(rng.bit_generator.state),
            loss_sum=state.loss_sum + loss,
            loss_count=state.loss_count + 1,
        )

    def validated(self, state, learning_rate, rate):
        """``state`` with a validation row (and the best model) recorded."""
        score = self.validate(self.flat.unpack(state.u))
        row = (
            state.step,
            state.loss_sum / state.loss_count,
            score,
            learning_rate,
            self.elapsed_before + self.now(),
        )
        state = replace(
            state, loss_sum=0.0, loss_count=0, history=(*state.history, row)
        )
        if score > state.best_psnr:
            state = replace(
                state, best_u=state.u, best_step=state.step, best_psnr=score
            )
        left = rate * (self.config["n_steps"] - state.step)
        self.log(
            f"step {state.step}/{self.config['n_steps']}: loss {row[1]:.6g}, "
            f"validation PSNR {score:.3f} dB (best {state.best_psnr:.3f} at step "
            f"{state.best_step}), lr {row[3]:.3g}, elapsed {_hms(row[4])}, "
            f"left ~{_hms(left)}"
        )
        return state

    def loop(self, state, stop, validate_every, checkpoint_every, max_seconds):
        """Steps until ``stop`` (or ``max_seconds``), checkpointed on the way.

        ``state`` changes in one assignment per step, so an interruption
        anywhere leaves the last consistent state (raised as
        :class:`_Interrupted`).
        """
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(state.rng_state)
        adam = Adam(state.u.shape, self.config["learning_rate"])
        first_step, loop_start = state.step, time.perf_counter()
        last_save = time.perf_counter()
        try:
            while state.step < stop:
                if max_seconds is not None and self.now() > max_seconds:
                    break
                new = self.step(state, rng, adam)
                if new.step % validate_every == 0 or new.step == self.config["n_steps"]:
                    rate = (time.perf_counter() - loop_start) / (new.step - first_step)
                    new = self.validated(new, adam.learning_rate, rate)
                state = new
                if (
                    self.checkpoint is not None
                    and time.perf_counter() - last_save > checkpoint_every
                ):
                    save_checkpoint(
                        self.checkpoint, self.stamp(state), self.flat, self.config
                    )
                    last_save = time.perf_counter()
        except KeyboardInterrupt:
            raise _Interrupted(state) from None
        return state
