"""Save and load analysis operators as ``.npz`` files that are safe to open.

A model file is a NumPy ``.npz`` archive of plain arrays: a format marker, a
format version, the operator ``K`` and the settings as JSON text.  It is read
with ``allow_pickle=False``, so opening a file from an untrusted source cannot
run code, and anything that is not such a file is refused with a
``ValueError`` that says so.  pickle/joblib remain the way to persist a whole
estimator between trusted parties.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "sklearn-ergo/analysis-operator"
VERSION = 1


def _to_json(value):
    """``json.dumps`` hook for NumPy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(
        f"settings must be JSON serialisable; got {type(value).__name__}: {value!r}"
    )


def save_operator(path, K, settings=None):
    """Write ``K`` and its settings to the ``.npz`` model file ``path``.

    The file is written next to ``path`` and then renamed onto it, so an
    interrupted save never leaves a truncated model behind.

    Parameters
    ----------
    path : str or path-like
        Destination, written as given (no suffix is added).
    K : array-like of shape (n_components, n_features)
        Finite analysis operator (float32 or float64 is kept).
    settings : dict, default=None
        JSON-serialisable settings needed to use ``K`` (e.g. ``n_layers``,
        ``penalty``, ``scale``); NumPy scalars and arrays are converted.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sklearn_ergo._model_io import load_operator, save_operator
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> save_operator(path, np.eye(3), {"n_layers": 20, "scale": 0.5})
    >>> K, settings = load_operator(path)
    >>> K.shape, settings["n_layers"]
    ((3, 3), 20)
    """
    K = np.asarray(K)
    if K.ndim != 2 or K.dtype not in (np.float32, np.float64):
        raise ValueError(
            f"K must be a 2-D float32 or float64 array, got {K.dtype} of shape "
            f"{K.shape}."
        )
    if not np.all(np.isfinite(K)):
        raise ValueError("K contains NaN or infinity; refusing to save it.")
    if settings is not None and not isinstance(settings, dict):
        raise TypeError(f"settings must be a dict, got {type(settings).__name__}.")
    try:
        text = json.dumps(settings or {}, default=_to_json, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"settings must hold finite values: {exc}") from exc
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                format=np.array(FORMAT),
                version=np.array(VERSION),
                components=K,
                settings=np.array(text),
            )
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_operator(path):
    """Read a model file written by :func:`save_operator`.

    Parameters
    ----------
    path : str, path-like or binary file object

    Returns
    -------
    K : ndarray of shape (n_components, n_features)
    settings : dict

    Raises
    ------
    ValueError
        If ``path`` is not a model file of this format (or of a newer
        version), or is damaged.
    """
    name = getattr(path, "name", path)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it is a single array, not an .npz archive")
        with data:
            if "format" not in data.files or str(data["format"]) != FORMAT:
                raise ValueError(f"it has no {FORMAT!r} format marker")
            version = int(data["version"])
            if version > VERSION:
                raise ValueError(
                    f"it has format version {version}; this version of "
                    f"sklearn-ergo reads versions up to {VERSION}"
                )
            K = np.array(data["components"])
            settings = json.loads(str(data["settings"]))
    except FileNotFoundError:
        raise
    except (
        ValueError,
        TypeError,
        KeyError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
    ) as exc:
        # np.load suggests allow_pickle=True for any file it cannot read: never.
        reason = str(exc)
        if "Object arrays" in reason:
            reason = "it holds object arrays (pickled data is never loaded)"
        elif "pickle" in reason:
            reason = "it is not a NumPy .npz archive (pickled data is never loaded)"
        message = f"{name!s} is not a sklearn-ergo model file: {reason}"
        raise ValueError(message) from exc
    if (
        K.ndim != 2
        or K.dtype not in (np.float32, np.float64)
        or not np.all(np.isfinite(K))
        or not isinstance(settings, dict)
    ):
        raise ValueError(
            f"{name!s} is a damaged sklearn-ergo model file: the operator must "
            "be a finite 2-D float array and the settings a JSON object."
        )
    return K, settings
