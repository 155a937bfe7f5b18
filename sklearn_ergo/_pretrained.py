"""Saved convolutional denoisers and the pretrained ones shipped with the package.

A model file is a plain ``.npz`` (read with ``allow_pickle=False``) holding
the filters, the settings of the unrolled map (and the scales ``eps`` of a
log-penalty model) and a format marker.  The
shipped operators are trained by ``benchmarks/train_pretrained.py`` on the
bundled scikit-image images ``camera``, ``astronaut`` (gray), ``coins``,
``moon``, ``text``, ``brick``, ``grass``, ``gravel`` and ``page`` only.
"""

import math
import os
import pathlib
import zipfile
from importlib import resources

import numpy as np

from ._denoiser import ImageDenoiser, as_float_image

FORMAT = "sklearn-ergo-convolutional-denoiser-1"

#: Noise levels (in 8-bit units, i.e. sigma * 255 for float images) of the
#: shipped operators.
PRETRAINED_LEVELS = (5, 10, 15, 25, 50)

_SETTINGS = ("n_layers", "unroll", "penalty", "huber_eps")
# Settings of the log penalty only: required when penalty == "log".
_LOG_SETTINGS = ("n_stages", "eps")


def save_denoiser(denoiser, path):
    """Save a fitted convolutional :class:`ImageDenoiser` to ``path`` (``.npz``).

    As with :func:`numpy.savez`, ``.npz`` is appended to a path without it.
    The file is written next to its destination and renamed into place, so
    an interrupted save leaves an existing model file intact.
    """
    if denoiser.structure != "convolutional" or not hasattr(denoiser, "components_"):
        raise ValueError("Only fitted convolutional ImageDenoisers can be saved.")
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        _write(denoiser, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write(denoiser, path):
    np.savez(
        path,
        format=np.array(FORMAT),
        components=denoiser.components_,
        noise_std=np.array(denoiser.noise_std_),
        **{key: np.array(getattr(denoiser, key)) for key in _SETTINGS},
        **(
            {"n_stages": np.array(denoiser.n_stages), "eps": denoiser.eps_}
            if denoiser.penalty == "log"
            else {}
        ),
    )


def load_denoiser(path):
    """Load a denoiser saved by :func:`save_denoiser`; returns a fitted ImageDenoiser.

    Raises
    ------
    ValueError
        If the file is not such a model.
    """
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it is a single array, not an .npz archive")
        with data:
            fields = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # np.load suggests allow_pickle=True for any file it cannot read: never.
        pickled = "pickle" in str(exc)
        reason = "not NumPy arrays (pickled data is never loaded)" if pickled else exc
        raise ValueError(f"Cannot read a model from {path!s}: {reason}") from exc
    if "format" not in fields or str(fields["format"]) != FORMAT:
        raise ValueError(f"{path!s} is not an sklearn-ergo denoiser ({FORMAT}).")
    required = {"components", "noise_std", *_SETTINGS}
    if "penalty" in fields and str(fields["penalty"]) == "log":
        required.update(_LOG_SETTINGS)
    missing = required - fields.keys()
    if missing:
        raise ValueError(f"{path!s} is a damaged model: no {sorted(missing)}.")
    K = np.asarray(fields["components"], dtype=np.float64)
    p = math.isqrt(K.shape[1]) if K.ndim == 2 else 0
    if p < 2 or p * p != K.shape[1] or not np.all(np.isfinite(K)):
        raise ValueError(f"{path!s} holds invalid filters of shape {K.shape}.")
    settings = {key: fields[key].item() for key in _SETTINGS}
    if settings["penalty"] == "log":
        settings["n_stages"] = int(fields["n_stages"])
        eps = np.asarray(fields["eps"], dtype=np.float64)
        if (
            settings["n_stages"] < 1
            or eps.shape != (K.shape[0],)
            or not np.all((eps > 0) & np.isfinite(eps))
        ):
            raise ValueError(f"{path!s} holds an invalid log penalty (eps, n_stages).")
    den = ImageDenoiser(
        n_filters=K.shape[0],
        patch_size=p,
        noise_std=float(fields["noise_std"]),
        **settings,
    )
    den.components_ = K
    if settings["penalty"] == "log":
        den.eps_ = eps
    den.noise_std_ = float(fields["noise_std"])
    return den


def pretrained_denoiser(level):
    """The shipped denoiser for noise ``level`` (8-bit units).

    ``level`` is one of :data:`PRETRAINED_LEVELS`.
    """
    if level not in PRETRAINED_LEVELS:
        raise ValueError(f"level must be one of {PRETRAINED_LEVELS}, got {level!r}.")
    ref = resources.files("sklearn_ergo") / "pretrained" / f"sigma{level}.npz"
    with resources.as_file(ref) as path:
        return load_denoiser(path)


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
    if upper != level and lower is not None and model.penalty != "log":
        below = pretrained_denoiser(lower)
        if below.penalty == "log":
            model = below
    return model.denoise(image, sigma=sigma)
