"""The pretrained denoisers shipped with the package, and ``denoise_image``.

The shipped operators are trained by ``benchmarks/train_pretrained.py`` on
the bundled scikit-image images ``camera``, ``astronaut`` (gray), ``coins``,
``moon``, ``text``, ``brick``, ``grass``, ``gravel`` and ``page`` only.
"""

from importlib import resources

import numpy as np

from ._image_denoiser import as_float_image
from ._model_io import load_denoiser

#: Noise levels (in 8-bit units, i.e. sigma * 255 for float images) of the
#: shipped operators.
PRETRAINED_LEVELS = (5, 10, 15, 25, 50)


def pretrained_denoiser(level):
    """The shipped denoiser for noise ``level`` (8-bit units).

    ``level`` is one of :data:`PRETRAINED_LEVELS`.
    """
    if level not in PRETRAINED_LEVELS:
        raise ValueError(f"level must be one of {PRETRAINED_LEVELS}, got {level!r}.")
    ref = resources.files("sklearn_ergo") / "pretrained" / f"sigma{level}.npz"
    with resources.as_file(ref) as path:
        return load_denoiser(path)


def _reweighted(denoiser):
    return denoiser._map().penalty.reweighted


def denoise_image(image, sigma):
    """Denoise a gray or RGB image with the shipped pretrained operators.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, 3)
        uint8, or float in ``[0, 1]``.
    sigma : float
        Standard deviation of the Gaussian noise in the units of the image's
        values: 25 for a uint8 image is 25/255 for a float one.  The model
        of a shipped level ``s`` runs on the image rescaled by ``s / sigma``,
        so that its noise has exactly the level ``s``, and the result is
        scaled back.  ``s`` is ``sigma`` if it is a shipped level, else the
        next level up (the largest, 50, above it), unless that model has the
        convex l1 penalty and the level below has the log penalty: then the
        level below.
        Measured on held-out images (``python benchmarks/bench_sigma.py``):
        between 5 and 25 the upper neighbour is 0.01-0.16 dB better than
        the lower one; between 25 and 50 the log-penalty model of 25 is
        0.22-0.31 dB better than the l1 model of 50.  Below 5 and above 50
        the rule is not measured.

    Returns
    -------
    ndarray of the input's shape and dtype

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ergo import denoise_image
    >>> rng = np.random.default_rng(0)
    >>> clean = np.kron(rng.uniform(size=(8, 8)), np.ones((16, 16)))
    >>> noisy = clean + 25 / 255 * rng.standard_normal(clean.shape)
    >>> out = denoise_image(noisy, 25 / 255)
    >>> bool(np.mean((out - clean) ** 2) < np.mean((noisy - clean) ** 2) / 4)
    True
    """
    _, dtype = as_float_image(image)
    level = float(sigma) * (1.0 if dtype == np.uint8 else 255.0)
    if not (np.isfinite(level) and 0 < level <= 255):
        raise ValueError(
            f"sigma must be positive and at most the image range, got {sigma!r}."
        )
    upper = min((s for s in PRETRAINED_LEVELS if s >= level), default=None)
    if upper is None:
        return pretrained_denoiser(PRETRAINED_LEVELS[-1]).denoise(image, sigma=sigma)
    model = pretrained_denoiser(upper)
    lower = max((s for s in PRETRAINED_LEVELS if s < level), default=None)
    if upper != level and lower is not None and not _reweighted(model):
        below = pretrained_denoiser(lower)
        if _reweighted(below):
            model = below
    return model.denoise(image, sigma=sigma)
