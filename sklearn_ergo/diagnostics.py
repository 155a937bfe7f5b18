"""Per-layer diagnostics of the backward pass of the unrolled denoiser.

The backward recursion (``docs/math.md``, section 5) is a linear
recurrence through the masks of the prox derivatives.  When the last iterate
is unrolled deep, the signal that reaches early layers can shrink and drift
into ``ker(K)`` / ``ker(K^T)``, where it says nothing about ``K`` (section 10).
:func:`backprop_profile` records, for every layer, how large the adjoint
variables are, how much of them lies outside those kernels, and how much the
layer contributes to the gradient.  It observes the core backward pass through
its ``on_layer`` hook rather than re-implementing it.
"""

from numbers import Real

import numpy as np
from sklearn.utils._param_validation import Interval, validate_params

from ._parallel import chunk_slices
from ._unrolled import _MAP_PARAMS, _check_inputs, dense_map

PROFILE_KEYS = (
    "delta_P_norm",
    "delta_D_norm",
    "delta_P_range_share",
    "delta_D_range_share",
    "grad_contribution",
)


def _range_bases(K, kernel_rtol=None):
    """Orthonormal bases of ``range(K^T)`` (n, r) and ``range(K)`` (m, r).

    Singular values at most ``kernel_rtol * s_max`` count as zero; ``None``
    is the threshold of ``np.linalg.matrix_rank``.
    """
    U, s, Vt = np.linalg.svd(K.astype(np.float64), full_matrices=False)
    if kernel_rtol is None:
        kernel_rtol = max(K.shape) * np.finfo(K.dtype).eps
    rank = int(np.sum(s > s[0] * kernel_rtol)) if s[0] else 0
    return Vt[:rank].T, U[:, :rank]


@validate_params(
    {"K": ["array-like"], "X_noisy": ["array-like"], "X_clean": ["array-like"]}
    | {k: v for k, v in _MAP_PARAMS.items() if k != "n_jobs"}
    | {"kernel_rtol": [Interval(Real, 0, None, closed="left"), None]},
    prefer_skip_nested_validation=True,
)
def backprop_profile(
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
    kernel_rtol=None,
    chunk_size=None,
):
    r"""Per-layer profile of the backward pass of the unrolled denoiser.

    Runs the map of :func:`~sklearn_ergo.unrolled_loss_grad` (same keywords,
    same step rule) forward, back-propagates the gradient of the loss
    ``(1/N) sum_i ||x^_i - x_i||^2 / 2`` and records, for every layer
    ``l = 1..L``, with norms over the whole batch (Frobenius norms of the
    ``(N, n)`` and ``(N, m)`` stacks):

    - ``delta_P_norm``: :math:`\|\delta_P^{[l]}\|`;
    - ``delta_D_norm``: :math:`\|\delta_D^{[l]}\|`;
    - ``delta_P_range_share``:
      :math:`\|P_{\mathrm{range}\,K^T}\delta_P^{[l]}\| / \|\delta_P^{[l]}\|`,
      the share outside ``ker(K)``;
    - ``delta_D_range_share``:
      :math:`\|P_{\mathrm{range}\,K}\delta_D^{[l]}\| / \|\delta_D^{[l]}\|`,
      the share outside ``ker(K^T)``;
    - ``grad_contribution``: the Frobenius norm of layer ``l``'s term
      :math:`\sigma_l\,\delta_D^{[l]}\bar x^{[l-1]T} - \tau_l\,y^{[l]}
      \delta_P^{[l]T}` of the gradient at fixed steps.  These terms sum to the
      gradient at fixed steps; with the default step rule the gradient also
      has a term from the dependence of the steps on ``||K||``, which belongs
      to no single layer and is not included.

    A share is ``nan`` where the adjoint variable is exactly zero (e.g. the
    layers after the last non-zero output weight, or with ``K = 0``).

    Parameters
    ----------
    K : array-like of shape (n_components, n_features)
        Analysis operator.
    X_noisy, X_clean : array-like of shape (n_samples, n_features)
        Noisy inputs and clean targets.
    n_layers : int
        Number ``L`` of unrolled iterations.
    unroll : {"last", "ergodic"}, default="last"
    ergodic_weights : {"uniform", "linear"} or array-like, default="uniform"
    penalty : {"l1", "huber"}, default="l1"
    huber_eps : float, default=0.01
    sigma, tau : float or None, default=None
        As in :func:`~sklearn_ergo.unrolled_loss_grad`.
    kernel_rtol : float, default=None
        Singular values of ``K`` at most ``kernel_rtol`` times the largest one
        span the kernels used for the shares.  ``None``: the numerical rank
        of ``np.linalg.matrix_rank`` (exact kernels).  Learned operators
        rarely have an exact kernel but often a near one (e.g. constants,
        for rows that nearly sum to zero), which a tolerance such as ``1e-2``
        reveals.
    chunk_size : int, default=None
        Samples per chunk (bounds the memory of the tape); the chunks are
        processed in turn and the norms combined exactly.

    Returns
    -------
    profile : dict of str to ndarray of shape (n_layers,)
        The five arrays above, layer 1 first.

    See Also
    --------
    estimator_backprop_profile : the same for a fitted
        :class:`~sklearn_ergo.AnalysisOperatorLearner`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ergo.diagnostics import backprop_profile
    >>> rng = np.random.default_rng(0)
    >>> X_clean = rng.standard_normal((50, 6))
    >>> X_noisy = X_clean + 0.3 * rng.standard_normal((50, 6))
    >>> K = 0.2 * np.diff(np.eye(6), axis=0)  # 1-D differences: ker K = constants
    >>> prof = backprop_profile(K, X_noisy, X_clean, n_layers=30)
    >>> prof["delta_P_norm"].shape
    (30,)
    >>> bool(prof["delta_P_norm"][0] < prof["delta_P_norm"][-1])
    True
    """
    if unroll == "implicit":
        raise ValueError(
            "backprop_profile profiles the layers of the unrolled map; "
            "unroll='implicit' has none. Use unroll='last' or 'ergodic'."
        )
    K, X_noisy, X_clean = _check_inputs(K, X_noisy, X_clean)
    umap = dense_map(n_layers, unroll, ergodic_weights, penalty, huber_eps, sigma, tau)
    sq, terms = _record_layers(umap, K, X_noisy, X_clean, kernel_rtol, chunk_size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "delta_P_norm": np.sqrt(sq["P"]),
            "delta_D_norm": np.sqrt(sq["D"]),
            "delta_P_range_share": np.sqrt(sq["P_range"] / sq["P"]),
            "delta_D_range_share": np.sqrt(sq["D_range"] / sq["D"]),
            "grad_contribution": np.linalg.norm(terms.reshape(n_layers, -1), axis=1),
        }


def _record_layers(umap, K, X_noisy, X_clean, kernel_rtol=None, chunk_size=None):
    """Batch sums of squares of the adjoints and each layer's gradient term.

    Returns ``sq`` (dict of arrays of shape (L,): ``P``, ``D``, ``P_range``,
    ``D_range``) and ``terms`` of shape (L, m, n), whose sum is the gradient
    at fixed steps.  The chunks run in turn, in this process: the hook of
    the backward pass writes into these arrays.
    """
    V, U = _range_bases(K, kernel_rtol)
    n_samples = len(X_noisy)
    L = umap.n_layers
    sq = {name: np.zeros(L) for name in ("P", "D", "P_range", "D_range")}
    terms = np.zeros((L, *K.shape))
    (stage,) = umap.stages({"K": K})
    steps, op = stage.steps, umap.operator(K)
    tape_bytes = (L + 1) * sum(K.shape) * K.itemsize
    for s in chunk_slices(n_samples, tape_bytes, 1, chunk_size, sample_size=K.shape[1]):
        X = X_noisy[s]
        X_hat, tapes = umap.forward([stage], X, record=True)
        g = (X_hat - X_clean[s]) / n_samples
        R, Y = tapes[0][-1]

        def on_layer(l, delta_P, delta_D, X=X, R=R, Y=Y):
            i = l - 1
            sq["P"][i] += np.vdot(delta_P, delta_P)
            sq["D"][i] += np.vdot(delta_D, delta_D)
            sq["P_range"][i] += np.sum((delta_P @ V) ** 2)
            sq["D_range"][i] += np.sum((delta_D @ U) ** 2)
            # Layer l's summand of the gradient in ``backward``, with
            # xbar^[l-1] = X + (1 + theta_{l-1}) r^[l-1] - theta_{l-1} r^[l-2].
            xbar = X.copy()
            if l > 1:
                theta_prev = float(steps.theta[l - 2])
                xbar += (1.0 + theta_prev) * R[l - 1]
                if l > 2:
                    xbar -= theta_prev * R[l - 2]
            terms[i] += float(steps.sigma[i]) * op.weight_grad(delta_D, xbar)
            terms[i] -= float(steps.tau[i]) * op.weight_grad(Y[i], delta_P)

        umap.backward([stage], X, tapes, g, on_layer=on_layer)
    return sq, terms


def estimator_backprop_profile(estimator, X, y, *, kernel_rtol=None, chunk_size=None):
    """:func:`backprop_profile` of a fitted ``AnalysisOperatorLearner``.

    Uses the estimator's operator, unrolling settings and data scaling
    (``X / scale_``), so the profile is that of the map ``fit`` optimised.

    Parameters
    ----------
    estimator : AnalysisOperatorLearner
        A fitted estimator with ``unroll`` in ``{"last", "ergodic"}``.
    X, y : array-like of shape (n_samples, n_features)
        Noisy and clean signals, in the units of the training data.
    kernel_rtol : float, default=None
        See :func:`backprop_profile`.
    chunk_size : int, default=None

    Returns
    -------
    profile : dict of str to ndarray of shape (n_layers,)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ergo import AnalysisOperatorLearner
    >>> from sklearn_ergo.diagnostics import estimator_backprop_profile
    >>> rng = np.random.default_rng(0)
    >>> X_clean = np.repeat(rng.uniform(size=(100, 3)), 3, axis=1)
    >>> X_noisy = X_clean + 0.1 * rng.standard_normal(X_clean.shape)
    >>> est = AnalysisOperatorLearner(n_layers=8, max_iter=3, random_state=0)
    >>> est = est.fit(X_noisy, X_clean)
    >>> estimator_backprop_profile(est, X_noisy, X_clean)["delta_D_norm"].shape
    (8,)
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    scale = estimator.scale_
    X = np.asarray(X, dtype=np.float64) / scale
    y = np.asarray(y, dtype=np.float64) / scale
    return backprop_profile(
        estimator.components_,
        X,
        y,
        n_layers=estimator.n_layers,
        unroll=estimator.unroll,
        ergodic_weights=estimator.ergodic_weights,
        penalty=estimator.penalty,
        huber_eps=estimator.huber_eps,
        kernel_rtol=kernel_rtol,
        chunk_size=chunk_size,
    )
