"""Model files of convolutional :class:`ImageDenoiser` s: save and load.

A model file is a plain ``.npz`` (read with ``allow_pickle=False``) holding
the filters, the settings of the unrolled map, the learned parameters of a
reweighted penalty (``eps`` of ``"log"``), of refinement steps
(``refine_*``) and of a non-local blend (``nonlocal_*``), and a format
marker.
"""

import dataclasses
import math
import os
import pathlib
import zipfile

import numpy as np
from sklearn.utils._param_validation import validate_params

from ._image_denoiser import ImageDenoiser
from ._nonlocal import NonLocalBlend
from ._penalties import PENALTIES
from ._refinement import Refinement

FORMAT = "sklearn-ergo-convolutional-denoiser-2"
# A model with refinement steps is written as format 3, which readers of
# format 2 refuse rather than denoise without the steps.  Format 1 (before
# per-stage parameters) is read as well: the same fields without
# ``per_stage``.
REFINED_FORMAT = "sklearn-ergo-convolutional-denoiser-3"
# A model with a non-local blend, likewise refused by readers of format 3.
NONLOCAL_FORMAT = "sklearn-ergo-convolutional-denoiser-4"
_READABLE = (
    FORMAT,
    REFINED_FORMAT,
    NONLOCAL_FORMAT,
    "sklearn-ergo-convolutional-denoiser-1",
)
_NONLOCAL_FIELDS = tuple(
    f"nonlocal_{f.name}" for f in dataclasses.fields(NonLocalBlend)
)

_SETTINGS = ("n_layers", "unroll", "penalty", "huber_eps")
_REWEIGHTED_SETTINGS = ("n_stages", "per_stage")


@validate_params(
    {"denoiser": [ImageDenoiser], "path": [str, os.PathLike]},
    prefer_skip_nested_validation=True,
)
def save_denoiser(denoiser, path):
    """Save a fitted convolutional :class:`ImageDenoiser` to ``path`` (``.npz``).

    As with :func:`numpy.savez`, ``.npz`` is appended to a path without it.
    The file is written next to its destination and renamed into place, so
    an interrupted save leaves an existing model file intact.

    Parameters
    ----------
    denoiser : ImageDenoiser
        A fitted denoiser with ``structure="convolutional"``.
    path : str or path-like
        Destination file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from sklearn_ergo import load_denoiser, save_denoiser
    >>> from sklearn_ergo._pretrained import pretrained_denoiser
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.npz"
    >>> save_denoiser(pretrained_denoiser(25), path)
    >>> load_denoiser(path).penalty
    'blended_log'
    """
    if denoiser.structure != "convolutional" or not hasattr(denoiser, "components_"):
        raise ValueError("Only fitted convolutional ImageDenoisers can be saved.")
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    savez_atomic(path, **_fields(denoiser))


def savez_atomic(path, **arrays):
    """:func:`numpy.savez` to a file next to ``path``, synced, then renamed onto it.

    ``os.replace`` is atomic: a failed or interrupted write leaves the
    previous file at ``path`` intact (models, training checkpoints).
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fields(denoiser):
    params = denoiser._params()
    refine = {
        name: params.pop(name) for name in Refinement.param_names if name in params
    }
    fields = {
        "format": np.array(REFINED_FORMAT if refine else FORMAT),
        "components": params.pop("K"),
        "noise_std": np.array(denoiser.noise_std_),
    }
    fields.update((key, np.array(getattr(denoiser, key))) for key in _SETTINGS)
    if params:  # a reweighted penalty: its stages and learned parameters
        fields.update(
            (key, np.array(getattr(denoiser, key))) for key in _REWEIGHTED_SETTINGS
        )
        fields.update(params)
    fields.update(refine)
    if hasattr(denoiser, "nonlocal_"):
        fields["format"] = np.array(NONLOCAL_FORMAT)
        fields.update(
            (f"nonlocal_{key}", np.asarray(value))
            for key, value in dataclasses.asdict(denoiser.nonlocal_).items()
        )
    return fields


@validate_params({"path": [str, os.PathLike]}, prefer_skip_nested_validation=True)
def load_denoiser(path):
    """Load a denoiser saved by :func:`save_denoiser`; returns a fitted ImageDenoiser.

    Parameters
    ----------
    path : str or path-like
        A model file written by :func:`save_denoiser` (or shipped).

    Returns
    -------
    ImageDenoiser
        Fitted, ready to :meth:`~ImageDenoiser.denoise`.

    Raises
    ------
    ValueError
        If the file is not such a model (pickled data is never loaded).

    Examples
    --------
    >>> from importlib import resources
    >>> from sklearn_ergo import load_denoiser
    >>> ref = resources.files("sklearn_ergo") / "pretrained" / "sigma25.npz"
    >>> with resources.as_file(ref) as path:
    ...     den = load_denoiser(path)
    >>> den.components_.shape  # 3 stages of 48 filters of 7x7
    (3, 48, 49)
    """
    fields = _read_fields(path)
    if "format" not in fields or str(fields["format"]) not in _READABLE:
        raise ValueError(f"{path!s} is not an sklearn-ergo denoiser ({FORMAT}).")
    required = {"components", "noise_std", *_SETTINGS}
    penalty = PENALTIES.get(str(fields.get("penalty")))
    if penalty is not None and penalty.reweighted:
        required.update(("n_stages", *penalty.param_names))
    with_nonlocal = str(fields["format"]) == NONLOCAL_FORMAT
    if with_nonlocal:
        required.update(_NONLOCAL_FIELDS)
    # Format 4 holds refinement steps where the model has them.
    refined = str(fields["format"]) == REFINED_FORMAT or (
        with_nonlocal and "refine_weight" in fields
    )
    if refined:
        required.update(Refinement.param_names)
    missing = required - fields.keys()
    if missing:
        raise ValueError(f"{path!s} is a damaged model: no {sorted(missing)}.")
    if penalty is None:
        raise ValueError(f"{path!s} has an unknown penalty {fields['penalty']!s}.")
    settings = {key: fields[key].item() for key in _SETTINGS}
    params = {}
    if penalty.reweighted:
        settings["n_stages"] = int(fields["n_stages"])
        settings["per_stage"] = bool(fields.get("per_stage", False))
        params = {
            name: np.asarray(fields[name], dtype=np.float64)
            for name in penalty.param_names
        }
    lead = (settings["n_stages"],) if settings.get("per_stage") else ()
    K = np.asarray(fields["components"], dtype=np.float64)
    p = math.isqrt(K.shape[-1]) if K.ndim == len(lead) + 2 else 0
    if (
        p < 2
        or K.shape[:-2] != lead
        or p * p != K.shape[-1]
        or not np.all(np.isfinite(K))
    ):
        raise ValueError(f"{path!s} holds invalid filters of shape {K.shape}.")
    try:
        if settings.get("n_stages", 1) < 1:
            raise ValueError("n_stages < 1")
        for name, value in params.items():
            penalty().check_param(name, value, K.shape[:-1])
    except ValueError as exc:
        raise ValueError(
            f"{path!s} holds an invalid {settings['penalty']} penalty "
            f"({', '.join(params)}, n_stages): {exc}"
        ) from None
    if refined:
        refine = {
            name: np.asarray(fields[name], dtype=np.float64)
            for name in Refinement.param_names
        }
        try:
            settings["n_refine"] = len(refine["refine_weight"])  # 0-d: TypeError
            if settings["n_refine"] < 1:
                raise ValueError("no steps")
            Refinement(settings["n_refine"]).check_params(refine, K.shape[-1])
            if not all(np.all(np.isfinite(v)) for v in refine.values()):
                raise ValueError("non-finite values")
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"{path!s} holds invalid refinement steps: {exc}"
            ) from None
        params |= refine
    noise_std = float(fields["noise_std"])
    den = ImageDenoiser(
        n_filters=K.shape[-2],
        patch_size=p,
        noise_std=noise_std,
        nonlocal_blend=with_nonlocal,
        **settings,
    )
    den.components_, den.noise_std_ = K, noise_std
    for name, value in params.items():
        setattr(den, f"{name}_", value)
    if with_nonlocal:
        den.nonlocal_ = _read_blend(fields, path)
    return den


def _read_blend(fields, path):
    """The :class:`NonLocalBlend` of a model file, checked."""
    values = {key[len("nonlocal_") :]: fields[key] for key in _NONLOCAL_FIELDS}
    try:
        blend = NonLocalBlend(
            eta=float(values["eta"]),
            search=int(values["search"]),
            patch=int(values["patch"]),
            weight_edges=np.asarray(values["weight_edges"], np.float64),
            energy_edges=np.asarray(values["energy_edges"], np.float64),
            coef=np.asarray(values["coef"], np.float64),
        )
        shape = (len(blend.weight_edges) + 1, len(blend.energy_edges) + 1, 2)
        edges = (blend.weight_edges, blend.energy_edges)
        if blend.coef.shape != shape or any(e.ndim != 1 for e in edges):
            raise ValueError(
                f"coef of shape {blend.coef.shape} and edges of shapes "
                f"{[e.shape for e in edges]}: coef must be {shape}, edges 1-D"
            )
        if not (blend.eta > 0 and blend.search >= 1 and blend.patch % 2 == 1):
            raise ValueError("eta, search or patch out of range")
        if not all(np.all(np.isfinite(v)) for v in values.values()):
            raise ValueError("non-finite values")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path!s} holds an invalid non-local blend: {exc}") from None
    return blend


def _read_fields(path):
    """All arrays of an ``.npz`` file, as a ``ValueError`` if it is none."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it is a single array, not an .npz archive")
        with data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # np.load suggests allow_pickle=True for any file it cannot read: never.
        pickled = "pickle" in str(exc)
        reason = "not NumPy arrays (pickled data is never loaded)" if pickled else exc
        raise ValueError(f"Cannot read a model from {path!s}: {reason}") from exc
