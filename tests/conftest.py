import numpy as np
import pytest


@pytest.fixture
def pairs():
    """Small piecewise-constant 1-D signals (TV's home ground) with noise."""
    rng = np.random.default_rng(0)
    X_clean = np.repeat(rng.uniform(size=(120, 4)), 3, axis=1)
    X_noisy = X_clean + 0.1 * rng.standard_normal(X_clean.shape)
    return X_noisy, X_clean
