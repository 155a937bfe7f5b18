"""A non-convex log penalty, minimised by reweighted l1 stages, and its gradient.

The lower level becomes ``min_x sum_j eps_k log(1 + |(K x)_j| / eps_k) +
||x - x~||^2 / 2`` with one ``eps_k > 0`` per filter ``k`` (the filter that
produces coordinate ``j``).  The penalty is concave in ``|z|``, so its
tangent at the current point majorises it: one majorize-minimize step is a
weighted l1 problem, ``min_x sum_j w_j |(K x)_j| + ||x - x~||^2 / 2`` with
``w_j = eps_k / (eps_k + |(K x^(s-1))_j|)`` (Candes, Wakin and Boyd 2008).
Stage 1 linearises at ``K x = 0`` (``w = 1``: the l1 model), and every stage
is ``n_layers`` unrolled Chambolle-Pock iterations from ``x = x~`` with the
dual box ``|y_j| <= w_j``.  As ``eps -> infinity`` every ``w -> 1`` and the
model is the convex l1 one, so learning starts where the l1 model is.

Weights in ``(0, 1]`` shrink the box, never the operator, so the steps of the
l1 model (``sigma tau ||K||^2 < 1``) stay valid at every stage.

The gradient runs the exact backward pass of every stage in reverse; a stage
passes the adjoint of its weights (``bound_grad`` of
:func:`~sklearn_ergo._chambolle_pock.backward`) through
``w = eps / (eps + |z|)``, ``z = K x^(s-1)``, to ``K``, to ``eps`` and to
the output of the stage before.
"""

import numpy as np
from sklearn.utils.parallel import delayed

from ._chambolle_pock import backward, forward
from ._prox import L1Norm, WeightedL1
from ._unrolled import (
    _n_jobs,
    _parallel,
    _single_blas_thread,
    add_step_rule_grad,
    chunk_slices,
    prediction_slices,
)


def _tile(eps, op, dtype):
    """``eps`` per dual coordinate (dual rows hold one filter vector per position)."""
    return np.tile(np.asarray(eps, dtype=dtype), op.n_dual // len(eps))


def _weights(op, x, eps_full):
    """``z = K x`` and the stage weights ``eps / (eps + |z|)``."""
    z = op.apply(x)
    w = np.abs(z)
    w += eps_full
    np.divide(eps_full, w, out=w)
    return z, w


def reweighted_forward(op, X, eps, steps, alpha, n_stages, *, record=False):
    """Run ``n_stages`` reweighted stages of unrolled Chambolle-Pock on ``X``.

    Returns the output of the last stage and, with ``record=True``, the tape
    ``[(x_in, z, w, tape), ...]`` of every stage (``None`` for stage 1's
    input, ``z`` and ``w``).
    """
    eps_full = _tile(eps, op, X.dtype)
    x, tapes = None, []
    for s in range(n_stages):
        z = w = None
        penalty = L1Norm()
        if s:
            z, w = _weights(op, x, eps_full)
            penalty = WeightedL1(w)
        x_in = x
        x, tape = forward(op, X, steps, penalty, alpha, record=record)
        if record:
            tapes.append((x_in, z, w, tape))
    return x, (tapes if record else None)


def reweighted_backward(op, X, eps, tapes, steps, alpha, g):
    """Exact adjoint of :func:`reweighted_forward` for an output gradient ``g``.

    Returns
    -------
    grad_K : ndarray of shape (m, n)
        Gradient at fixed steps.
    grad_eps : ndarray of shape (m,)
    sigma_sens, tau_sens : float
        Summed over stages (see :func:`~sklearn_ergo._chambolle_pock.backward`).
    """
    m = len(eps)
    eps_full = _tile(eps, op, X.dtype)
    grad_K = np.zeros(op.weights.shape, dtype=X.dtype)
    grad_eps = np.zeros(m)
    sigma_sens = tau_sens = 0.0
    for x_in, z, w, tape in reversed(tapes):
        penalty = L1Norm() if w is None else WeightedL1(w)
        bound_grad = None if w is None else np.zeros_like(w)
        grad_D, grad_P, s_sens, t_sens = backward(
            op, X, tape, steps, penalty, alpha, g, bound_grad=bound_grad
        )
        grad_K += grad_D
        grad_K -= grad_P
        sigma_sens += s_sens
        tau_sens += t_sens
        if w is None:
            break
        # w = eps / (eps + |z|): dw/deps = w (1 - w) / eps, dw/dz = -sign(z) w^2 / eps.
        grad_eps += (bound_grad * w * (1.0 - w)).reshape(-1, m).sum(axis=0) / eps
        d_z = bound_grad
        d_z *= w
        d_z *= w
        d_z /= eps_full
        d_z *= -np.sign(z)
        grad_K += op.weight_grad(d_z, x_in)
        g = op.adjoint(d_z)
    return grad_K, grad_eps, sigma_sens, tau_sens


@_single_blas_thread
def _chunk_loss_grad(
    K, eps, X_noisy, X_clean, steps, alpha, n_stages, n_total, rows, make_op
):
    X_noisy, X_clean = X_noisy[rows], X_clean[rows]
    op = make_op(K)
    X_hat, tapes = reweighted_forward(
        op, X_noisy, eps, steps, alpha, n_stages, record=True
    )
    g = X_hat - X_clean
    loss = 0.5 * float(np.vdot(g, g)) / n_total
    g /= n_total
    return (loss, *reweighted_backward(op, X_noisy, eps, tapes, steps, alpha, g))


@_single_blas_thread
def _chunk_denoise(K, eps, X_noisy, steps, alpha, n_stages, rows, make_op):
    return reweighted_forward(make_op(K), X_noisy[rows], eps, steps, alpha, n_stages)[0]


def reweighted_loss_grad(
    K, eps, X_noisy, X_clean, steps, norm, norm_grad, alpha, n_stages, n_jobs, make_op
):
    """Loss and exact gradients in ``K`` and ``eps`` on validated inputs.

    ``steps`` were computed from ``norm`` (an upper bound of ``||K||`` with
    gradient ``norm_grad``) and are differentiated through.  Samples are
    split into chunks processed by joblib workers, as in
    :func:`sklearn_ergo.unrolled_loss_grad`.

    Returns
    -------
    loss : float
    grad_K : ndarray of shape K.shape
    grad_eps : ndarray of shape (n_filters,)
    """
    op = make_op(K)
    slices = chunk_slices(
        len(X_noisy),
        op.n_primal,
        op.n_dual,
        n_stages * (steps.n_layers + 1),  # every stage's tape is kept
        X_noisy.itemsize,
        _n_jobs(n_jobs),
    )
    results = _parallel(n_jobs)(
        delayed(_chunk_loss_grad)(
            K, eps, X_noisy, X_clean, steps, alpha, n_stages, len(X_noisy), s, make_op
        )
        for s in slices
    )
    loss, grad_K, grad_eps, sigma_sens, tau_sens = (
        sum(parts) for parts in zip(*results, strict=True)
    )
    add_step_rule_grad(grad_K, steps, norm, norm_grad, sigma_sens, tau_sens)
    return loss, grad_K, grad_eps


def reweighted_denoise(K, eps, X_noisy, steps, alpha, n_stages, n_jobs, make_op):
    """The output of :func:`reweighted_forward` for every row of ``X_noisy``."""
    slices = prediction_slices(make_op(K), X_noisy, n_jobs)
    parts = _parallel(n_jobs)(
        delayed(_chunk_denoise)(K, eps, X_noisy, steps, alpha, n_stages, s, make_op)
        for s in slices
    )
    return np.concatenate(parts)
