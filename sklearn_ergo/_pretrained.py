"""The pretrained denoisers shipped with the package, and ``denoise_image``.

The shipped model is trained by ``benchmarks/train_bsd.py`` on the 400
Train400 images at sigma = 25/255, with Set12 as the validation set: 48
filters of 7x7 per stage, three reweighted stages of 20 iterations each. It
grew from 5x5 filters: 6500 steps with the log penalty
(``benchmarks/runs/sigma25-48x5/``), 1500 with its shape learned too
(``penalty="shaped_log"``, ``benchmarks/runs/ft25-shaped_log/``), then 4000
with the filters in 7x7 supports (``benchmarks/runs/sigma25-48x7-shaped/``),
then 4500 with its second stage centred on a learned gain of the first
stage's responses (``penalty="shifted_log"``, from zero gains:
``benchmarks/runs/sigma25-48x7-shifted/``), then 3000 with a third stage, a
copy of the second to start with
(``benchmarks/runs/sigma25-48x7-shifted-3stage/``), then 2000 with the data
terms of stages 2 and 3 centred on a learned blend of the noisy image and
the previous stage's output (``penalty="blended_log"``, from zero blends:
``benchmarks/runs/sigma25-48x7-blended/``; the command, the log and the
model of each), then 1200 of a reaction-diffusion refinement step after the
stages, learned alone with the stages fixed (``n_refine=1``, from the
identity: ``benchmarks/runs/sigma25-48x7-refine-fixed-abs/``, its step 900),
then a second step after it, learned alone from the identity and then with
the first, on cached outputs of the fixed stages
(``benchmarks/train_steps_cached.py``: ``benchmarks/runs/sigma25-step2-cached/``,
``sigma25-step2-joint-cached/``), then two more steps learned with those
two (``benchmarks/runs/sigma25-4steps-cached/``).
The sigma = 15 and sigma = 5 models have the same stages and the first
step learned again at their level, on images rescaled by 25/15 and 25/5 as
``denoise`` applies them (``benchmarks/runs/sigma15-48x7-refine-fixed/``,
``sigma5-48x7-refine-fixed/``, the latter from the former's step); the
sigma = 15 model then three more steps, as at 25 (a second alone, then
with the first, then two more with those two:
``benchmarks/runs/sigma15-step2-cached/``, ``sigma15-step2-joint-cached/``,
``sigma15-4steps-cached/``), the sigma = 5 model three more learned with
its first on its stages' cached outputs (``benchmarks/runs/sigma5-4steps-cached/``).
The sigma = 50 model is the model before the step fine-tuned 1000 steps at sigma = 50
on images rescaled by 25/50 (``benchmarks/runs/sigma50-48x7-blended/``),
then with its step learned at 50, its stages fixed
(``benchmarks/runs/sigma50-48x7-refine-fixed/``), then with a second step
as at 25 (``benchmarks/runs/sigma50-step2-cached/``,
``sigma50-step2-joint-cached/``), then two more learned with those two
(``benchmarks/runs/sigma50-4steps-cached/``). The fast model of 25 is
the two-stage model of ``sigma25-48x7-shifted/`` unrolled 12 iterations per
stage instead of 20 and trained 1500 more steps so
(``benchmarks/runs/sigma25-48x7-shifted-12layers/``), then with a step
learned after its stages (``benchmarks/runs/sigma25-fast-refine-fixed/``),
then with three more learned with it on its stages' cached outputs
(``benchmarks/runs/sigma25-fast-4steps-cached/``);
the fast models of 5, 15 and 50 have its stages and steps learned again at
their level on those stages' cached outputs, at 5 and 15 from the (then
one-step) sigma = 5 and the sigma = 15 models' steps grafted
(``benchmarks/graft_refinement.py``;
``benchmarks/runs/sigma5-fast-step-cached/``,
``benchmarks/runs/sigma15-fast-4steps-cached/``), at 50 from its own four
(``benchmarks/runs/sigma50-fast-4steps-cached/``).
Every file then got a non-local blend after its steps, fitted by least
squares on 100 Train400 images at its level, its width chosen on Set12
(``benchmarks/fit_nonlocal.py``; logs in
``benchmarks/results/fit_nonlocal/``).
"""

from importlib import resources
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, Options, validate_params

from ._ensemble import TRANSFORMS
from ._image_data import as_planes
from ._model_io import load_denoiser
from ._noise import estimate_sigma

#: Noise levels (in 8-bit units, i.e. sigma * 255 for float images) of the
#: shipped models: one set of stages trained at 25 (at 50 fine-tuned there),
#: each with refinement steps learned and a non-local blend fitted at its
#: level.  A step learned at 25
#: cost 0.67 dB on Set12 at 5, where the step learned at 5 gains 0.19 dB
#: (benchmarks/DENOISE_RESULTS.md, "Refinement steps per noise level").
PRETRAINED_LEVELS = (5, 15, 25, 50)
#: Levels of the fast models (``fast=True``).
FAST_LEVELS = (5, 15, 25, 50)


def pretrained_denoiser(level, fast=False):
    """The shipped denoiser for noise ``level`` (8-bit units).

    ``level`` is one of :data:`PRETRAINED_LEVELS` (with ``fast``, of
    :data:`FAST_LEVELS`); ``fast`` picks the model of two stages of 12
    iterations instead of three of 20.
    """
    levels = FAST_LEVELS if fast else PRETRAINED_LEVELS
    if level not in levels:
        raise ValueError(f"level must be one of {levels}, got {level!r}.")
    name = f"sigma{level}{'_fast' if fast else ''}.npz"
    ref = resources.files("sklearn_ergo") / "pretrained" / name
    with resources.as_file(ref) as path:
        return load_denoiser(path)


def denoiser_for_level(level, fast=False):
    """The shipped denoiser :func:`denoise_image` runs at noise ``level``.

    ``level`` is in 8-bit units; the model of the nearest shipped level
    serves it, of the lower one at a tie: each model's refinement step was
    learned at its level, and on Set12 the nearer one won at 20 and 30
    (``benchmarks/bench_sigma.py``).
    """
    levels = FAST_LEVELS if fast else PRETRAINED_LEVELS
    nearest = min(levels, key=lambda s: (abs(s - level), s))
    return pretrained_denoiser(nearest, fast=fast)


@validate_params(
    {
        "image": ["array-like"],
        "sigma": [Interval(Real, 0, None, closed="neither"), None],
        "channel_axis": [Integral, None],
        "data_range": [Interval(Real, 0, None, closed="neither"), None],
        "fast": ["boolean"],
        "self_ensemble": [Options(Integral, set(TRANSFORMS))],
        "nonlocal_blend": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def denoise_image(
    image,
    sigma=None,
    *,
    channel_axis=None,
    data_range=None,
    fast=False,
    self_ensemble=1,
    nonlocal_blend=True,
):
    """Denoise an image of any dtype and range with the shipped model.

    Parameters
    ----------
    image : ndarray of shape (H, W), (N, H, W) or with a channel axis
        Any real dtype (uint8, uint16, signed integers, floats) and range.
        2-D: a gray image; 3-D with ``channel_axis=None``: a stack of gray
        images, denoised one by one (each with its own estimated ``sigma``
        when ``sigma=None``); 3-D with ``channel_axis``: a colour image.
    sigma : float, default=None
        Standard deviation of the Gaussian noise in the units of the image's
        values: 25 for a uint8 image is 6425 (25 x 257) for the same image
        in uint16 and 25/255 for a float one in ``[0, 1]``.  ``None``: it is
        estimated by :func:`estimate_sigma` (blind mode); a noise-free
        image (estimate 0) is returned unchanged.
    channel_axis : int or None, default=None
        Axis of the channels of a 3-D colour image, as in scikit-image (e.g.
        ``-1`` for ``(H, W, 3)``): RGB is denoised in an opponent colour
        space; 4 channels are RGBA and 2 gray + alpha, the alpha channel is
        returned untouched; other numbers of channels are denoised
        independently.
    data_range : float, default=None
        Range of the image's values, to choose the model: the noise level
        relative to it, ``255 * sigma / data_range``, is the level in 8-bit
        units.  ``None``: the dtype's range for integers (255 for uint8,
        65535 for uint16), 1 for floats within ``[-1, 2]`` but for at most
        a thousandth of them (images in ``[0, 1]``, possibly with unclipped
        noise), else max - min.
    fast : bool, default=False
        Use the fast model: two stages of 12 Chambolle-Pock iterations
        instead of three of 20, trained for that depth at 25, with the
        refinement steps and non-local blends of 5, 15, 25 and 50.  On a
        512 x 512 image it takes about 0.6x the time (0.4x without the
        blend), and on Set12 it gives 0.02-0.05 dB less PSNR at 15, 25 and 50
        (``benchmarks/DENOISE_RESULTS.md``).

    self_ensemble : {1, 2, 4, 8}, default=1
        Denoise that many flipped and rotated copies of the image and average
        them, mapped back, before the non-local blend: the model's time grows
        in proportion, the PSNR by about 0.04 / 0.06 / 0.07 dB with 2 / 4 / 8
        copies on Set12 at 15, 25, 50 without the blend
        (``benchmarks/bench_self_ensemble.py``; see :class:`ImageDenoiser`),
        by 0.05 dB with 8 copies and the blend.
    nonlocal_blend : bool, default=True
        Apply the shipped model's non-local blend (every shipped file has
        one; see ``nonlocal_blend`` of :class:`ImageDenoiser`): 0.05-0.16 dB
        more on Set12 at every level, for about 0.3-0.45 s per 512 x 512
        image on two cores.  ``False``: the model alone, 0.7-0.9x the time.

    Returns
    -------
    ndarray of the input's shape and dtype
        Integers are rounded and clipped to their dtype's range; float output
        is clipped to ``[0, 1]`` if the input lay in ``[0, 1]``, else not
        clipped (data in physical units keeps its range).

    Notes
    -----
    The model of a shipped level ``s`` runs on the image rescaled so that
    its noise has exactly the level ``s``, and the result is scaled back
    (see :meth:`ImageDenoiser.denoise`).  ``s`` is the nearest shipped
    level, the lower at a tie.  Each model's refinement step was learned at
    its level, and a step loses away from it: on Set12 the nearer model was
    better by 0.044 dB at 20 and 0.060 dB at 30, and the model of 50 by
    0.051 dB at 40, where at 35 the two were within 0.004 dB
    (``benchmarks/DENOISE_RESULTS.md``); below 5 and above 75 it is not
    measured.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ergo import denoise_image
    >>> rng = np.random.default_rng(0)
    >>> clean = np.kron(rng.uniform(size=(8, 8)), np.ones((16, 16)))
    >>> noisy = clean + 25 / 255 * rng.standard_normal(clean.shape)
    >>> out = denoise_image(noisy)  # blind: the noise level is estimated
    >>> bool(np.mean((out - clean) ** 2) < np.mean((noisy - clean) ** 2) / 4)
    True

    The mean of the eight flips and rotations, for 8x the time:

    >>> out1 = denoise_image(noisy, 25 / 255)
    >>> out8 = denoise_image(noisy, 25 / 255, self_ensemble=8)
    >>> bool(np.mean((out8 - clean) ** 2) < np.mean((out1 - clean) ** 2))
    True

    A 16-bit image, with the noise level in 16-bit units:

    >>> noisy16 = np.clip(np.round(noisy * 65535), 0, 65535).astype(np.uint16)
    >>> out16 = denoise_image(noisy16, sigma=25 * 257)
    >>> out16.dtype
    dtype('uint16')
    """
    planes = as_planes(image, channel_axis)
    if planes.kind == "stack" and planes.data.shape[2] in (3, 4):
        raise ValueError(
            f"image has shape {planes.data.shape}: with channel_axis=None it is a "
            f"stack of images {planes.data.shape[2]} pixels wide, too narrow for "
            "the model's filters; for an RGB(A) image pass channel_axis=-1."
        )
    if planes.kind == "stack":
        return np.stack(
            [
                denoise_image(
                    im,
                    sigma,
                    data_range=data_range,
                    fast=fast,
                    self_ensemble=self_ensemble,
                    nonlocal_blend=nonlocal_blend,
                )
                for im in image
            ]
        )
    if sigma is None:
        sigma = estimate_sigma(image, channel_axis=channel_axis)
        if sigma == 0:
            return planes.restore(planes.data, image)
    if data_range is None:
        data_range = planes.data_range()
    level = 255.0 * float(sigma) / float(data_range)
    if not (np.isfinite(level) and 0 < level <= 255):
        raise ValueError(
            f"sigma must be positive and at most the image range, got {sigma!r}."
        )
    model = denoiser_for_level(level, fast=fast)
    model.set_params(
        self_ensemble=self_ensemble,
        nonlocal_blend=nonlocal_blend and model.nonlocal_blend,
    )
    return model.denoise(image, sigma=sigma, channel_axis=channel_axis)
