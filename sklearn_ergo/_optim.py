"""Upper-level optimisers: full-batch L-BFGS and mini-batch Adam.

Both keep the best iterate seen (by training loss, or by validation loss when
a validation set is given), so that an interruption, a divergent step or
over-fitting never costs the progress already made.
"""

import numpy as np


class Adam:
    """Adam (Kingma & Ba, 2015) on one parameter array; holds ``t, m, v``."""

    def __init__(self, shape, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.learning_rate = learning_rate
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.t = 0
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)

    def step(self, grad):
        """Return the update to add to the parameters."""
        self.t += 1
        self.m = self.beta_1 * self.m + (1 - self.beta_1) * grad
        self.v = self.beta_2 * self.v + (1 - self.beta_2) * grad**2
        return self._update()

    def retry(self, factor=0.5):
        """Scale the learning rate by ``factor``; return the last update redone.

        The moments are kept (they hold gradients, which were fine), so a step
        rejected for leaving the parameters unusable is redone shorter.
        """
        self.learning_rate *= factor
        return self._update()

    def _update(self):
        lr = (
            self.learning_rate
            * np.sqrt(1 - self.beta_2**self.t)
            / (1 - self.beta_1**self.t)
        )
        # The direction is bounded for finite gradients; multiplying it last
        # keeps a huge learning rate from overflowing lr * m first.
        return -lr * (self.m / (np.sqrt(self.v) + self.epsilon))


class BestTracker:
    """Keeps the best parameters, and decides when progress has stalled.

    Progress stalls when the monitored loss has not improved on the best one
    by more than ``tol * |best|`` (a relative tolerance, so that stopping does
    not depend on the scale of the data) for ``n_iter_no_change``
    consecutive iterations.
    """

    def __init__(self, tol, n_iter_no_change):
        self.tol, self.n_iter_no_change = tol, n_iter_no_change
        self.best_loss, self.best_params, self.n_stalled = np.inf, None, 0

    def update(self, loss, params):
        """Record ``loss`` at ``params``; return True when progress has stalled."""
        if not np.isfinite(loss):
            return False
        if self.best_params is None or loss < self.best_loss - self.tol * abs(
            self.best_loss
        ):
            self.n_stalled = 0
        else:
            self.n_stalled += 1
        if loss < self.best_loss:
            self.best_loss, self.best_params = loss, np.array(params, copy=True)
        return self.n_stalled >= self.n_iter_no_change
