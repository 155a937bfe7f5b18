"""Proximal maps of the lower-level functions and their derivatives.

The unrolled solver needs, for each function, the prox it applies and the
(almost-everywhere) derivative of that prox, which the backward pass uses.
``F`` is only ever touched through its convex conjugate (the dual step of
Chambolle-Pock), ``G`` through its own prox.  Every conjugate prox below maps
into a box (``[-1, 1]``, or ``[-b_j, b_j]`` per coordinate for a weighted
l1 norm), and the derivative vanishes exactly where the output sits on the
boundary, so the backward pass reads the mask off the stored dual iterate
``y`` (:meth:`active`) instead of storing a separate mask.
"""

import numbers

import numpy as np


class L1Norm:
    """``F(u) = ||u||_1``; its conjugate is the indicator of the unit ``l_inf`` ball.

    With ``F = ||.||_1`` the scale of the analysis operator is the
    regularisation weight.
    """

    eps = 0.0

    def value(self, u):
        return float(np.abs(u).sum())

    def prox(self, u, tau):
        """Soft thresholding, ``prox_{tau F}(u)``."""
        return np.sign(u) * np.maximum(np.abs(u) - tau, 0.0)

    def prox_conjugate(self, z, sigma, out=None):
        """``prox_{sigma F*}(z) = clip(z, -1, 1)``, in place when ``out is z``."""
        return np.clip(z, -1.0, 1.0, out=out)

    def prox_conjugate_slope(self, sigma):
        """Derivative of ``prox_{sigma F*}`` where ``|y| < 1`` (zero elsewhere)."""
        return 1.0

    def active(self, y, out):
        """``out <- (|y| < 1)``: where ``prox_{sigma F*}`` had a non-zero slope."""
        np.abs(y, out=out)
        return np.less(out, 1.0, out=out)


class WeightedL1:
    """``F(u) = sum_j b_j |u_j|`` with per-coordinate weights ``b_j > 0``.

    Its conjugate is the indicator of the box ``|y_j| <= b_j``.  ``bounds``
    has the shape of the dual iterate (one row per sample); it is what a
    majorize-minimize stage of a non-convex penalty solves
    (:mod:`sklearn_ergo._reweighted`).
    """

    eps = 0.0

    def __init__(self, bounds):
        self.bounds = bounds

    def value(self, u):
        return float(np.sum(self.bounds * np.abs(u)))

    def prox_conjugate(self, z, sigma, out=None):
        """``prox_{sigma F*}(z) = clip(z, -b, b)``, in place when ``out is z``."""
        return np.clip(z, -self.bounds, self.bounds, out=out)

    def prox_conjugate_slope(self, sigma):
        """Derivative of ``prox_{sigma F*}`` where ``|y| < b`` (zero elsewhere)."""
        return 1.0

    def active(self, y, out):
        """``out <- (|y| < b)``."""
        np.abs(y, out=out)
        return np.less(out, self.bounds, out=out)


class Huber:
    """Huber function with parameter ``eps > 0``, a smooth variant of ``||.||_1``.

    ``F(u) = sum_i h(u_i)`` with ``h(t) = t**2 / (2 eps)`` for ``|t| <= eps`` and
    ``|t| - eps / 2`` otherwise, so that
    ``F*(y) = i_{||y||_inf <= 1}(y) + (eps / 2) ||y||^2``.
    """

    def __init__(self, eps):
        if not isinstance(eps, numbers.Real) or isinstance(eps, bool):
            raise TypeError(f"huber_eps must be a real number, got {eps!r}.")
        # eps = inf would turn the backward pass's eps * <w, y> into inf * 0.
        if not (0 < eps < np.inf):
            raise ValueError(f"huber_eps must be > 0 and finite, got {eps!r}.")
        self.eps = float(eps)

    def value(self, u):
        a = np.abs(u)
        return float(
            np.where(a <= self.eps, a**2 / (2 * self.eps), a - self.eps / 2).sum()
        )

    def prox(self, u, tau):
        """``prox_{tau F}(u)``: linear shrinkage near zero, soft thresholding beyond."""
        inner = np.abs(u) <= self.eps + tau
        return np.where(inner, u * (self.eps / (self.eps + tau)), u - tau * np.sign(u))

    def prox_conjugate(self, z, sigma, out=None):
        """``prox_{sigma F*}(z) = clip(z / (1 + sigma eps), -1, 1)``."""
        out = np.multiply(z, 1.0 / (1.0 + sigma * self.eps), out=out)
        return np.clip(out, -1.0, 1.0, out=out)

    def prox_conjugate_slope(self, sigma):
        """Derivative of ``prox_{sigma F*}`` where ``|y| < 1`` (zero elsewhere)."""
        return 1.0 / (1.0 + sigma * self.eps)

    active = L1Norm.active


class SquaredL2:
    """``G(r) = ||r||^2 / 2``, the data term of the denoiser (on the residual)."""

    def value(self, r):
        return 0.5 * float(np.vdot(r, r))

    def prox(self, z, tau, out=None):
        """``prox_{tau G}(z) = z / (1 + tau)``."""
        return np.multiply(z, 1.0 / (1.0 + tau), out=out)

    def prox_slope(self, tau):
        return 1.0 / (1.0 + tau)


def make_penalty(penalty, huber_eps):
    """Return the penalty object for a ``penalty`` string."""
    if penalty == "l1":
        return L1Norm()
    if penalty == "huber":
        return Huber(huber_eps)
    raise ValueError(f"penalty must be 'l1' or 'huber', got {penalty!r}.")
