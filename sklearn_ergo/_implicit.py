r"""The true bilevel gradient, by implicit differentiation of the lower level.

For the Huber penalty ``F`` (smooth, ``docs/math.md``, section 7) the
lower-level problem

.. math::

    \hat x = \operatorname{argmin}_x \ F(K x) + \tfrac12 \|x - \tilde x\|^2

is strongly convex with a piecewise linear gradient, so its solution is
characterised by ``Phi(x, K) = x - x~ + K^T psi(K x) = 0`` with
``psi(u) = F'(u) = clip(u / eps, -1, 1)`` (which is also the dual solution
``y``).  Where the solution is differentiable (no ``|(K x^)_j| = eps``
exactly, the generic case), with ``D = diag(psi'(K x^))`` (``1 / eps`` where
``|K x^| < eps``, else 0) and ``H = I + K^T D K`` (symmetric positive
definite), differentiating ``Phi = 0`` gives, for the loss gradient
``g = dl/dx^``, the adjoint ``v = H^{-1} g`` and

.. math::

    \nabla_K \ell = -\big(\psi\, v^T + (D K v)\, \hat x^T\big).

The lower level is solved by a semismooth Newton method (the generalised
Hessian is ``H``) with an Armijo backtracking line search, which identifies
the set ``|K x| < eps`` and then converges in one step; the Newton and
adjoint systems are solved matrix-free by a conjugate gradient run per
sample, through the operator protocol of :mod:`._operators` only.  For
``F = ||.||_1`` the solution map is not differentiable on a set that training
visits (the solution sits on kinks), so the implicit mode requires Huber.

Everything is computed in float64, whatever the input dtype.
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from ._operators import DenseOperator
from ._parallel import chunk_slices, map_chunks

#: Newton stops when every sample's gradient norm is below this times
#: ``1 + ||x~||``; the problem is 1-strongly convex, so this bounds
#: ``||x - x^||`` as well.
NEWTON_TOL = 1e-11

#: Newton iterations allowed; on 8x8 image patches 10-20 are typical, large
#: operators (many changes of the set ``|K x| < eps``) need more.
NEWTON_MAX_ITER = 200

# Relative residual of the adjoint solve (the gradient's accuracy).
_ADJOINT_RTOL = 1e-12

_CHUNK_SIZE = 1024


def check_implicit_penalty(penalty):
    """Raise unless the penalty is smooth (Huber)."""
    if not penalty.smooth:
        raise ValueError(
            "unroll='implicit' differentiates the solution of the lower-level "
            "problem, which needs a smooth penalty: use penalty='huber'. With "
            "penalty='l1' the solution map is not differentiable where "
            "entries of K x^ vanish; use unroll='last' or 'ergodic'."
        )


def _huber_terms(U, eps):
    """Per-row Huber value, ``psi(U)`` and the mask of ``|U| < eps``."""
    A = np.abs(U)
    inner = A < eps
    value = np.where(inner, U * U / (2 * eps), A - eps / 2).sum(axis=1)
    return value, np.clip(U / eps, -1.0, 1.0), inner


def _batched_cg(apply_A, B, rtol, max_iter):
    """Solve ``A x_i = b_i`` for every row by conjugate gradients.

    ``apply_A`` applies the (per-row SPD) block-diagonal operator to a stack
    of rows; each row has its own step lengths and its own stopping test
    ``||r_i|| <= rtol_i ||b_i||``.
    """
    X = np.zeros_like(B)
    R = B.copy()
    P = R.copy()
    rr = np.einsum("ij,ij->i", R, R)
    target = (np.broadcast_to(rtol, rr.shape) ** 2) * rr
    for _ in range(max_iter):
        active = rr > target
        if not active.any():
            break
        AP = apply_A(P)
        pAp = np.einsum("ij,ij->i", P, AP)
        a = np.divide(rr, pAp, out=np.zeros_like(rr), where=active)
        X += a[:, None] * P
        R -= a[:, None] * AP
        rr_new = np.einsum("ij,ij->i", R, R)
        beta = np.divide(rr_new, rr, out=np.zeros_like(rr), where=active)
        P *= beta[:, None]
        P += R
        rr = rr_new
    return X


def solve_lower_level(op, X, eps, *, max_iter, tol=NEWTON_TOL):
    """Solve ``min_x F_eps(K x) + ||x - X||^2 / 2`` row by row (semismooth Newton).

    Parameters
    ----------
    op : operator
        ``K`` (see :mod:`sklearn_ergo._operators`), float64.
    X : ndarray of shape (N, n)
        Noisy samples, float64.
    eps : float
        Huber parameter.
    max_iter : int
        Maximum number of Newton iterations.
    tol : float
        Stop when every row's gradient norm is at most ``tol (1 + ||X_i||)``.

    Returns
    -------
    X_hat : ndarray of shape (N, n)
    n_iter : int
    converged : bool
    """
    cg_iter = 2 * op.n_primal + 50
    tol = tol * (1.0 + np.linalg.norm(X, axis=1))
    X_hat = X.copy()
    U = op.apply(X_hat)
    value, psi, inner = _huber_terms(U, eps)
    for n_iter in range(max_iter + 1):
        grad = X_hat - X + op.adjoint(psi)
        gnorm = np.linalg.norm(grad, axis=1)
        if n_iter == max_iter or np.all(gnorm <= tol):
            break
        active = gnorm > tol
        d = inner[active] / eps

        def hessian(V, d=d):
            return V + op.adjoint(d * op.apply(V))

        # Inexact Newton: a forcing term that tightens as the gradient shrinks.
        rtol = np.minimum(0.1, np.sqrt(gnorm[active]))
        step = -_batched_cg(hessian, grad[active], rtol, cg_iter)
        x0 = X_hat[active]
        f0 = value[active] + 0.5 * np.sum((x0 - X[active]) ** 2, axis=1)
        slope = np.einsum("ij,ij->i", grad[active], step)
        t = np.ones(len(x0))
        pending = np.ones(len(x0), dtype=bool)
        for _ in range(40):  # Armijo backtracking, per row
            x_try = x0[pending] + t[pending, None] * step[pending]
            U_try = op.apply(x_try)
            v_try, psi_try, inner_try = _huber_terms(U_try, eps)
            f_try = v_try + 0.5 * np.sum((x_try - X[active][pending]) ** 2, axis=1)
            # The slack admits steps whose decrease is below the rounding of f,
            # as near the solution, where the full Newton step is right.
            slack = 1e-14 * np.abs(f0[pending])
            ok = f_try <= f0[pending] + 1e-4 * t[pending] * slope[pending] + slack
            rows = np.flatnonzero(active)[np.flatnonzero(pending)[ok]]
            X_hat[rows], U[rows] = x_try[ok], U_try[ok]
            value[rows], psi[rows], inner[rows] = v_try[ok], psi_try[ok], inner_try[ok]
            pending[np.flatnonzero(pending)[ok]] = False
            if not pending.any():
                break
            t[pending] /= 2
    return X_hat, n_iter, bool(np.all(gnorm <= tol))


def _chunk_implicit(K, X_noisy, X_clean, eps, max_iter, rows):
    op = DenseOperator(K)
    X = X_noisy[rows]
    X_hat, _, converged = solve_lower_level(op, X, eps, max_iter=max_iter)
    if X_clean is None:
        return X_hat, converged
    n_total = len(X_noisy)
    g = (X_hat - X_clean[rows]) / n_total
    loss = 0.5 * n_total * float(np.vdot(g, g))
    _, psi, inner = _huber_terms(op.apply(X_hat), eps)
    d = inner / eps

    def hessian(V):
        return V + op.adjoint(d * op.apply(V))

    V = _batched_cg(hessian, g, _ADJOINT_RTOL, 2 * op.n_primal + 50)
    grad = op.weight_grad(psi, V)
    grad += op.weight_grad(d * op.apply(V), X_hat)
    return loss, -grad, converged


def _run(K, X_noisy, X_clean, penalty, max_iter, n_jobs, chunk_size):
    """The chunks of the implicit mode in float64 (validated inputs)."""
    check_implicit_penalty(penalty)
    X_noisy = X_noisy.astype(np.float64)
    if X_clean is not None:
        X_clean = X_clean.astype(np.float64)
    # No tape here: chunks only serve parallelism and keep the per-row CG
    # runs (which wait for the slowest row of their chunk) short.
    slices = chunk_slices(
        len(X_noisy), 0, n_jobs, chunk_size or _CHUNK_SIZE, sample_size=K.shape[1]
    )
    results = map_chunks(
        _chunk_implicit,
        slices,
        n_jobs,
        K.astype(np.float64),
        X_noisy,
        X_clean,
        penalty.eps,
        max_iter,
    )
    if not all(r[-1] for r in results):
        warnings.warn(
            f"The lower-level Newton solver did not converge within {max_iter} "
            "iterations; the implicit gradient is that of an inexact solution.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return results


def implicit_loss_grad(
    K,
    X_noisy,
    X_clean,
    penalty,
    *,
    max_iter=NEWTON_MAX_ITER,
    n_jobs=None,
    chunk_size=None,
):
    """Loss at the solution of the lower level and its implicit gradient.

    Inputs are validated arrays; ``max_iter`` bounds the Newton iterations.
    Returns ``(loss, grad)``, ``grad`` in the dtype of ``K``.
    """
    results = _run(K, X_noisy, X_clean, penalty, max_iter, n_jobs, chunk_size)
    loss = sum(r[0] for r in results)
    grad = sum(r[1] for r in results)
    return loss, grad.astype(K.dtype)


def implicit_denoise(
    K, X_noisy, penalty, *, max_iter=NEWTON_MAX_ITER, n_jobs=None, chunk_size=None
):
    """The solution of the lower level for every row (validated inputs)."""
    results = _run(K, X_noisy, None, penalty, max_iter, n_jobs, chunk_size)
    X_hat = np.concatenate([r[0] for r in results])
    return X_hat.astype(X_noisy.dtype)
