"""Initial analysis operators: finite differences (TV) and small random rows."""

import math

import numpy as np


def finite_difference_operator(n_features):
    """Forward differences of a square patch (anisotropic TV) or of a 1-D signal.

    For ``n_features = p**2`` the rows are the ``p (p - 1)`` horizontal and
    ``p (p - 1)`` vertical differences of a ``p x p`` patch stored row-major,
    so that ``||D x||_1`` is the anisotropic total variation of the patch.
    Otherwise the ``n_features - 1`` differences of a 1-D signal.

    Returns
    -------
    D : ndarray of shape (n_differences, n_features)
    """
    p = math.isqrt(n_features)
    if p * p == n_features and p > 1:
        idx = np.arange(n_features).reshape(p, p)
        pairs = np.concatenate(
            [
                np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], axis=1),
                np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], axis=1),
            ]
        )
    else:
        pairs = np.stack([np.arange(n_features - 1), np.arange(1, n_features)], axis=1)
    D = np.zeros((len(pairs), n_features))
    rows = np.arange(len(pairs))
    D[rows, pairs[:, 0]] = -1.0
    D[rows, pairs[:, 1]] = 1.0
    return D


def zero_mean_random_rows(n_rows, n_features, scale, rng):
    """Small random rows with zero mean.

    With ``F = ||.||_1`` a row's norm is its regularisation weight and a row
    with non-zero mean penalises brightness, so extra rows start zero-mean
    and tiny relative to the rest of the operator.
    """
    rows = rng.standard_normal((n_rows, n_features))
    rows -= rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return scale * rows / np.where(norms > 0, norms, 1.0)


def tv_filters(patch_size):
    """The 2 forward differences (horizontal, vertical) on a ``p x p`` support.

    Applied at every position, ``||𝒦 x||_1`` is the anisotropic total
    variation of ``x``.
    """
    p = patch_size
    if p < 2:
        raise ValueError(f"patch_size must be at least 2, got {p}.")
    D = np.zeros((2, p, p))
    D[0, 0, :2] = [-1.0, 1.0]
    D[1, :2, 0] = [-1.0, 1.0]
    return D.reshape(2, p * p)


def initial_filters(n_filters, patch_size, rng, scale=0.2):
    """TV differences plus ``n_filters - 2`` zero-mean random filters.

    A filter's norm is its regularisation weight under ``F = ||.||_1`` and a
    filter with non-zero mean penalises brightness, so extra filters are
    zero-mean with norm ``scale`` times that of a difference (``sqrt(2)``).
    They cannot start at zero: ``F`` is even, so ``k = 0`` is a stationary
    point of the loss in each extra filter ``k``, and tiny filters escape it
    only slowly.
    """
    if n_filters < 2:
        raise ValueError(f"n_filters must be at least 2, got {n_filters}.")
    extra = zero_mean_random_rows(
        n_filters - 2, patch_size**2, scale * np.sqrt(2.0), rng
    )
    return np.vstack([tv_filters(patch_size), extra])
