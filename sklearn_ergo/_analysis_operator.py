"""``AnalysisOperatorLearner``: learn an analysis operator from (noisy, clean) pairs."""

import time
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    OneToOneFeatureMixin,
    RegressorMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array, check_random_state, gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._init import finite_difference_operator, zero_mean_random_rows
from ._operators import DenseOperator
from ._optim import Adam, BestTracker, StopKeepingBest, lbfgs, search_log_scale
from ._unrolled import dense_map

# Samples used to tune the scalar weight of the initial operator: enough for
# a stable estimate, few enough to keep the 1-D search a small part of a fit.
_MAX_TUNING_SAMPLES = 2000
# Rows per block of the monitored loss (its output is held one block at a
# time): 8 MiB of float64 8x8 patches.
_LOSS_BLOCK = 16384


def _rms(X):
    """Root mean square of ``X``, free of overflow and underflow."""
    peak = float(np.max(np.abs(X)))
    if peak == 0.0:
        return 0.0
    return peak * float(np.sqrt(np.mean(np.square(X / peak), dtype=np.float64)))


def _norm_bounds(dtype):
    """Range of ``||K||_2`` the fit accepts: on data of unit RMS, neither the
    steps ``c / ||K||`` nor ``K x`` come near overflow in ``dtype``."""
    bound = float(np.sqrt(np.finfo(dtype).max))
    return 1.0 / bound, bound


def _is_usable(K):
    """Whether ``K`` is finite with a norm within :func:`_norm_bounds`."""
    if not np.all(np.isfinite(K)):
        return False
    low, high = _norm_bounds(K.dtype)
    return low <= DenseOperator(K).norm_and_grad()[0] <= high


def _add(K, update):
    """``K + update`` in the dtype of ``K`` (overflow gives inf, checked later)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return K + update.astype(K.dtype)


class AnalysisOperatorLearner(
    OneToOneFeatureMixin, TransformerMixin, RegressorMixin, BaseEstimator
):
    r"""Learn an analysis operator ``K`` for denoising by unrolled Chambolle-Pock.

    The denoiser is the variational model

    .. math::

        \hat x(\tilde x) \approx \operatorname{argmin}_x \ \|K x\|_1
            + \tfrac12 \|x - \tilde x\|^2

    (or the Huber-smoothed penalty), approximated by ``n_layers`` Chambolle-Pock
    iterations whose last iterate (``unroll="last"``) or ergodic average
    (``unroll="ergodic"``) is the output.  ``fit`` minimises the mean squared
    error ``(1/N) sum_i ||x^(x~_i) - x_i||^2 / 2`` over ``K`` with the exact
    gradient of the unrolled map, and ``predict`` applies exactly that map.

    The steps are ``sigma = tau = 0.99 / ||K||_2`` (so ``sigma tau ||K||^2 < 1``
    always holds) and are differentiated through.  Inputs are divided by
    ``scale_`` (their root mean square at fit time) before the solver runs and
    outputs multiplied back, so the estimator is equivariant to the scale of
    the data and ``components_`` acts on ``X / scale_``.

    Parameters
    ----------
    n_components : int, default=None
        Number ``m`` of rows of ``K``.  ``None``: as many as the initial
        operator has: for ``init="tv"`` the finite differences of a square
        patch (``2 p (p - 1)``, i.e. 112 for 8x8 patches; ``n - 1`` for
        non-square ``n_features``); for ``init="random"`` ``n_features``.
        With ``init="tv"``, extra rows start zero-mean and tiny, and fewer
        rows keep a random subset of the differences.
    n_layers : int, default=20
        Number ``L`` of unrolled iterations, used by ``fit`` and ``predict``.
        Measured on 2e4 8x8 patches (``benchmarks/choose_defaults.py``, 20
        L-BFGS iterations, PSNR on patches of another image): L = 10, 20, 50
        reach 27.28, 28.05, 28.43 dB in 15, 24, 66 s on 2 cores; L = 20 is the
        middle ground.  The cost grows linearly with L.
        Unused by ``unroll="implicit"``, which solves the lower level to
        convergence.
    unroll : {"last", "ergodic", "implicit"}, default="last"
        Output the last iterate ``r^[L]`` or the ergodic average
        ``sum_l alpha_l r^[l]``.  Measured on natural-image patches, operators
        trained with ``"last"`` denoise better at equal L (by 0.97, 0.96,
        0.37 dB at L = 10, 20, 50 in ``benchmarks/choose_defaults.py``; see
        also the study in ``docs/ergodic.md``), hence the default.  ``"implicit"``
        (``penalty="huber"`` only) uses the exact minimiser of the lower-level
        problem and the true bilevel gradient, by implicit differentiation.
    ergodic_weights : {"uniform", "linear"} or array-like, default="uniform"
        Weights ``alpha_l`` of the ergodic average: ``1 / L``, ``∝ l``, or an
        explicit non-negative array of length ``n_layers``.
    penalty : {"l1", "huber"}, default="l1"
        ``F = ||.||_1`` or its Huber smoothing with parameter ``huber_eps``.
    huber_eps : float, default=0.01
        Huber parameter (in the units of ``K x`` for normalised ``x``).
    init : {"tv", "random"} or array-like, default="tv"
        Initial ``K``.  ``"tv"``: finite differences (anisotropic total
        variation of the patch), ``"random"``: zero-mean random rows.  The
        scalar weight of either is tuned on the training data (a 1-D search of
        the unrolled loss), so training starts from the best operator of that
        shape.  An array of shape ``(n_components, n_features)`` is used as
        given (for ``X / scale_``).
    solver : {"lbfgs", "adam"}, default="lbfgs"
        Full-batch L-BFGS (scipy) or mini-batch Adam.  L-BFGS reaches the gains
        of Adam's hundreds of epochs in a few dozen iterations on ~10^4 patches.
    max_iter : int, default=30
        Maximum L-BFGS iterations, or Adam epochs.
    tol : float, default=1e-4
        Training stops when the monitored loss has not improved by more than
        ``tol`` times its best value for ``n_iter_no_change`` consecutive
        iterations.
    n_iter_no_change : int, default=5
        See ``tol``.
    batch_size : int, default=256
        Adam's mini-batch size.
    learning_rate_init : float, default=1e-3
        Adam's learning rate.  A step that makes ``K`` non-finite is redone
        with half the rate (see Notes).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the pairs, monitor their loss
        instead of the training loss and keep the best operator on them.
    validation_fraction : float, default=0.1
        Fraction of the pairs held out for ``early_stopping``.
    n_jobs : int, default=None
        Number of joblib workers for the per-sample work in ``fit`` and
        ``predict``.  ``None``: every core, in threads, unless a
        ``joblib.parallel_config`` (e.g. a dask backend) says otherwise.
        Results do not depend on it beyond float rounding.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial operator, the tuning subsample, the validation split
        and Adam's shuffling.
    verbose : int, default=0
        Print the loss at every iteration.
    warm_start : bool, default=False
        Start from the ``components_`` of the previous fit (on data with as
        many features, and divided by the new data's ``scale_``).

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The learned analysis operator ``K`` (acting on ``X / scale_``).
    scale_ : float
        Root mean square of the noisy training inputs (1 if they are all
        zero, or too small to be a normal number of their dtype).
    init_weight_ : float or None
        The tuned weight of the ``"tv"``/``"random"`` initial operator.
    loss_curve_ : list of float
        Training loss (on normalised data) at every iteration; entry 0 is the
        initial operator's.
    validation_scores_ : list of float or None
        Validation loss at every iteration with ``early_stopping``.
    best_loss_ : float
        Best monitored loss (validation loss with ``early_stopping``).
    n_iter_ : int
        Iterations (L-BFGS) or epochs (Adam) run.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when ``X`` has string feature names.

    Notes
    -----
    **Scale, regularisation and noise.**  The variational model is
    homogeneous: scaling ``x~`` and ``x`` by ``s`` scales the minimiser for
    ``s K`` by ``s``, so with ``F = ||.||_1`` the size of ``K`` is the
    regularisation weight in the units of the data and must grow with the
    noise level.  The unrolled map with steps ``c / ||K||`` is not
    homogeneous, hence the internal normalisation: ``components_`` is
    dimensionless, its size is the weight relative to the RMS of the noisy
    signals, and it grows with the noise-to-signal ratio.  Fitting on
    ``s X, s y`` gives the same ``components_`` up to rounding and ``s``
    times the predictions, for ``s`` from 1e-300 to 1e300.  ``predict`` uses
    the ``scale_`` of the training data, i.e. the noise level in its units:
    for data whose signal and noise are both ``s`` times larger, predict on
    ``X / s`` and multiply by ``s``.

    **Faults.**  ``fit`` keeps the operator with the lowest monitored loss seen
    so far (for L-BFGS the last iterate; for Adam this undoes a late
    divergence).  A ``KeyboardInterrupt`` during training stops the fit with a
    ``UserWarning`` and keeps that operator, so the estimator is usable.  A
    non-finite loss or gradient stops the fit the same way with a
    ``ConvergenceWarning``.  An Adam step that makes ``K`` non-finite, or its
    norm leave ``[sqrt(max)^-1, sqrt(max)]`` of the dtype, is redone with half
    the learning rate (``ConvergenceWarning`` once).  ``components_``,
    ``scale_`` and ``init_weight_`` are set together at the end, so a fit
    that raises never leaves a new ``scale_`` with old ``components_``, and
    ``components_`` is never non-finite.

    See Also
    --------
    sklearn_ergo.unrolled_loss_grad : the loss and gradient ``fit`` minimises.

    References
    ----------
    A. Chambolle and T. Pock, "A first-order primal-dual algorithm for convex
    problems with applications to imaging", J. Math. Imaging Vis., 2011.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ergo import AnalysisOperatorLearner
    >>> rng = np.random.default_rng(0)
    >>> X_clean = np.repeat(rng.uniform(size=(200, 4)), 3, axis=1)  # flat runs
    >>> X_noisy = X_clean + 0.1 * rng.standard_normal(X_clean.shape)
    >>> est = AnalysisOperatorLearner(n_layers=10, max_iter=10, random_state=0)
    >>> est.fit(X_noisy, X_clean).components_.shape
    (11, 12)
    >>> bool(est.score(X_noisy, X_clean) > 0.5)
    True
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "unroll": [StrOptions({"last", "ergodic", "implicit"})],
        "ergodic_weights": [StrOptions({"uniform", "linear"}), "array-like"],
        "penalty": [StrOptions({"l1", "huber"})],
        "huber_eps": [Interval(Real, 0, None, closed="neither")],
        "init": [StrOptions({"tv", "random"}), "array-like"],
        "solver": [StrOptions({"lbfgs", "adam"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
    }

    def __init__(
        self,
        n_components=None,
        *,
        n_layers=20,
        unroll="last",
        ergodic_weights="uniform",
        penalty="l1",
        huber_eps=0.01,
        init="tv",
        solver="lbfgs",
        max_iter=30,
        tol=1e-4,
        n_iter_no_change=5,
        batch_size=256,
        learning_rate_init=1e-3,
        early_stopping=False,
        validation_fraction=0.1,
        n_jobs=None,
        random_state=None,
        verbose=0,
        warm_start=False,
    ):
        self.n_components = n_components
        self.n_layers = n_layers
        self.unroll = unroll
        self.ergodic_weights = ergodic_weights
        self.penalty = penalty
        self.huber_eps = huber_eps
        self.init = init
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.single_output = False
        tags.target_tags.multi_output = True
        return tags

    def __sklearn_is_fitted__(self):
        # Not any attribute ending in "_": a fit that failed part-way (after
        # validate_data set n_features_in_) leaves no usable model.
        return hasattr(self, "components_")

    # -- the map -----------------------------------------------------------
    def _map(self):
        return dense_map(
            self.n_layers,
            self.unroll,
            self.ergodic_weights,
            self.penalty,
            self.huber_eps,
            None,
            None,
        )

    def _loss_grad(self, umap, K, X, Y):
        loss, grads = umap.loss_grad({"K": K}, X, Y, n_jobs=self.n_jobs)
        if not (np.isfinite(loss) and np.all(np.isfinite(grads["K"]))):
            raise FloatingPointError("non-finite loss or gradient")
        return loss, grads["K"]

    def _loss(self, umap, K, X, Y):
        # In blocks of rows: the output of the whole batch at once would be one
        # more copy of the data.
        total = 0.0
        for start in range(0, len(X), _LOSS_BLOCK):
            rows = slice(start, start + _LOSS_BLOCK)
            residual = umap.apply({"K": K}, X[rows], n_jobs=self.n_jobs)
            residual -= Y[rows]
            total += float(np.vdot(residual, residual))
        return 0.5 * total / len(X)

    # -- fit ---------------------------------------------------------------
    def _validate_pairs(self, X, y, reset):
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is "
                "None: pass the clean signals, an array of the same shape as X."
            )
        X, y = validate_data(
            self,
            X,
            y,
            reset=reset,
            multi_output=True,
            y_numeric=True,
            dtype=[np.float64, np.float32],
        )
        if X.shape[0] < 2:
            raise ValueError(
                f"At least 2 samples are needed to fit, got n_samples={X.shape[0]}."
            )
        if y.shape != X.shape:
            raise ValueError(
                f"y must have the same shape as X (clean signals for noisy ones); "
                f"got X of shape {X.shape} and y of shape {y.shape}."
            )
        return X, y.astype(X.dtype, copy=False)

    def _initial_operator(self, umap, X, Y, rng):
        """``(K, weight)``: the start of learning and the tuned weight, if any."""
        n_features = X.shape[1]
        if self.warm_start and hasattr(self, "components_"):
            if self.components_.shape[1] != n_features:
                raise ValueError(
                    f"warm_start: components_ has {self.components_.shape[1]} "
                    f"features but X has {n_features}."
                )
            return self.components_.astype(X.dtype), None
        if not isinstance(self.init, str):
            K = check_array(
                self.init, dtype=X.dtype, ensure_all_finite=False, input_name="init"
            )
            m = self.n_components or K.shape[0]
            if K.shape != (m, n_features):
                raise ValueError(
                    f"init has shape {K.shape}; expected ({m}, {n_features}) = "
                    "(n_components, n_features)."
                )
            if not _is_usable(K):
                low, high = _norm_bounds(K.dtype)
                raise ValueError(
                    "init must be finite and not all zero, with a spectral norm "
                    f"between {low:.2g} and {high:.2g} in {K.dtype} (it acts on "
                    "X / scale_, of unit root mean square)."
                )
            return K, None
        D = _initial_rows(self.init, self.n_components, n_features, rng)
        D = D.astype(X.dtype)
        if len(X) > _MAX_TUNING_SAMPLES:
            idx = rng.choice(len(X), _MAX_TUNING_SAMPLES, replace=False)
            X, Y = X[idx], Y[idx]
        # The optimal weight scales like the noise level (in the data units)
        # divided by the typical norm of a row applied to a signal.
        noise = float(np.sqrt(np.mean((X - Y) ** 2))) or 1e-3
        gain = float(np.sqrt(np.mean(D**2) * D.shape[1])) or 1.0
        center = np.log(noise / gain)
        # Keep the search, margins included, inside the usable norms: y far
        # larger (or smaller) than X would otherwise tune the weight past them.
        low, high = np.log(_norm_bounds(D.dtype)) - np.log(np.linalg.norm(D, 2))
        center = float(np.clip(center, low + 6.0, high - 4.0))
        t = search_log_scale(
            lambda t: self._loss(umap, np.exp(t) * D, X, Y), center, 5.0, 3.0
        )
        weight = float(np.exp(t))
        return (weight * D).astype(X.dtype), weight

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Learn ``K`` from noisy signals ``X`` and clean signals ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Noisy signals.
        y : array-like of shape (n_samples, n_features)
            Clean signals.

        Returns
        -------
        self : AnalysisOperatorLearner
        """
        # A warm start keeps n_features_in_, so that data of another width is
        # refused before the fitted model is touched.
        warm = self.warm_start and hasattr(self, "components_")
        X, y = self._validate_pairs(X, y, reset=not warm)
        rng = check_random_state(self.random_state)
        umap = self._map()
        X, y, scale = _normalise(X, y)
        validation = None
        if self.early_stopping:
            X, y, validation = _hold_out(X, y, self.validation_fraction, rng)
        K, init_weight = self._initial_operator(umap, X, y, rng)
        # The solvers keep K usable from here on, and Adam's step halving
        # relies on it to end.  (Only a warm start can fail this: init arrays
        # are checked and the tuned weight is kept in range.)
        if not _is_usable(K):
            low, high = _norm_bounds(K.dtype)
            raise ValueError(
                f"The initial operator has a spectral norm outside [{low:.2g}, "
                f"{high:.2g}], the range in which {K.dtype} computations stay "
                "finite (warm_start from an operator fitted in float64?). Use "
                "float64 data."
            )
        self.loss_curve_, self.n_iter_ = [], 0
        self.validation_scores_ = [] if self.early_stopping else None
        tracker = BestTracker(self.tol, self.n_iter_no_change)
        record = self._recorder(umap, tracker, validation)
        solve = self._fit_lbfgs if self.solver == "lbfgs" else self._fit_adam
        converged = False
        with StopKeepingBest(lambda: f"after {self.n_iter_} iterations") as guard:
            record(K, self._loss(umap, K, X, y))
            K, converged = solve(umap, K, X, y, rng, record)
        # The best operator seen: the last one for L-BFGS (whose line search
        # only accepts decreases); for Adam it undoes a late divergence; after
        # a fault or an interruption it is the progress made so far.  Nothing
        # is recorded only if interrupted at once: K is then the start.
        if tracker.best_params is not None:
            K = tracker.best_params
        # All fitted attributes change together, so a failed fit never pairs
        # a new scale_ with old components_.
        self.components_, self.scale_, self.init_weight_ = K, scale, init_weight
        self.best_loss_ = tracker.best_loss
        if not (converged or guard.stopped):
            warnings.warn(
                f"{self.solver} stopped at max_iter={self.max_iter} before the loss "
                "settled; increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _recorder(self, umap, tracker, validation):
        """``record(K, loss)``: log one iteration; True when training should stop."""
        start = time.perf_counter()

        def record(K, loss):
            self.loss_curve_.append(loss)
            monitored = loss
            if validation is not None:
                monitored = self._loss(umap, K, *validation)
                self.validation_scores_.append(monitored)
            if self.verbose:
                val = (
                    f", validation loss = {monitored:.6g}"
                    if validation is not None
                    else ""
                )
                print(
                    f"Iteration {len(self.loss_curve_) - 1}, loss = {loss:.6g}{val}"
                    f" ({time.perf_counter() - start:.1f} s)"
                )
            return tracker.update(monitored, K)

        return record

    def _fit_lbfgs(self, umap, K0, X, Y, rng, record):
        shape, dtype = K0.shape, K0.dtype

        def fun(k):
            with np.errstate(over="ignore"):
                K = k.reshape(shape).astype(dtype)
            # scipy's line search takes an infinite value for convergence
            # rather than backtracking, so a bad trial point ends the fit
            # (keeping the best iterate) instead of passing silently.
            if not _is_usable(K):
                raise FloatingPointError(
                    "the line search tried an operator that is not finite or "
                    "whose norm is out of range"
                )
            loss, grad = self._loss_grad(umap, K, X, Y)
            return loss, grad.ravel().astype(np.float64)

        stop = []

        def callback(intermediate_result):
            self.n_iter_ += 1
            K = intermediate_result.x.reshape(shape).astype(dtype)
            if record(K, float(intermediate_result.fun)):
                stop.append(True)
                raise StopIteration

        result = lbfgs(fun, K0.ravel().astype(np.float64), self.max_iter, callback)
        # A line search that cannot improve any more has converged too.
        converged = bool(stop) or self.n_iter_ < self.max_iter
        return result.x.reshape(shape).astype(dtype), converged

    def _fit_adam(self, umap, K, X, Y, rng, record):
        optimizer = Adam(K.shape, self.learning_rate_init)
        batch_size = min(self.batch_size, len(X))
        warned = False
        for _ in range(self.max_iter):
            perm = rng.permutation(len(X))
            epoch_loss = 0.0
            for batch in gen_batches(len(X), batch_size):
                idx = perm[batch]
                loss, grad = self._loss_grad(umap, K, X[idx], Y[idx])
                candidate = _add(K, optimizer.step(grad))
                # A step that leaves K unusable is redone at half the learning
                # rate.  The direction is finite (finite gradients), so the
                # update shrinks to 0 and the loop ends at worst at the usable K.
                while not _is_usable(candidate):
                    candidate = _add(K, optimizer.retry(0.5))
                    if not warned:
                        warned = True
                        warnings.warn(
                            "an Adam step made the operator non-finite or its "
                            "norm out of range; it was redone with half the "
                            "learning rate. Lower learning_rate_init (now "
                            f"{self.learning_rate_init:g}).",
                            ConvergenceWarning,
                            stacklevel=3,
                        )
                K = candidate
                epoch_loss += loss * len(idx)
            self.n_iter_ += 1
            if record(K, epoch_loss / len(X)):
                return K, True
        return K, False

    # -- predict -----------------------------------------------------------
    def predict(self, X):
        """Denoise ``X`` with the learned operator (the map ``fit`` optimised).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Noisy signals.

        Returns
        -------
        X_hat : ndarray of shape (n_samples, n_features)
            Denoised signals, in the dtype of ``X`` (float32 or float64).
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        K = self.components_.astype(X.dtype, copy=False)
        scale = X.dtype.type(self.scale_)
        X_hat = self._map().apply({"K": K}, X / scale, n_jobs=self.n_jobs)
        return X_hat * scale

    def transform(self, X):
        """:meth:`predict`, so that the denoiser is a step of a ``Pipeline``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        X_hat : ndarray of shape (n_samples, n_features)
        """
        return self.predict(X)


def _initial_rows(init, n_components, n_features, rng):
    """The rows of an ``init="tv"`` or ``"random"`` operator, before weighting."""
    if init == "tv":
        if n_features < 2:
            raise ValueError(
                "init='tv' needs at least 2 features (finite differences); "
                "got 1 feature(s). Use init='random'."
            )
        D = finite_difference_operator(n_features)
        m = n_components or len(D)
        if m < len(D):
            return D[np.sort(rng.choice(len(D), m, replace=False))]
        if m > len(D):
            extra = zero_mean_random_rows(m - len(D), n_features, 1e-3, rng)
            return np.vstack([D, extra])
        return D
    m = n_components or n_features
    if n_features > 1:
        return zero_mean_random_rows(m, n_features, 1.0, rng)
    return rng.standard_normal((m, 1))


def _normalise(X, y):
    """``X / scale``, ``y / scale`` and ``scale``, the RMS of ``X``."""
    scale = _rms(X)
    if not scale >= np.finfo(X.dtype).tiny:  # zero, or subnormal: as zero
        scale = 1.0
    with np.errstate(over="ignore"):  # checked just below
        X, y = X / X.dtype.type(scale), y / X.dtype.type(scale)
        residual = X - y
        error = np.vdot(residual, residual)
    if not np.isfinite(error):
        raise ValueError(
            f"y is too large for X: after dividing both by the root mean square "
            f"of X ({scale:.3g}) their squared difference overflows {X.dtype}."
        )
    return X, y, scale


def _hold_out(X, y, fraction, rng):
    """Training pairs and a random held-out ``(X_val, y_val)`` for early stopping."""
    n_val = max(1, int(round(fraction * len(X))))
    if n_val >= len(X):
        raise ValueError(
            f"validation_fraction={fraction} leaves no training samples out of "
            f"{len(X)}."
        )
    perm = rng.permutation(len(X))
    return X[perm[n_val:]], y[perm[n_val:]], (X[perm[:n_val]], y[perm[:n_val]])
