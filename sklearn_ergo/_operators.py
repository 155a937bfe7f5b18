"""Linear analysis operators as seen by the unrolled solver.

The solver stores samples as rows (``X`` has shape ``(n_samples, n_primal)``)
and only needs four things from an operator built on the weights ``K``:
``apply`` (``x -> K x``), ``adjoint`` (``y -> K^T y``), ``weight_grad``
(the gradient with respect to ``K`` of ``<Y, apply(X)>``) and its spectral
norm with that norm's gradient.  A dense ``K`` is the case of section 2 of the
maths notes; a convolutional operator (the same ``K`` at every patch position)
implements the same four methods, so one forward/backward pass serves both.
"""

import numpy as np


class DenseOperator:
    """``K`` of shape ``(m, n)`` acting on row-stacked samples ``X @ K.T``.

    Parameters
    ----------
    weights : ndarray of shape (n_components, n_features)
        The analysis operator ``K``.
    """

    def __init__(self, weights):
        self.weights = weights
        self.n_dual, self.n_primal = weights.shape

    def apply(self, X, out=None):
        """Return ``K x`` for every row ``x`` of ``X``, shape ``(N, m)``."""
        return np.matmul(X, self.weights.T, out=out)

    def adjoint(self, Y, out=None):
        """Return ``K^T y`` for every row ``y`` of ``Y``, shape ``(N, n)``."""
        return np.matmul(Y, self.weights, out=out)

    def weight_grad(self, Y, X):
        """Gradient of ``sum_i <Y_i, K X_i>`` with respect to ``K``: ``Y^T X``."""
        return Y.T @ X

    def norm_and_grad(self):
        """Spectral norm ``||K||_2`` and its gradient ``u v^T`` (top singular pair).

        The gradient exists where the top singular value is simple, which is
        the generic case; at a tie any element of the subdifferential is
        returned.
        """
        # SVD in float64: the step sizes derived from the norm must satisfy
        # sigma * tau * ||K||^2 < 1 to the last bit, whatever the working dtype.
        u, s, vt = np.linalg.svd(self.weights.astype(np.float64, copy=False))
        return float(s[0]), np.outer(u[:, 0], vt[0])
