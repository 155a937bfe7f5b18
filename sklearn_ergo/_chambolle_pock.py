"""Unrolled Chambolle-Pock on the residual, with its exact backward pass.

Pure NumPy, no scikit-learn: the forward pass records a tape of iterates, the
backward pass walks it in reverse (``docs/math.md``, sections 3 and 5, and
the docstring of :func:`backward`).  Samples are rows.  Step sizes are per layer so
that schedules other than a constant step (e.g. accelerated variants) share
the same recursion; layer ``l`` (1-based) uses ``sigma[l-1]``, ``tau[l-1]``,
``theta[l-1]``.
"""

import numpy as np

from ._operators import axpy, scratch
from ._penalties import SquaredL2

_G = SquaredL2()


def forward(op, X, steps, penalty, alpha, *, record=False):
    """Run ``L`` Chambolle-Pock iterations on the residual ``r = x - X``.

    Parameters
    ----------
    op : operator
        ``K`` (see :mod:`sklearn_ergo._operators`).
    X : ndarray of shape (N, n)
        Noisy samples ``x~``, one per row.
    steps : StepSchedule
        See :mod:`sklearn_ergo._steps`.
    penalty : convex penalty object for ``F``
        See :mod:`sklearn_ergo._penalties`.
    alpha : ndarray of shape (L,)
        Output weights: ``x^ = X + sum_l alpha_l r^[l]``.
    record : bool
        Keep the tape needed by :func:`backward`.

    Returns
    -------
    X_hat : ndarray of shape (N, n)
    tape : tuple (R, Y) or None
        ``R[l] = r^[l]`` for ``l = 0..L`` and ``Y[l-1] = y^[l]``.
    """
    op = fused(op)
    X = np.ascontiguousarray(X)
    N, n = X.shape
    L, m, dtype = steps.n_layers, op.n_dual, X.dtype
    if record:
        R = np.empty((L + 1, N, n), dtype=dtype)
        Y = np.empty((L, N, m), dtype=dtype)
    else:
        R = np.empty((2, N, n), dtype=dtype)
        y = np.zeros((N, m), dtype=dtype)
    R[0] = 0.0
    xbar = X.copy()
    out = np.zeros((N, n), dtype=dtype)
    for l in range(1, L + 1):
        sigma, tau, theta = (
            float(steps.sigma[l - 1]),
            float(steps.tau[l - 1]),
            float(steps.theta[l - 1]),
        )
        r_prev, r = (R[l - 1], R[l]) if record else (R[(l - 1) % 2], R[l % 2])
        # dual step: y <- prox_{sigma F*}(y + sigma K xbar), the update fused
        # into the matrix product, written into the tape's next slot, and the
        # prox applied per tile while it is in cache (apply_update).
        prev = None
        if record:
            y, prev = Y[l - 1], (Y[l - 2] if l > 1 else None)
        # primal step: r <- prox_{tau G}(r - tau K^T y) = (r - tau K^T y) / (1 + tau),
        # its product fused into the dual step's, per tile of y.
        beta = 1.0 if (l > 1 or not record) else 0.0
        c = _G.prox_slope(tau)
        prox = _prox_parts(penalty, y, sigma)
        apply_update(op, xbar, y, sigma, beta, prev, prox, (r, -tau * c, r_prev, c))
        # extrapolation, stored with the data added: xbar = X + r + theta (r - r_prev)
        np.copyto(xbar, X)
        axpy(r, xbar, 1.0 + theta)
        axpy(r_prev, xbar, -theta)
        if alpha[l - 1] != 0.0:
            axpy(r, out, float(alpha[l - 1]))
    out += X
    return out, ((R, Y) if record else None)


def backward(
    op,
    X,
    tape,
    steps,
    penalty,
    alpha,
    g,
    *,
    on_layer=None,
    bound_grad=None,
    shift_grad=None,
    data_grad=None,
):
    """Exact adjoint of :func:`forward` for an output gradient ``g``.

    With ``w^[l] = sigma_l delta_D^[l]``, for ``l = L, ..., 1``::

        rho^[l]     = alpha_l g + delta_P^[l+1]
                      + K^T ((1 + theta_l) w^[l+1] - theta_{l+1} w^[l+2])
        delta_P^[l] = rho^[l] / (1 + tau_l)
        delta_D^[l] = prox'_{sigma_l F*} * (delta_D^[l+1] - tau_l K delta_P^[l])

    which for constant steps and ``theta = 1`` is the recursion of the maths
    notes.  The gradient with respect to ``K`` at fixed steps is
    ``sum_l w^[l] xbar^[l-1]^T - tau_l y^[l] delta_P^[l]^T``.

    Parameters
    ----------
    on_layer : callable, optional
        ``on_layer(l, delta_P, delta_D)`` is called for every layer (1-based)
        with views that are only valid during the call; used by diagnostics.
    bound_grad : ndarray of shape (N, m), optional
        For a penalty with per-coordinate box bounds ``b``
        (:class:`~sklearn_ergo._prox.WeightedL1`): the gradient of the loss
        with respect to ``b`` is added to it.  Where ``y^[l]`` sits on a face
        of the box, ``y^[l] = sign(y^[l]) b``, so ``b`` receives the adjoint
        of ``y^[l]``, ``delta_D^[l+1] - tau_l K delta_P^[l]``, times the sign.
    shift_grad : ndarray of shape (N, m), optional
        For a penalty centred on targets ``t``
        (:class:`~sklearn_ergo._penalties.ShiftedWeightedL1`): the gradient
        with respect to ``t``, ``-sum_l w^[l]``, is added to it.
    data_grad : ndarray of shape (N, n), optional
        The gradient with respect to ``X`` through the dual steps, ``K^T
        sum_l w^[l]`` (``X`` is in every extrapolated point), is added to it;
        the output's own ``X`` is the caller's share (``g``).

    Returns
    -------
    grad_D, grad_P : ndarray of shape (m, n)
        ``sum_l w^[l] xbar^[l-1]^T`` and ``sum_l tau_l y^[l] delta_P^[l]^T``;
        the gradient at fixed steps is ``grad_D - grad_P``.
    sigma_sens, tau_sens : float
        ``sum_l sigma_l dloss/dsigma_l`` and ``sum_l tau_l dloss/dtau_l``,
        from which the caller differentiates a step rule that depends on
        ``K``.

    Notes
    -----
    ``xbar^[l-1] = X + (1 + theta_{l-1}) r^[l-1] - theta_{l-1} r^[l-2]`` is
    linear in the tape, so ``grad_D`` is accumulated as
    ``(sum_l w^[l])^T X + sum_l c^[l]^T r^[l]`` with the combination
    ``c^[l] = (1 + theta_l) w^[l+1] - theta_{l+1} w^[l+2]`` that ``rho^[l]``
    needs anyway: the extrapolated points are never rebuilt.
    """
    op = fused(op)
    X = np.ascontiguousarray(X)
    R, Y = tape
    N, n = X.shape
    L, m, dtype = steps.n_layers, op.n_dual, X.dtype
    c2 = penalty.conjugate_l2  # F* = ... + (c2 / 2) ||y||^2
    d_P = np.zeros((N, n), dtype=dtype)  # delta_P^[l+1], then delta_P^[l]
    w_next = np.zeros((N, m), dtype=dtype)  # w^[l+1]
    w_next2 = np.zeros((N, m), dtype=dtype)  # w^[l+2], then w^[l]
    w_sum = np.zeros((N, m), dtype=dtype)
    comb = np.empty((N, m), dtype=dtype)
    mask = np.empty((N, m), dtype=dtype)
    d_D = np.empty((N, m), dtype=dtype) if on_layer is not None else None
    grad_D = np.zeros(op.weights.shape, dtype=dtype)
    grad_P = np.zeros(op.weights.shape, dtype=dtype)
    wy = pr = 0.0
    sigma_next = 1.0  # w^[L+1] = 0, any scale
    for l in range(L, 0, -1):
        sigma, tau, theta = (
            float(steps.sigma[l - 1]),
            float(steps.tau[l - 1]),
            float(steps.theta[l - 1]),
        )
        theta_next = float(steps.theta[l]) if l < L else 0.0
        y = Y[l - 1]
        # rho^[l]: r^[l] feeds the output, z_P^[l+1], and z_D^[l+1], z_D^[l+2]
        # through the extrapolated points xbar^[l], xbar^[l+1];
        # delta_P^[l] = (delta_P^[l+1] + K^T comb + alpha_l g) / (1 + tau_l).
        np.multiply(w_next, 1.0 + theta, out=comb)
        axpy(w_next2, comb, -theta_next)
        c = _G.prox_slope(tau)
        op.adjoint_acc(comb, d_P, c, c)
        if alpha[l - 1] != 0.0:
            axpy(g, d_P, c * float(alpha[l - 1]))
        # grad_D's share of r^[l] (see Notes), and the step-size terms.
        op.weight_grad_acc(comb, R[l], grad_D)
        pr += tau * _dot(d_P, R[l])
        # w^[l] = sigma_l prox' * (w^[l+1] / sigma_{l+1} - tau_l K delta_P^[l]),
        # written over w^[l+2], which is no longer needed; prox' is read off y.
        # The mask (and the bounds' share) is applied per tile of the product,
        # in cache (apply_update).
        s = sigma * penalty.prox_conjugate_slope(sigma)
        w = w_next2
        project = _mask_parts(penalty, y, w, mask, comb, bound_grad, sigma)
        apply_update(op, d_P, w, -tau * s, s / sigma_next, w_next, project)
        if on_layer is not None:
            np.multiply(w, 1.0 / sigma, out=d_D)
            on_layer(l, d_P, d_D)
        w_next, w_next2 = w, w_next
        sigma_next = sigma
        axpy(w, w_sum, 1.0)
        op.weight_grad_acc(y, d_P, grad_P, tau)
        if c2:
            wy += _dot(w, y)
    op.weight_grad_acc(w_sum, X, grad_D)
    if data_grad is not None:
        op.adjoint_acc(w_sum, data_grad, 1.0, 1.0)
    K = op.weights
    sigma_sens = float(np.vdot(K, grad_D)) - c2 * wy
    shift = penalty.shift
    if shift is not None:
        # Layer l's pre-prox point holds -sigma_l t.
        sigma_sens -= _dot(w_sum, shift)
        if shift_grad is not None:
            axpy(w_sum, shift_grad, -1.0)
    tau_sens = -float(np.vdot(K, grad_P)) - pr
    return grad_D, grad_P, sigma_sens, tau_sens


def apply_update(op, X, out, alpha, beta, prev=None, post=None, adjoint=None):
    """``out <- alpha K X + beta prev`` (``prev=None``: ``out``), then ``post``.

    ``post(start, stop)`` finishes the flat range ``start:stop`` of ``out``.
    With ``adjoint=(primal, gamma, base, c)``, ``primal <- c base + gamma K^T
    out`` follows (``base`` another array than ``primal``).
    An operator with its own ``apply_update`` (the convolutional one) runs
    the copy, ``post`` and the adjoint per tile while the tile is in cache:
    on a 512x512 image, where the dual (48 filters) is 50 MB, a layer then
    reads it once instead of four times.  Others get the product, ``prev``
    added, one ``post`` on the whole of ``out`` and the adjoint.
    """
    if hasattr(op, "apply_update"):
        op.apply_update(X, out, alpha, beta, prev, post, adjoint)
        return
    if prev is not None and prev is not out:
        # The product straight into out, then one axpy: a pass fewer than
        # copying prev and accumulating the product (through a buffer).
        op.apply_acc(X, out, alpha, 0.0)
        if beta != 0.0:
            axpy(prev, out, beta)
    else:
        op.apply_acc(X, out, alpha, beta)
    if post is not None:
        post(0, out.size)
    if adjoint is not None:
        primal, gamma, base, c = adjoint
        op.adjoint_acc(out, primal, gamma, 0.0)
        axpy(base, primal, c)


def _parts(penalty, start, stop, *arrays):
    """``penalty`` and views of the dual-shaped ``arrays`` on a flat range.

    The whole range keeps the arrays' shapes (and a penalty without ``part``
    works on operators that finish their output in one piece).
    """
    if start == 0 and stop == arrays[0].size:
        return penalty, arrays
    return penalty.part(start, stop), [a.reshape(-1)[start:stop] for a in arrays]


def _prox_parts(penalty, y, sigma):
    """``post`` of :func:`apply_update`: ``y <- prox_{sigma F*}(y)`` on a range."""

    def prox(start, stop):
        part, (z,) = _parts(penalty, start, stop, y)
        part.prox_conjugate(z, sigma, out=z)

    return prox


def _mask_parts(penalty, y, w, mask, scratch, bound_grad, sigma):
    """``post`` of :func:`apply_update`: ``w <- prox' * w`` on a range.

    ``prox'`` is read off ``y`` (:meth:`active`); with ``bound_grad``, its
    share ``sign(y) * w / sigma`` off the mask is added first.
    """

    def project(start, stop):
        arrays = (y, w, mask, scratch) + (() if bound_grad is None else (bound_grad,))
        part, (y_, w_, mask_, scratch_, *bound) = _parts(penalty, start, stop, *arrays)
        part.active(y_, out=mask_)
        if bound:
            np.sign(y_, out=scratch_)
            scratch_ *= w_
            axpy(scratch_, bound[0], 1.0 / sigma)
            scratch_ *= mask_
            axpy(scratch_, bound[0], -1.0 / sigma)
        w_ *= mask_

    return project


def _dot(x, y):
    return float(np.dot(x.reshape(-1), y.reshape(-1)))


def fused(op):
    """``op`` itself if it has the fused products, else an adapter providing them.

    The adapter builds ``apply_acc``, ``adjoint_acc`` and ``weight_grad_acc``
    from ``apply``, ``adjoint`` and ``weight_grad``, for operators that only
    implement the basic protocol (see :mod:`sklearn_ergo._operators`).
    """
    if all(hasattr(op, f) for f in ("apply_acc", "adjoint_acc", "weight_grad_acc")):
        return op
    return _Fused(op)


class _Fused:
    """Fused products ``out <- alpha * A(X) + beta * out`` from an operator's basics."""

    def __init__(self, op):
        self.op = op
        self.weights = op.weights
        self.n_dual, self.n_primal = op.n_dual, op.n_primal
        self._scratch = {}

    def __getattr__(self, name):
        return getattr(self.op, name)

    def _product(self, method, A, out, alpha, beta):
        if beta == 0.0:
            method(A, out=out)
            if alpha != 1.0:
                out *= alpha
            return
        value = method(A, out=scratch(self._scratch, out))
        value *= alpha
        if beta != 1.0:
            out *= beta
        out += value

    def apply_acc(self, X, out, alpha=1.0, beta=0.0):
        self._product(self.op.apply, X, out, alpha, beta)

    def adjoint_acc(self, Y, out, alpha=1.0, beta=0.0):
        self._product(self.op.adjoint, Y, out, alpha, beta)

    def weight_grad_acc(self, Y, X, out, alpha=1.0):
        value = self.op.weight_grad(Y, X)
        value *= alpha
        out += value
