"""Unrolled Chambolle-Pock on the residual, with its exact backward pass.

Pure NumPy, no scikit-learn: the forward pass records a tape of iterates, the
backward pass walks it in reverse (``../shared/MATH.md``, sections 2 and 3, and
``docs`` of :func:`backward`).  Samples are rows.  Step sizes are per layer so
that schedules other than a constant step (e.g. accelerated variants) share
the same recursion; layer ``l`` (1-based) uses ``sigma[l-1]``, ``tau[l-1]``,
``theta[l-1]``.
"""

from dataclasses import dataclass

import numpy as np

from ._prox import SquaredL2

_G = SquaredL2()


@dataclass(frozen=True)
class StepSchedule:
    """Per-layer step sizes of the unrolled iteration.

    ``sigma_power`` and ``tau_power`` record how the steps depend on the
    operator norm ``s = ||K||``: ``sigma_l ∝ s**(-sigma_power)`` and
    ``tau_l ∝ s**(-tau_power)`` (both 0 for steps fixed by the user).  This
    is all the backward pass needs to differentiate through the step rule.
    """

    sigma: np.ndarray
    tau: np.ndarray
    theta: np.ndarray
    sigma_power: float = 0.0
    tau_power: float = 0.0

    @property
    def n_layers(self):
        return len(self.sigma)


def constant_steps(sigma, tau, n_layers, *, power=0.0):
    """``sigma_l = sigma``, ``tau_l = tau``, ``theta_l = 1`` for every layer."""
    full = np.full(n_layers, 1.0)
    return StepSchedule(sigma * full, tau * full, full, power, power)


def forward(op, X, steps, penalty, alpha, *, record=False):
    """Run ``L`` Chambolle-Pock iterations on the residual ``r = x - X``.

    Parameters
    ----------
    op : operator
        ``K`` (see :mod:`sklearn_ergo._operators`).
    X : ndarray of shape (N, n)
        Noisy samples ``x~``, one per row.
    steps : StepSchedule
    penalty : prox object for ``F`` (``L1Norm`` or ``Huber``).
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
    N, n = X.shape
    L, m, dtype = steps.n_layers, op.n_dual, X.dtype
    if record:
        R = np.zeros((L + 1, N, n), dtype=dtype)
        Y = np.empty((L, N, m), dtype=dtype)
    else:
        R = np.zeros((2, N, n), dtype=dtype)
    y = np.zeros((N, m), dtype=dtype)
    z = np.empty((N, m), dtype=dtype)
    xbar = X.copy()
    out = np.zeros((N, n), dtype=dtype)
    for l in range(1, L + 1):
        sigma, tau, theta = (
            float(steps.sigma[l - 1]),
            float(steps.tau[l - 1]),
            float(steps.theta[l - 1]),
        )
        r_prev, r = (R[l - 1], R[l]) if record else (R[(l - 1) % 2], R[l % 2])
        if record:
            y = Y[l - 1]
            y[...] = Y[l - 2] if l > 1 else 0.0
        # dual step: y <- prox_{sigma F*}(y + sigma K xbar)
        op.apply(xbar, out=z)
        z *= sigma
        y += z
        penalty.prox_conjugate(y, sigma, out=y)
        # primal step: r <- prox_{tau G}(r - tau K^T y)
        op.adjoint(y, out=r)
        r *= -tau
        r += r_prev
        _G.prox(r, tau, out=r)
        # extrapolation, stored with the data added: xbar = X + r + theta (r - r_prev)
        np.multiply(r, 1.0 + theta, out=xbar)
        xbar -= theta * r_prev
        xbar += X
        if alpha[l - 1] != 0.0:
            out += float(alpha[l - 1]) * r
    out += X
    return out, ((R, Y) if record else None)


def backward(op, X, tape, steps, penalty, alpha, g, *, on_layer=None):
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

    Returns
    -------
    grad_D, grad_P : ndarray of shape (m, n)
        ``sum_l w^[l] xbar^[l-1]^T`` and ``sum_l tau_l y^[l] delta_P^[l]^T``;
        the gradient at fixed steps is ``grad_D - grad_P``.
    sigma_sens, tau_sens : float
        ``sum_l sigma_l dloss/dsigma_l`` and ``sum_l tau_l dloss/dtau_l``,
        from which the caller differentiates a step rule that depends on
        ``K``.
    """
    R, Y = tape
    N, n = X.shape
    L, m, dtype = steps.n_layers, op.n_dual, X.dtype
    eps = penalty.eps
    d_P = np.zeros((N, n), dtype=dtype)  # delta_P^[l+1], then delta_P^[l]
    d_D = np.zeros((N, m), dtype=dtype)  # delta_D^[l+1], then delta_D^[l]
    w_next = np.zeros((N, m), dtype=dtype)  # w^[l+1]
    w_next2 = np.zeros((N, m), dtype=dtype)  # w^[l+2]
    comb = np.empty((N, m), dtype=dtype)
    rho = np.empty((N, n), dtype=dtype)
    xbar = np.empty((N, n), dtype=dtype)
    grad_D = np.zeros(op.weights.shape, dtype=dtype)
    grad_P = np.zeros(op.weights.shape, dtype=dtype)
    wy = pr = 0.0
    for l in range(L, 0, -1):
        sigma, tau, theta = (
            float(steps.sigma[l - 1]),
            float(steps.tau[l - 1]),
            float(steps.theta[l - 1]),
        )
        theta_next = float(steps.theta[l]) if l < L else 0.0
        y = Y[l - 1]
        # rho^[l]: r^[l] feeds the output, z_P^[l+1], and z_D^[l+1], z_D^[l+2]
        # through the extrapolated points xbar^[l], xbar^[l+1].
        np.multiply(w_next, 1.0 + theta, out=comb)
        comb -= theta_next * w_next2
        op.adjoint(comb, out=rho)
        rho += d_P
        if alpha[l - 1] != 0.0:
            rho += float(alpha[l - 1]) * g
        np.multiply(rho, _G.prox_slope(tau), out=d_P)
        # delta_D^[l]: y^[l] feeds z_D^[l+1] and z_P^[l].
        op.apply(d_P, out=comb)
        comb *= -tau
        comb += d_D
        np.multiply(comb, np.abs(y) < 1.0, out=d_D)
        d_D *= penalty.prox_conjugate_slope(sigma)
        if on_layer is not None:
            on_layer(l, d_P, d_D)
        w_next, w_next2 = w_next2, w_next
        np.multiply(d_D, sigma, out=w_next)
        # xbar^[l-1] = X + (1 + theta_{l-1}) r^[l-1] - theta_{l-1} r^[l-2]
        if l > 1:
            theta_prev = float(steps.theta[l - 2])
            np.multiply(R[l - 1], 1.0 + theta_prev, out=xbar)
            if l > 2:
                xbar -= theta_prev * R[l - 2]
            xbar += X
        else:
            xbar[...] = X
        grad_D += op.weight_grad(w_next, xbar)
        grad_P += tau * op.weight_grad(y, d_P)
        if eps:
            wy += float(np.vdot(w_next, y))
        pr += tau * float(np.vdot(d_P, R[l]))
    K = op.weights
    sigma_sens = float(np.vdot(K, grad_D)) - eps * wy
    tau_sens = -float(np.vdot(K, grad_P)) - pr
    return grad_D, grad_P, sigma_sens, tau_sens
