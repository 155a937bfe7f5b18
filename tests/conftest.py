import numpy as np
import pytest


@pytest.fixture
def pairs():
    """Small piecewise-constant 1-D signals (TV's home ground) with noise."""
    rng = np.random.default_rng(0)
    X_clean = np.repeat(rng.uniform(size=(120, 4)), 3, axis=1)
    X_noisy = X_clean + 0.1 * rng.standard_normal(X_clean.shape)
    return X_noisy, X_clean


def directional_fd(f, x, direction, h=1e-6):
    """Central difference ``(f(x + h d) - f(x - h d)) / 2h`` of a scalar ``f``."""
    return (f(x + h * direction) - f(x - h * direction)) / (2 * h)


def fd_relative_error(f, x, grad, rng, h=1e-6):
    """Relative error of ``<grad, d>`` against :func:`directional_fd` along a
    random direction ``d`` (float64): the one finite-difference check of the
    suite's gradient tests."""
    d = rng.standard_normal(np.shape(x))
    fd = directional_fd(f, x, d, h)
    return abs(fd - np.vdot(grad, d)) / abs(fd)


def fd_gradient(f, x, h=1e-6):
    """The whole gradient of a scalar ``f`` at ``x`` by central differences."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = 1.0
        grad[idx] = directional_fd(f, x, e, h)
    return grad
