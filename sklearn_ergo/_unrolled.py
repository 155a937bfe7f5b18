"""The unrolled denoiser as a function of ``K``: public loss, gradient, prediction.

Thin, validated entry points over :class:`~._unrolled_map.UnrolledMap`.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_array
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
    validate_params,
)

from ._penalties import make_penalty
from ._steps import step_rule
from ._unrolled_map import UnrolledMap

_MAP_PARAMS = {
    "n_layers": [Interval(Integral, 1, None, closed="left")],
    "unroll": [StrOptions({"last", "ergodic", "implicit"})],
    "ergodic_weights": [StrOptions({"uniform", "linear"}), "array-like"],
    "penalty": [StrOptions({"l1", "huber"}), HasMethods(["prox_conjugate"])],
    "huber_eps": [Interval(Real, 0, None, closed="neither")],
    "sigma": [Interval(Real, 0, None, closed="neither"), None],
    "tau": [Interval(Real, 0, None, closed="neither"), None],
    "n_jobs": [Integral, None],
    "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
}


def _check_operator(K, n_features, dtype):
    K = check_array(K, dtype=[np.float64, np.float32], input_name="K")
    if K.shape[1] != n_features:
        raise ValueError(
            f"K has {K.shape[1]} columns but X has {n_features} features; "
            "K must have shape (n_components, n_features)."
        )
    with np.errstate(over="ignore"):
        K = K.astype(dtype, copy=False)
    if not np.all(np.isfinite(K)):
        raise ValueError(f"K overflows {dtype}, the dtype of X_noisy.")
    return K


def _check_inputs(K, X_noisy, X_clean=None):
    X_noisy = check_array(X_noisy, dtype=[np.float64, np.float32], input_name="X_noisy")
    if X_clean is not None:
        X_clean = check_array(X_clean, dtype=X_noisy.dtype, input_name="X_clean")
        if X_clean.shape != X_noisy.shape:
            raise ValueError(
                f"X_noisy and X_clean must have the same shape, got {X_noisy.shape} "
                f"and {X_clean.shape}."
            )
    K = _check_operator(K, X_noisy.shape[1], X_noisy.dtype)
    return K, X_noisy, X_clean


def dense_map(n_layers, unroll, ergodic_weights, penalty, huber_eps, sigma, tau):
    """The :class:`UnrolledMap` of the public functions' keywords."""
    return UnrolledMap(
        n_layers,
        unroll,
        ergodic_weights,
        penalty=make_penalty(penalty, huber_eps=huber_eps),
        steps=step_rule(sigma, tau),
    )


@validate_params(
    {"K": ["array-like"], "X_noisy": ["array-like"], "X_clean": ["array-like"]}
    | _MAP_PARAMS,
    prefer_skip_nested_validation=True,
)
def unrolled_loss_grad(
    K,
    X_noisy,
    X_clean,
    *,
    n_layers,
    unroll="last",
    ergodic_weights="uniform",
    penalty="l1",
    huber_eps=0.01,
    sigma=None,
    tau=None,
    n_jobs=None,
    chunk_size=None,
):
    """Loss of the unrolled denoiser and its exact gradient with respect to ``K``.

    The denoiser runs ``n_layers`` Chambolle-Pock iterations on
    ``min_x F(K x) + ||x - x~||^2 / 2`` from ``x = x~`` and outputs the last
    iterate or an ergodic average; the loss is
    ``(1 / N) sum_i ||x^_i - x_i||^2 / 2``.  The gradient is that of the map
    actually computed, including, for the default step rule, the dependence of
    the steps on ``K`` (``docs/math.md``, sections 4 and 5).

    Parameters
    ----------
    K : array-like of shape (n_components, n_features)
        Analysis operator.
    X_noisy, X_clean : array-like of shape (n_samples, n_features)
        Noisy inputs and clean targets.  float32 input is computed in float32.
    n_layers : int
        Number ``L`` of unrolled iterations.  Unused by ``unroll="implicit"``,
        which solves the lower level to convergence (``L = infinity``).
    unroll : {"last", "ergodic", "implicit"}, default="last"
        Output the last iterate or the ergodic average of the iterates; or,
        ``"implicit"``, the exact solution of the lower-level problem with the
        true bilevel gradient by implicit differentiation (needs a smooth
        penalty such as ``"huber"``; computed in float64; ``docs/math.md``,
        section 7).
    ergodic_weights : {"uniform", "linear"} or array-like, default="uniform"
        Weights ``alpha_l`` of the ergodic average: ``1 / L``, ``∝ l``, or
        explicit non-negative weights of length ``n_layers`` (normalised).
    penalty : {"l1", "huber"} or penalty object, default="l1"
        ``F``: the l1 norm, or its Huber smoothing with parameter
        ``huber_eps``; or a convex penalty object (see
        ``sklearn_ergo._penalties``).
    huber_eps : float, default=0.01
        Huber parameter (only for ``penalty="huber"``).
    sigma, tau : float or None, default=None
        Fixed dual and primal steps (constants, ``sigma tau ||K||^2 < 1``
        required).  ``None`` for both: ``sigma = tau = 0.99 / ||K||_2``,
        differentiated through.  Unused by ``unroll="implicit"``.
    n_jobs : int, default=None
        Number of joblib workers for the chunks of samples.  Each chunk runs
        with single-threaded BLAS, so ``n_jobs`` is the number of cores used.
        ``None``: every core, in threads, unless ``joblib.parallel_config``
        sets a backend or ``n_jobs``.  Results do not depend on it beyond
        float rounding.
    chunk_size : int, default=None
        Samples per chunk; by default chosen so a chunk's tape stays near
        16 MiB (cache-sized).

    Returns
    -------
    loss : float
    grad : ndarray of shape (n_components, n_features)
        Same dtype as the computation.

    Notes
    -----
    This function works in the units of the data, unnormalised.  With
    ``penalty="l1"`` the size of ``K`` is the regularisation weight, so it
    must grow with the noise level; and with the default steps
    ``c / ||K||`` the unrolled map changes with the scale of the data
    (``loss(s K, s X~, s X) != s**2 loss(K, X~, X)``).  So divide
    ``X_noisy`` and ``X_clean`` by one factor, e.g. the root mean square of
    ``X_noisy`` as :class:`AnalysisOperatorLearner` does, learn ``K`` on
    the result, and apply it to new data divided by the same factor.  With
    explicit steps the map is homogeneous:
    ``loss(s K, s X~, s X; sigma / s**2, tau) = s**2 loss(K, X~, X; sigma,
    tau)`` and the gradient scales by ``s``.  The loss is a sum of squares
    in the working dtype, so it overflows to ``inf`` for data near the
    square root of the dtype's largest value.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ergo import unrolled_loss_grad
    >>> rng = np.random.default_rng(0)
    >>> X_clean = rng.standard_normal((20, 4))
    >>> X_noisy = X_clean + 0.1 * rng.standard_normal((20, 4))
    >>> K = 0.1 * np.eye(4)
    >>> loss, grad = unrolled_loss_grad(K, X_noisy, X_clean, n_layers=5)
    >>> grad.shape
    (4, 4)
    """
    K, X_noisy, X_clean = _check_inputs(K, X_noisy, X_clean)
    umap = dense_map(n_layers, unroll, ergodic_weights, penalty, huber_eps, sigma, tau)
    loss, grads = umap.loss_grad(
        {"K": K}, X_noisy, X_clean, n_jobs=n_jobs, chunk_size=chunk_size
    )
    return loss, grads["K"]


@validate_params(
    {"K": ["array-like"], "X_noisy": ["array-like"]} | _MAP_PARAMS,
    prefer_skip_nested_validation=True,
)
def unrolled_denoise(
    K,
    X_noisy,
    *,
    n_layers,
    unroll="last",
    ergodic_weights="uniform",
    penalty="l1",
    huber_eps=0.01,
    sigma=None,
    tau=None,
    n_jobs=None,
    chunk_size=None,
):
    """Apply the unrolled denoiser with operator ``K`` to the rows of ``X_noisy``.

    The map is that of :func:`unrolled_loss_grad`, with the same keywords.

    Parameters
    ----------
    K : array-like of shape (n_components, n_features)
        Analysis operator.
    X_noisy : array-like of shape (n_samples, n_features)
        Noisy inputs.
    n_layers, unroll, ergodic_weights, penalty, huber_eps, sigma, tau
        See :func:`unrolled_loss_grad`.
    n_jobs : int, default=None
        Number of joblib workers for the chunks of samples (``None``: every
        core, see :func:`unrolled_loss_grad`).
    chunk_size : int, default=None
        Samples per chunk; by default a cache-sized working set.

    Returns
    -------
    X_hat : ndarray of shape (n_samples, n_features)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ergo import unrolled_denoise
    >>> K = 0.5 * np.array([[-1.0, 1.0, 0.0], [0.0, -1.0, 1.0]])  # 1-D TV
    >>> unrolled_denoise(K, np.array([[0.0, 1.0, 0.0]]), n_layers=200).round(2)
    array([[0.33, 0.33, 0.33]])
    """
    K, X_noisy, _ = _check_inputs(K, X_noisy)
    umap = dense_map(n_layers, unroll, ergodic_weights, penalty, huber_eps, sigma, tau)
    return umap.apply({"K": K}, X_noisy, n_jobs=n_jobs, chunk_size=chunk_size)
