r"""Step rules of the unrolled Chambolle-Pock iteration.

A rule turns ``||K||_2`` (or a certified upper bound of it) into per-layer
steps ``sigma_l, tau_l, theta_l`` with ``sigma_l tau_l ||K||^2 < 1``.  Steps
that depend on ``K`` are part of the map being differentiated: a rule records
the powers ``sigma_l ∝ ||K||^-a``, ``tau_l ∝ ||K||^-b`` and
:func:`add_step_rule_grad` adds their share of the gradient
(``docs/math.md``, sections 4 and 5).

Rules
-----
:class:`ScaledSteps`
    ``sigma = tau = 0.99 / ||K||``, the default of the dense model.
:class:`FixedSteps`
    Constants given by the user (``sigma tau ||K||^2 < 1`` checked).
:class:`AcceleratedSteps`
    Chambolle and Pock (2011, Algorithm 2) for the 1-strongly convex
    ``G = ||.||^2 / 2``: ``theta_l = 1 / sqrt(1 + 2 tau_l)``,
    ``tau_{l+1} = theta_l tau_l``, ``sigma_l tau_l ||K||^2 = 0.99^2``.  The
    primal step ``tau_0`` is fixed (the primal variable lives in image units),
    so only the dual steps depend on ``K`` (``sigma_l ∝ ||K||^-2``).

Measured (``python benchmarks/bench_steps.py``: a 192x192 crop of
``camera``, noise 25/255, the anisotropic-TV operator with its weight tuned
per rule and per L; every rule costs the same per layer), PSNR in dB:

===  ==============  ===================  =====================
L    sigma = tau     best constant tau    accelerated, tau_0=0.1
===  ==============  ===================  =====================
10   26.18           27.86 (tau = 0.2)    27.89
20   27.05           27.92 (tau = 0.02)   27.94
30   27.43           27.94 (tau = 0.02)   27.94
100  27.88           27.93 (tau = 0.02)   27.93
===  ==============  ===================  =====================

The ratio ``sigma / tau`` is what matters at small L; acceleration adds
0.00-0.03 dB over the best constant ratio and needs no search over it, hence
the rule of the image denoiser.  (To reach the exact minimiser to many
digits, thousands of layers, the plain rule is faster:
``tests/test_image.py`` compares both.)
"""

import numbers
from dataclasses import dataclass

import numpy as np

#: Step factor ``c``: ``sigma tau ||K||^2 = c^2 < 1`` with a margin that
#: survives rounding of the norm.
STEP_FACTOR = 0.99

#: Default initial primal step ``tau_0`` of :class:`AcceleratedSteps`.
TAU0 = 0.1


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


def _product_is_finite(a, b, dtype):
    """Whether ``a * b`` is finite in ``dtype``."""
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.dtype(dtype).type(np.float64(a) * b)))


def _check_norm(norm, rule):
    if not np.isfinite(norm):
        raise ValueError(f"||K||_2 overflows: K must be finite, got norm {norm}.")
    if norm == 0.0:
        raise ValueError(f"The step rule {rule} needs a non-zero K.")


@dataclass(frozen=True)
class ScaledSteps:
    """``sigma = tau = factor / ||K||``, differentiated through."""

    factor: float = STEP_FACTOR

    def schedule(self, norm, n_layers, dtype):
        _check_norm(norm, "sigma = tau = c / ||K||")
        step = self.factor / norm
        # The kernels multiply by sigma * tau: if that overflows the working
        # dtype the iterates and gradients turn to nan.
        if not _product_is_finite(step, step, dtype):
            raise ValueError(
                f"||K||_2 = {norm:.3g} is too small for the default step rule "
                f"sigma = tau = c / ||K|| in {np.dtype(dtype)}: sigma * tau "
                "overflows; use a non-zero K of a larger scale."
            )
        return constant_steps(step, step, n_layers, power=1.0)


@dataclass(frozen=True)
class FixedSteps:
    """Constant ``sigma``, ``tau`` given by the user; ``K`` must fit them."""

    sigma: float
    tau: float

    def __post_init__(self):
        for name in ("sigma", "tau"):
            value = getattr(self, name)
            if not (
                isinstance(value, numbers.Real) and value > 0 and np.isfinite(value)
            ):
                raise ValueError(
                    f"{name} must be a positive finite number, got {value!r}."
                )

    def schedule(self, norm, n_layers, dtype):
        if not np.isfinite(norm):
            raise ValueError(f"||K||_2 overflows: K must be finite, got norm {norm}.")
        if not _product_is_finite(self.sigma, self.tau, dtype):
            raise ValueError(f"sigma * tau overflows {np.dtype(dtype)}.")
        if self.sigma * self.tau * norm**2 >= 1.0:
            raise ValueError(
                f"Chambolle-Pock needs sigma * tau * ||K||^2 < 1; got "
                f"{self.sigma * self.tau * norm**2:.4g} with ||K||_2 = {norm:.4g}."
            )
        return constant_steps(float(self.sigma), float(self.tau), n_layers)


@dataclass(frozen=True)
class AcceleratedSteps:
    """Chambolle-Pock Algorithm 2 for a 1-strongly convex ``G``, from ``tau0``."""

    tau0: float = TAU0
    factor: float = STEP_FACTOR

    def schedule(self, norm, n_layers, dtype):
        _check_norm(norm, "of Chambolle-Pock's Algorithm 2")
        tau = np.empty(n_layers)
        theta = np.empty(n_layers)
        t = float(self.tau0)
        for l in range(n_layers):
            tau[l] = t
            theta[l] = 1.0 / np.sqrt(1.0 + 2.0 * t)
            t *= theta[l]
        sigma = self.factor**2 / (tau * norm**2)
        if not _product_is_finite(sigma[-1], tau[-1], dtype):
            raise ValueError(
                f"||K||_2 = {norm:.3g} is too small for {np.dtype(dtype)}."
            )
        return StepSchedule(sigma, tau, theta, sigma_power=2.0, tau_power=0.0)


def step_rule(sigma=None, tau=None):
    """The rule of the public functions' ``sigma``, ``tau`` arguments."""
    if sigma is None and tau is None:
        return ScaledSteps()
    if sigma is None or tau is None:
        raise ValueError("Give both sigma and tau, or neither (default step rule).")
    return FixedSteps(sigma, tau)


def add_step_rule_grad(grad, steps, norm, norm_grad, sigma_sens, tau_sens):
    """Add to ``grad`` the share of ``K`` that reaches the loss through the steps.

    ``sigma_l ∝ ||K||^-a`` and ``tau_l ∝ ||K||^-b`` (the powers of
    ``steps``), so ``d loss / d||K|| = -(a sigma_sens + b tau_sens) / ||K||``,
    where ``sigma_sens = sum_l sigma_l d loss / d sigma_l`` (and likewise
    ``tau_sens``) come out of the backward pass.
    """
    if steps.sigma_power or steps.tau_power:
        dnorm = -(steps.sigma_power * sigma_sens + steps.tau_power * tau_sens) / norm
        grad += (dnorm * norm_grad).astype(grad.dtype)
