"""Upper-level optimisation: the pieces both estimators train with.

- :class:`Adam` (mini-batch) and :func:`lbfgs` (full batch, scipy);
- :class:`BestTracker`: keeps the best iterate seen and decides when
  progress has stalled, so that an interruption, a divergent step or
  over-fitting never costs the progress already made;
- :class:`StopKeepingBest`: a ``KeyboardInterrupt`` or a numerical fault
  ends training with a warning instead of an exception;
- :func:`search_log_scale`: the 1-D search of the weight of an initial
  operator;
- :class:`ParameterVector`: a model's parameter arrays as one vector on
  which the optimisers' steps are relative.
"""

import json
import math
import warnings

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from sklearn.exceptions import ConvergenceWarning


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

    def __init__(self, tol=0.0, n_iter_no_change=np.inf):
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


class StopKeepingBest:
    """Context in which an interruption or a numerical fault stops training.

    A ``KeyboardInterrupt`` (``UserWarning``) or a ``FloatingPointError``
    (``ConvergenceWarning``) raised inside ends the block with a warning
    and sets ``stopped``; the caller then keeps the best iterate it tracked.
    ``progress()`` describes how far training got (e.g. "after 3
    iterations"), for the warning.
    """

    def __init__(self, progress):
        self.progress = progress
        self.stopped = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is KeyboardInterrupt:
            message = (
                "fit was interrupted; keeping the best operator found so far "
                f"({self.progress()})."
            )
            category = UserWarning
        elif exc_type is FloatingPointError:
            message = (
                f"fit stopped {self.progress()}: {exc}; keeping the best "
                "operator found so far."
            )
            category = ConvergenceWarning
        else:
            return False
        self.stopped = True
        warnings.warn(message, category, stacklevel=3)
        return True


def lbfgs(fun, x0, max_iter, callback=None):
    """At most ``max_iter`` L-BFGS-B iterations of ``fun`` (value and gradient).

    Stopping is left to ``max_iter`` and ``callback`` (raise
    ``StopIteration`` to stop): L-BFGS-B's absolute ``ftol``/``gtol`` are
    not scale free.  Returns scipy's ``OptimizeResult``.
    """
    return minimize(
        fun,
        x0,
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        options={"maxiter": max_iter, "ftol": 0.0, "gtol": 0.0},
    )


def search_log_scale(loss, center, below, above):
    """The ``t`` in ``[center - below, center + above]`` minimising ``loss(t)``.

    ``t`` is the logarithm of the weight of an initial operator: the loss
    of ``exp(t) D`` is unimodal in practice, and a bounded Brent search to
    ``0.01`` (1 % in the weight) costs about 15 evaluations.
    """
    return minimize_scalar(
        loss,
        bounds=(center - below, center + above),
        method="bounded",
        options={"xatol": 1e-2},
    ).x


class ParameterVector:
    """A dict of parameter arrays as one float64 vector ``u``, each group of order 1.

    Optimisers step every coordinate of ``u`` by a similar amount (L-BFGS-B's
    first trial step has unit length, Adam moves each by about its learning
    rate), so a positive group enters through its logarithm and any other
    divided by its ``scale``: one step is then a relative change of every
    group (``K`` entries of ~0.01-0.1 and ``log eps`` of ~-4..0 alike).
    """

    def __init__(self, shapes, scales):
        self.keys = list(shapes)
        self.shapes = {k: tuple(shapes[k]) for k in self.keys}
        self.scales = dict(scales)  # None: a positive group, through its log

    @classmethod
    def from_params(cls, params, positive, scales=None):
        """Groups named in ``positive`` by log; the others divided by ``scales``
        (default: the root mean square of their values)."""
        scales = dict(scales or {})
        for k in params:
            if k in positive:
                scales[k] = None
            elif k not in scales:
                rms = float(np.sqrt(np.mean(np.square(params[k], dtype=np.float64))))
                scales[k] = rms if rms > 0 else 1.0
        return cls({k: np.shape(params[k]) for k in sorted(params)}, scales)

    def pack(self, params):
        parts = []
        for k in self.keys:
            value = np.asarray(params[k], dtype=np.float64).ravel()
            scale = self.scales[k]
            parts.append(np.log(value) if scale is None else value / scale)
        return np.concatenate(parts)

    def unpack(self, u):
        out, start = {}, 0
        for k in self.keys:
            size = math.prod(self.shapes[k])
            part = u[start : start + size].reshape(self.shapes[k])
            scale = self.scales[k]
            out[k] = np.exp(part) if scale is None else scale * part
            start += size
        return out

    def chain(self, grads, params):
        """``d loss / d u`` from the gradients with respect to ``params``."""
        parts = []
        for k in self.keys:
            g = np.asarray(grads[k], dtype=np.float64).ravel()
            scale = self.scales[k]
            value = np.asarray(params[k], dtype=np.float64).ravel()
            parts.append(g * value if scale is None else g * scale)
        return np.concatenate(parts)

    def to_json(self):
        return json.dumps(
            {"keys": self.keys, "shapes": self.shapes, "scales": self.scales}
        )

    @classmethod
    def from_json(cls, text):
        d = json.loads(text)
        return cls({k: d["shapes"][k] for k in d["keys"]}, d["scales"])
