"""The unrolled denoiser as a function of ``K``: loss, exact gradient, prediction.

This module glues the pure kernels of :mod:`._chambolle_pock` to input
validation, the default step rule and chunked, joblib-parallel evaluation.
Per-sample gradients add up, so the batch is split into chunks that are
processed independently and summed; the tape of a chunk is
``O((m + n) L)`` per sample, so the chunk size bounds the memory.
"""

import functools
import numbers

import numpy as np
from joblib import effective_n_jobs
from sklearn.utils import check_array, gen_even_slices
from sklearn.utils.parallel import Parallel, delayed
from threadpoolctl import ThreadpoolController

from ._chambolle_pock import backward, constant_steps, forward
from ._implicit import implicit_denoise, implicit_loss_grad
from ._operators import DenseOperator
from ._prox import make_penalty

#: Default step factor ``c`` in ``sigma = tau = c / ||K||``: ``sigma tau ||K||^2
#: = c^2 < 1`` with a margin that survives rounding of the norm.
STEP_FACTOR = 0.99

UNROLL_MODES = ("last", "ergodic", "implicit")

# Tape memory per chunk (bytes).  A chunk's tape is written once per layer
# forward and read once backward: while it stays in the last-level cache the
# elementwise steps run at cache speed; with 64 MiB tapes every layer streams
# from DRAM and a gradient was 1.1-1.3x slower (benchmarks/README.md).
# Memory per worker is bounded by it, whatever N.
_CHUNK_BYTES = 16 * 2**20
# Working set per chunk of a forward pass without tape (prediction): about
# three layers' iterates, kept within a core's L2 cache.
_DENOISE_BYTES = 2 * 2**20
# Fewest samples per chunk: below, the per-layer Python overhead and tiny
# GEMMs dominate (deep unrolls of wide operators have large tapes per sample).
_MIN_CHUNK = 32


def output_weights(n_layers, unroll, ergodic_weights="uniform"):
    """Weights ``alpha`` of the iterates ``r^[1..L]`` in the output.

    Parameters
    ----------
    n_layers : int
    unroll : {"last", "ergodic"}
        ``"last"`` returns ``r^[L]``; ``"ergodic"`` an average of all iterates.
    ergodic_weights : {"uniform", "linear"} or array-like of shape (n_layers,)
        Weighting of the ergodic average: ``alpha_l = 1 / L``,
        ``alpha_l ∝ l``, or explicit non-negative weights (normalised to sum
        to 1).  Ignored for ``unroll="last"``.

    Returns
    -------
    alpha : ndarray of shape (n_layers,)
    """
    if unroll == "last":
        alpha = np.zeros(n_layers)
        alpha[-1] = 1.0
        return alpha
    if unroll != "ergodic":
        raise ValueError(f"unroll must be one of {UNROLL_MODES}, got {unroll!r}.")
    if isinstance(ergodic_weights, str):
        if ergodic_weights == "uniform":
            alpha = np.ones(n_layers)
        elif ergodic_weights == "linear":
            alpha = np.arange(1.0, n_layers + 1)
        else:
            raise ValueError(
                "ergodic_weights must be 'uniform', 'linear' or an array, "
                f"got {ergodic_weights!r}."
            )
    else:
        alpha = np.asarray(ergodic_weights, dtype=np.float64)
        if alpha.shape != (n_layers,):
            raise ValueError(
                f"ergodic_weights has shape {alpha.shape}; expected ({n_layers},) "
                "to match n_layers."
            )
        if not np.all(np.isfinite(alpha)) or np.any(alpha < 0) or alpha.sum() <= 0:
            raise ValueError(
                "ergodic_weights must be finite, non-negative and not all zero."
            )
    return alpha / alpha.sum()


def step_schedule(op, n_layers, sigma=None, tau=None):
    """Steps for ``op`` and, for the default rule, the norm and its gradient.

    With ``sigma = tau = None`` the default rule ``sigma = tau = c / ||K||_2``
    applies and the steps are functions of ``K`` (returned with
    ``(||K||, d||K||/dK)`` so that gradients can include them).  Explicit steps
    are constants and must satisfy ``sigma tau ||K||^2 < 1``.
    """
    with _one_blas_thread():
        norm, norm_grad = op.norm_and_grad()
    if not np.isfinite(norm):
        raise ValueError(f"||K||_2 overflows: K must be finite, got norm {norm}.")
    if sigma is None and tau is None:
        if norm == 0.0:
            raise ValueError(
                "The default step rule sigma = tau = c / ||K|| needs a non-zero K."
            )
        # The kernels multiply by sigma * tau: if that overflows the working
        # dtype the iterates and gradients turn to nan.
        step = STEP_FACTOR / norm
        if not _product_is_finite(step, step, op.weights.dtype):
            raise ValueError(
                f"||K||_2 = {norm:.3g} is too small for the default step rule "
                f"sigma = tau = c / ||K|| in {op.weights.dtype}: sigma * tau "
                "overflows; use a non-zero K of a larger scale."
            )
        return (
            constant_steps(STEP_FACTOR / norm, STEP_FACTOR / norm, n_layers, power=1.0),
            norm,
            norm_grad,
        )
    if sigma is None or tau is None:
        raise ValueError("Give both sigma and tau, or neither (default step rule).")
    for name, value in (("sigma", sigma), ("tau", tau)):
        if not (isinstance(value, numbers.Real) and value > 0 and np.isfinite(value)):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    if not _product_is_finite(sigma, tau, op.weights.dtype):
        raise ValueError(f"sigma * tau overflows {op.weights.dtype}.")
    if sigma * tau * norm**2 >= 1.0:
        raise ValueError(
            f"Chambolle-Pock needs sigma * tau * ||K||^2 < 1; got "
            f"{sigma * tau * norm**2:.4g} with ||K||_2 = {norm:.4g}."
        )
    return constant_steps(float(sigma), float(tau), n_layers), norm, norm_grad


def _product_is_finite(a, b, dtype):
    """Whether ``a * b`` is finite in ``dtype``."""
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.dtype(dtype).type(np.float64(a) * b)))


def _one_blas_thread():
    """Context in which BLAS and LAPACK run single-threaded.

    The solver's matrix products are cache-sized (and ``||K||`` is an SVD of a
    small matrix): too small for BLAS threads to pay off, and threads that
    wait for busy cores are ruinous: on a loaded 2-core machine a gradient
    took 60x longer with two BLAS threads than with one (reproduce with
    ``benchmarks/bench_fit.py --blas-threads-check``).  Parallelism comes
    from ``n_jobs`` workers, one core each, so workers x threads never
    oversubscribe the machine.
    """
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:  # inspecting the loaded libraries is slow
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


_BLAS_CONTROLLER = None


def _single_blas_thread(chunk_function):
    """Decorate ``chunk_function`` to run in :func:`_one_blas_thread`."""

    @functools.wraps(chunk_function)
    def run(*args):
        with _one_blas_thread():
            return chunk_function(*args)

    return run


@_single_blas_thread
def _chunk_loss_grad(
    K, X_noisy, X_clean, steps, penalty, alpha, n_total, rows, make_op
):
    # The whole arrays and the chunk's ``rows``: joblib then hands large
    # arrays to process workers as memory maps instead of pickling each chunk.
    X_noisy, X_clean = X_noisy[rows], X_clean[rows]
    op = make_op(K)
    X_hat, tape = forward(op, X_noisy, steps, penalty, alpha, record=True)
    g = X_hat - X_clean
    loss = 0.5 * float(np.vdot(g, g)) / n_total
    g /= n_total
    grad_D, grad_P, sigma_sens, tau_sens = backward(
        op, X_noisy, tape, steps, penalty, alpha, g
    )
    grad_D -= grad_P
    return loss, grad_D, sigma_sens, tau_sens


@_single_blas_thread
def _chunk_denoise(K, X_noisy, steps, penalty, alpha, rows, make_op):
    return forward(make_op(K), X_noisy[rows], steps, penalty, alpha)[0]


def chunk_slices(
    n_samples,
    n_features,
    n_components,
    n_layers,
    itemsize,
    n_jobs,
    chunk_size=None,
    *,
    budget=_CHUNK_BYTES,
):
    """Even slices of the samples: at least one per job, tape within ``budget``."""
    if chunk_size is not None and not (
        isinstance(chunk_size, numbers.Integral) and chunk_size >= 1
    ):
        raise ValueError(
            f"chunk_size must be a positive integer or None, got {chunk_size!r}."
        )
    if chunk_size is None:
        per_sample = (n_layers + 1) * (n_features + n_components) * itemsize
        chunk_size = max(_MIN_CHUNK, budget // per_sample)
    n_chunks = max(-(-n_samples // chunk_size), min(n_jobs, n_samples))
    return list(gen_even_slices(n_samples, n_chunks))


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


def _check_n_layers(n_layers):
    if not isinstance(n_layers, numbers.Integral) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}.")
    return int(n_layers)


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
    the steps on ``K``.

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
        true bilevel gradient by implicit differentiation (needs
        ``penalty="huber"``; computed in float64; see
        :mod:`sklearn_ergo._implicit`).
    ergodic_weights : {"uniform", "linear"} or array-like, default="uniform"
        Weights of the ergodic average (see :func:`output_weights`).
    penalty : {"l1", "huber"}, default="l1"
        ``F``: the l1 norm, or its Huber smoothing with parameter ``huber_eps``.
    huber_eps : float, default=0.01
        Huber parameter (only for ``penalty="huber"``).
    sigma, tau : float or None, default=None
        Fixed dual and primal steps (constants, ``sigma tau ||K||^2 < 1``
        required).  ``None`` for both: ``sigma = tau = 0.99 / ||K||_2``,
        differentiated through.  Unused by ``unroll="implicit"``.
    n_jobs : int, default=None
        Number of joblib workers for the chunks of samples.  Each chunk runs
        with single-threaded BLAS, so ``n_jobs`` is the number of cores used.
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
    n_layers = _check_n_layers(n_layers)
    pen = make_penalty(penalty, huber_eps)
    if unroll == "implicit":
        return implicit_loss_grad(
            K,
            X_noisy,
            X_clean,
            pen,
            n_jobs=n_jobs,
            chunk_size=chunk_size,
        )
    alpha = output_weights(n_layers, unroll, ergodic_weights)
    steps, norm, norm_grad = step_schedule(DenseOperator(K), n_layers, sigma, tau)
    return _loss_grad(
        K, X_noisy, X_clean, steps, norm, norm_grad, pen, alpha, n_jobs, chunk_size
    )


def _loss_grad(
    K,
    X_noisy,
    X_clean,
    steps,
    norm,
    norm_grad,
    pen,
    alpha,
    n_jobs=None,
    chunk_size=None,
    make_op=DenseOperator,
):
    """:func:`unrolled_loss_grad` on validated inputs.

    ``make_op(K)`` builds the operator (``DenseOperator`` or, e.g., a
    ``functools.partial`` of ``ConvolutionalOperator``); it must be picklable
    for joblib workers.
    """
    op = make_op(K)
    slices = chunk_slices(
        len(X_noisy),
        op.n_primal,
        op.n_dual,
        steps.n_layers,
        X_noisy.itemsize,
        _n_jobs(n_jobs),
        chunk_size,
    )
    results = _parallel(n_jobs)(
        delayed(_chunk_loss_grad)(
            K, X_noisy, X_clean, steps, pen, alpha, len(X_noisy), s, make_op
        )
        for s in slices
    )
    loss = sum(r[0] for r in results)
    grad = sum(r[1] for r in results)
    sigma_sens = sum(r[2] for r in results)
    tau_sens = sum(r[3] for r in results)
    add_step_rule_grad(grad, steps, norm, norm_grad, sigma_sens, tau_sens)
    return loss, grad


def add_step_rule_grad(grad, steps, norm, norm_grad, sigma_sens, tau_sens):
    """Add to ``grad`` the share of ``K`` that reaches the loss through the steps.

    ``sigma_l ∝ ||K||^-a`` and ``tau_l ∝ ||K||^-b`` (the powers of
    ``steps``), so ``d loss / d||K|| = -(a sigma_sens + b tau_sens) / ||K||``.
    """
    if steps.sigma_power or steps.tau_power:
        dnorm = -(steps.sigma_power * sigma_sens + steps.tau_power * tau_sens) / norm
        grad += (dnorm * norm_grad).astype(grad.dtype)


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
    """Apply the unrolled denoiser with operator ``K`` (the map of
    :func:`unrolled_loss_grad`) to the rows of ``X_noisy``.

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
    n_layers = _check_n_layers(n_layers)
    pen = make_penalty(penalty, huber_eps)
    if unroll == "implicit":
        return implicit_denoise(K, X_noisy, pen, n_jobs=n_jobs, chunk_size=chunk_size)
    alpha = output_weights(n_layers, unroll, ergodic_weights)
    steps = step_schedule(DenseOperator(K), n_layers, sigma, tau)[0]
    return _denoise(K, X_noisy, steps, pen, alpha, n_jobs, chunk_size)


def _denoise(
    K, X_noisy, steps, pen, alpha, n_jobs=None, chunk_size=None, make_op=DenseOperator
):
    slices = prediction_slices(make_op(K), X_noisy, n_jobs, chunk_size)
    parts = _parallel(n_jobs)(
        delayed(_chunk_denoise)(K, X_noisy, steps, pen, alpha, s, make_op)
        for s in slices
    )
    return np.concatenate(parts) if parts else np.empty_like(X_noisy)


def prediction_slices(op, X_noisy, n_jobs, chunk_size=None):
    """Chunks of the rows of ``X_noisy`` for a forward pass without tape."""
    # No tape in prediction: the chunk's iterates (~3 layers) fit in cache.
    return chunk_slices(
        len(X_noisy),
        op.n_primal,
        op.n_dual,
        2,
        X_noisy.itemsize,
        _n_jobs(n_jobs),
        chunk_size,
        budget=_DENOISE_BYTES,
    )


def _n_jobs(n_jobs):
    return effective_n_jobs(n_jobs)


def _parallel(n_jobs):
    """``Parallel(n_jobs)``, holding one BLAS thread around several workers.

    Each chunk runs with one BLAS thread (:func:`_single_blas_thread`), but
    the BLAS pool is process-wide: workers that are threads of this process
    (the threading backend, an in-process dask cluster) would set and restore
    it concurrently, so the first to finish would give all cores back under
    the others and the last would leave the caller's pool at one thread.
    Holding the limit around all of them keeps one thread during the work and
    restores the caller's setting after.
    """
    parallel = Parallel(n_jobs=n_jobs)
    if _n_jobs(n_jobs) <= 1:
        return parallel

    def run(tasks):
        with _one_blas_thread():
            return parallel(tasks)

    return run
