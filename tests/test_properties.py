"""Property-based tests: any valid input gives a finite result of the right
shape and dtype; any invalid input a ValueError or TypeError naming the problem.

Example counts are small so that the module runs in seconds; hypothesis keeps
the failing examples it finds in its database and replays them first.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.exceptions import ConvergenceWarning

from sklearn_ergo import AnalysisOperatorLearner, unrolled_denoise, unrolled_loss_grad

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DTYPES = st.sampled_from([np.float64, np.float32, np.int64, np.int32])


def values(dtype, bound):
    """Finite entries of ``dtype`` in ``[-bound, bound]`` (any magnitude below)."""
    if np.issubdtype(dtype, np.integer):
        return st.integers(-min(bound, 1000), min(bound, 1000))
    width = 32 if dtype == np.float32 else 64
    return st.floats(-bound, bound, width=width, allow_subnormal=False)


@st.composite
def pair(draw, min_samples=1, bound=1e6):
    """Noisy and clean signals of one shape and dtype, drawn independently."""
    dtype = draw(DTYPES)
    shape = (draw(st.integers(min_samples, 8)), draw(st.integers(1, 6)))
    X = draw(arrays(dtype, shape, elements=values(dtype, bound)))
    Y = draw(arrays(dtype, shape, elements=values(dtype, bound)))
    return X, Y


def computed_dtype(X):
    return np.float32 if X.dtype == np.float32 else np.float64


MODEL = st.fixed_dictionaries(
    {
        "n_layers": st.integers(1, 4),
        "unroll": st.sampled_from(["last", "ergodic", "implicit"]),
        "penalty": st.sampled_from(["l1", "huber"]),
    }
).map(  # the implicit mode needs a smooth penalty
    lambda model: (
        {**model, "penalty": "huber"} if model["unroll"] == "implicit" else model
    )
)


@SETTINGS
@given(pair(), st.data(), MODEL)
def test_unrolled_functions_give_finite_results(XY, data, model):
    X, Y = XY
    m = data.draw(st.integers(1, 6))
    K = data.draw(arrays(np.float64, (m, X.shape[1]), elements=values(np.float64, 1e3)))
    # Any K is used, or refused by the step rule sigma = tau = c / ||K|| of
    # the unrolled modes when sigma * tau overflows the working dtype.
    dtype = computed_dtype(X)
    with np.errstate(over="ignore"):
        norm = np.linalg.norm(K.astype(dtype).astype(np.float64), 2)
        refused = norm == 0 or not np.isfinite(dtype((0.99 / norm) ** 2))
    if refused and model["unroll"] != "implicit":
        with pytest.raises(ValueError, match="non-zero K|too small"):
            unrolled_loss_grad(K, X, Y, **model)
        return
    with warnings.catch_warnings():  # an inexact implicit solve is still finite
        warnings.simplefilter("ignore", ConvergenceWarning)
        loss, grad = unrolled_loss_grad(K, X, Y, **model)
    assert isinstance(loss, float) and np.isfinite(loss)
    assert grad.shape == K.shape and grad.dtype == computed_dtype(X)
    assert np.all(np.isfinite(grad))
    X_hat = unrolled_denoise(K, X, **model)
    assert X_hat.shape == X.shape and X_hat.dtype == computed_dtype(X)
    assert np.all(np.isfinite(X_hat))


@st.composite
def scaled_pair(draw):
    """Signals of any scale the dtype holds (1e-300 to 1e300 for float64)."""
    dtype = draw(DTYPES)
    shape = (draw(st.integers(2, 8)), draw(st.integers(1, 6)))
    A, B = (
        draw(arrays(np.float64, shape, elements=values(np.float64, 1))) for _ in "AB"
    )
    if np.issubdtype(dtype, np.integer):
        return (1000 * A).astype(dtype), (1000 * B).astype(dtype)
    exponent = draw(
        st.integers(-300, 300) if dtype == np.float64 else st.integers(-30, 30)
    )
    return (10.0**exponent * A).astype(dtype), (10.0**exponent * B).astype(dtype)


def ratio(X, Y):
    """Largest clean value over the RMS of the noisy ones (in float64)."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    peak = np.abs(X).max()
    rms = peak * np.sqrt(np.mean((X / peak) ** 2)) if peak else 1.0
    return np.abs(Y).max() / rms


@settings(SETTINGS, max_examples=30)  # a fit per example; implicit ones are slow
@given(
    scaled_pair(),
    st.sampled_from(["lbfgs", "adam"]),
    st.sampled_from(["last", "ergodic", "implicit"]),
)
def test_estimator_gives_finite_results(XY, solver, unroll):
    # The estimator normalises by the RMS of X, so the scale does not matter;
    # it refuses only clean signals so much larger than the noisy ones that
    # the normalised error leaves the dtype's range.
    X, Y = XY
    est = AnalysisOperatorLearner(
        n_layers=2,
        max_iter=2,
        unroll=unroll,
        penalty="huber" if unroll == "implicit" else "l1",
        solver=solver,
        batch_size=4,
        init="random" if X.shape[1] == 1 else "tv",
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            est.fit(X, Y)
        except ValueError as exc:
            assert "y is too large for X" in str(exc)
            assert ratio(X, Y) > np.sqrt(np.finfo(computed_dtype(X)).max) / 1e3
            return
    assert np.all(np.isfinite(est.components_)) and np.isfinite(est.scale_)
    X_hat = est.predict(X)
    assert X_hat.shape == X.shape and X_hat.dtype == computed_dtype(X)
    assert np.all(np.isfinite(X_hat))


# -- invalid input -------------------------------------------------------------


def fit(X, Y):
    return AnalysisOperatorLearner(n_layers=2, max_iter=1).fit(X, Y)


def loss_grad(X, Y):
    K = np.eye(max(np.shape(X)[-1], 1))[:, : np.shape(X)[-1]]
    return unrolled_loss_grad(K, X, Y, n_layers=2)


def denoise(X, Y):
    return unrolled_denoise(np.eye(np.shape(X)[-1]), X, n_layers=2)


@st.composite
def poisoned(draw):
    """A valid pair with one NaN or infinity in X or y."""
    X, Y = draw(pair(min_samples=2, bound=10.0))
    XY = [X.astype(np.float64), Y.astype(np.float64)]
    index = (draw(st.integers(0, X.shape[0] - 1)), draw(st.integers(0, X.shape[1] - 1)))
    XY[draw(st.integers(0, 1))][index] = draw(
        st.sampled_from([np.nan, np.inf, -np.inf])
    )
    return XY


@SETTINGS
@given(poisoned(), st.sampled_from([fit, loss_grad]))
def test_non_finite_input_is_refused(XY, function):
    with pytest.raises(ValueError, match="NaN|infinity"):
        function(*XY)


rng = np.random.default_rng(0)
X0 = rng.standard_normal((6, 4))
Y0 = X0 + 0.1 * rng.standard_normal(X0.shape)
INVALID = {
    "1-D": (X0[0], Y0[0], "Expected 2D array"),
    "3-D": (X0[None], Y0[None], "dim 3"),
    "empty": (X0[:0], Y0[:0], "0 sample"),
    "no features": (X0[:, :0], Y0[:, :0], "0 feature"),
    "complex": (X0 + 1j, Y0, "Complex data"),
    "strings": (np.full(X0.shape, "a", dtype=object), Y0, "could not convert"),
    "sparse": (scipy.sparse.csr_array(X0), Y0, "[Ss]parse"),
    "fewer clean samples": (X0, Y0[:4], "inconsistent numbers of samples|same shape"),
    "fewer clean features": (X0, Y0[:, :3], "same shape"),
    "clean overflows float32": (
        X0.astype(np.float32),
        Y0 * 1e300,
        "infinity or a value too large|overflows",
    ),
}


@pytest.mark.parametrize("function", [fit, loss_grad, denoise])
@pytest.mark.parametrize("case", INVALID)
def test_invalid_input_is_refused_with_a_message(function, case):
    X, Y, message = INVALID[case]
    if function is denoise and case.startswith(("fewer clean", "clean")):
        pytest.skip("unrolled_denoise takes no clean signals")
    with pytest.raises((ValueError, TypeError), match=message):
        function(X, Y)


def test_one_sample_cannot_be_fitted_but_can_be_denoised():
    with pytest.raises(ValueError, match="2 samples"):
        fit(X0[:1], Y0[:1])
    assert np.all(np.isfinite(loss_grad(X0[:1], Y0[:1])[1]))


def test_missing_y_is_refused():
    with pytest.raises(ValueError, match="requires y"):
        AnalysisOperatorLearner().fit(X0, None)


def test_numeric_object_arrays_are_converted():
    # scikit-learn's convention (check_dtype_object): numbers in an object
    # array are data; anything else is refused above.
    est = fit(X0.astype(object), Y0.astype(object))
    assert est.predict(X0.astype(object)).dtype == np.float64


INVALID_OPERATORS = {
    "NaN": (np.full((3, 4), np.nan), "NaN"),
    "wrong width": (np.eye(3), "K has 3 columns"),
    "1-D": (np.ones(4), "Expected 2D array"),
    "complex": (np.eye(4) + 1j, "Complex data"),
    "sparse": (scipy.sparse.csr_matrix(np.eye(4)), "[Ss]parse"),
    "zero": (np.zeros((3, 4)), "non-zero K"),
    "subnormal norm": (np.eye(4) * 1e-310, "too small for the default step rule"),
    "sigma * tau overflows": (np.eye(4) * 1e-200, "too small for the default step"),
    "overflows float32": (np.eye(4) * 1e300, "K overflows float32"),
    "norm overflows": (np.full((3, 4), 1e308), "overflows"),
}


@pytest.mark.parametrize("case", INVALID_OPERATORS)
def test_invalid_operator_is_refused(case):
    K, message = INVALID_OPERATORS[case]
    X = X0.astype(np.float32) if "float32" in case else X0
    with pytest.raises((ValueError, TypeError), match=message):
        unrolled_loss_grad(K, X, X, n_layers=2)
    with pytest.raises((ValueError, TypeError), match=message):
        unrolled_denoise(K, X, n_layers=2)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"chunk_size": 0}, "'chunk_size' parameter of unrolled_loss_grad"),
        ({"chunk_size": 2.5}, "'chunk_size' parameter of unrolled_loss_grad"),
        ({"penalty": "huber", "huber_eps": np.inf}, "'huber_eps' parameter"),
        ({"penalty": "huber", "huber_eps": "0.1"}, "'huber_eps' parameter"),
        ({"n_layers": 0}, "'n_layers' parameter of unrolled_loss_grad"),
        ({"sigma": np.nan, "tau": 0.5}, "'sigma' parameter of unrolled_loss_grad"),
        ({"sigma": 1e200, "tau": 1e200}, "sigma \\* tau overflows"),
    ],
)
def test_invalid_parameters_are_refused(params, message):
    params = {"n_layers": 2, **params}
    with pytest.raises((ValueError, TypeError), match=message):
        unrolled_loss_grad(np.eye(4), X0, Y0, **params)


@pytest.mark.parametrize(
    "init, message",
    [
        (np.eye(4) + 1j, "Complex data"),
        (np.ones(4), "Expected 2D array"),
        (np.eye(4) * 1e-200, "norm between"),
        (np.full((4, 4), np.inf), "finite and not all zero"),
        (np.eye(3), "init has shape"),
    ],
)
def test_invalid_initial_operator_is_refused(init, message):
    with pytest.raises((ValueError, TypeError), match=message):
        AnalysisOperatorLearner(init=init, n_layers=2, max_iter=1).fit(X0, Y0)
