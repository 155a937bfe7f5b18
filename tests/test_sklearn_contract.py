"""What scikit-learn's estimator checks test, on proper (noisy, clean) pairs.

The checks listed in ``test_common.EXPECTED_FAILED_CHECKS`` use a target of
another shape than ``X``; each test here names the check it stands in for.
"""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline

from sklearn_ergo import AnalysisOperatorLearner


def make_estimator(**params):
    return AnalysisOperatorLearner(
        **{"n_layers": 4, "max_iter": 3, "random_state": 0, **params}
    )


@pytest.fixture
def fitted(pairs):
    X, Y = pairs
    return make_estimator().fit(X, Y), X, Y


def test_fit_returns_self_and_sets_n_features(pairs):
    # check_estimators_fit_returns_self, check_n_features_in(_after_fitting)
    X, Y = pairs
    est = make_estimator()
    assert not hasattr(est, "n_features_in_")
    assert est.fit(X, Y) is est
    assert est.n_features_in_ == X.shape[1]
    with pytest.raises(ValueError, match="features"):
        est.predict(X[:, :-1])


def test_unfitted_estimator_raises(pairs):
    # check_fit_check_is_fitted
    with pytest.raises(NotFittedError):
        make_estimator().predict(pairs[0])


def test_parameters_are_not_changed_by_fit(pairs):
    # check_dont_overwrite_parameters, check_estimators_overwrite_params
    est = make_estimator(init=np.eye(12)[:11] - np.eye(12, k=1)[:11])
    before = {
        k: (v.copy() if isinstance(v, np.ndarray) else v)
        for k, v in est.get_params().items()
    }
    est.fit(*pairs)
    for k, v in est.get_params().items():
        np.testing.assert_array_equal(v, before[k])
    public = {k for k in vars(est) if not k.startswith("_") and not k.endswith("_")}
    assert public == set(before)


def test_methods_do_not_change_the_estimator(fitted):
    # check_dict_unchanged
    est, X, Y = fitted
    state = pickle.dumps(est.__dict__)
    est.predict(X)
    est.transform(X)
    est.score(X, Y)
    assert pickle.dumps(est.__dict__) == state


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_dtypes(pairs, dtype):
    # check_estimators_dtypes, check_regressors_int, check_transformer_preserve_dtypes
    X, Y = pairs
    X, Y = (np.round(100 * X).astype(dtype), np.round(100 * Y).astype(dtype))
    out = make_estimator().fit(X, Y).predict(X)
    assert out.dtype == (np.float32 if dtype == np.float32 else np.float64)
    assert out.shape == X.shape and np.all(np.isfinite(out))


def test_object_dtype(pairs):
    # check_dtype_object
    X, Y = pairs
    est = make_estimator().fit(X.astype(object), Y.astype(object))
    np.testing.assert_allclose(est.predict(X.astype(object)), est.predict(X))
    X_str = X.astype(object)
    X_str[0, 0] = "a"
    with pytest.raises(ValueError, match="could not convert|argument must be"):
        make_estimator().fit(X_str, Y)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_are_rejected(pairs, bad):
    # check_estimators_nan_inf
    X, Y = pairs
    X_bad = X.copy()
    X_bad[3, 2] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        make_estimator().fit(X_bad, Y)
    with pytest.raises(ValueError, match="NaN|infinity"):
        make_estimator().fit(X, X_bad)
    with pytest.raises(ValueError, match="NaN|infinity"):
        make_estimator().fit(X, Y).predict(X_bad)


def test_pickle_round_trip(fitted):
    # check_estimators_pickle
    est, X, _ = fitted
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(est)).predict(X), est.predict(X)
    )


def test_memory_layouts_and_lists(pairs, tmp_path):
    # check_f_contiguous_array_estimator, check_readonly_memmap_input,
    # check_regressor_data_not_an_array, check_transformer_data_not_an_array
    X, Y = pairs
    ref = make_estimator().fit(X, Y).predict(X)
    np.testing.assert_allclose(
        make_estimator()
        .fit(np.asfortranarray(X), np.asfortranarray(Y))
        .predict(np.asfortranarray(X)),
        ref,
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        make_estimator().fit(X.tolist(), Y.tolist()).predict(X.tolist()),
        ref,
        rtol=1e-10,
    )
    paths = []
    for name, a in (("X", X), ("Y", Y)):
        np.save(tmp_path / f"{name}.npy", a)
        paths.append(np.load(tmp_path / f"{name}.npy", mmap_mode="r"))
    np.testing.assert_allclose(
        make_estimator().fit(*paths).predict(paths[0]), ref, rtol=1e-10
    )


def test_predict_rejects_1d_input(fitted):
    # check_fit2d_predict1d
    est, X, _ = fitted
    with pytest.raises(ValueError, match="Reshape your data"):
        est.predict(X[0])


def test_fit_is_idempotent_and_deterministic(pairs):
    # check_fit_idempotent
    X, Y = pairs
    est = make_estimator(init="random")
    first = est.fit(X, Y).components_.copy()
    np.testing.assert_array_equal(est.fit(X, Y).components_, first)
    np.testing.assert_array_equal(clone(est).fit(X, Y).components_, first)


def test_sample_order_and_subset_invariance(fitted):
    # check_methods_sample_order_invariance, check_methods_subset_invariance
    est, X, _ = fitted
    out = est.predict(X)
    perm = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(est.predict(X[perm]), out[perm], rtol=1e-12)
    np.testing.assert_allclose(est.predict(X[10:17]), out[10:17], rtol=1e-12)


def test_score_is_r2_and_there_is_no_decision_function(fitted):
    # check_fit_score_takes_y, check_regressors_train, check_regressor_multioutput,
    # check_regressors_no_decision_function
    est, X, Y = fitted
    from sklearn.metrics import r2_score

    assert est.score(X, Y) == pytest.approx(r2_score(Y, est.predict(X)))
    assert est.score(X, Y) > r2_score(Y, X)  # denoising beats the noisy input
    assert est.predict(X).shape == X.shape
    for method in ("decision_function", "predict_proba"):
        assert not hasattr(est, method)


def test_negative_values_and_pipeline(pairs):
    # check_positive_only_tag_during_fit, check_pipeline_consistency
    X, Y = pairs
    X, Y = X - 1.0, Y - 1.0
    est = make_estimator().fit(X, Y)
    pipe = Pipeline([("denoise", make_estimator())]).fit(X, Y)
    np.testing.assert_allclose(pipe.predict(X), est.predict(X), rtol=1e-12)
    np.testing.assert_allclose(pipe.transform(X), est.transform(X), rtol=1e-12)


def test_n_iter(pairs):
    # check_non_transformer_estimators_n_iter, check_transformer_n_iter
    est = make_estimator(max_iter=2).fit(*pairs)
    assert 1 <= est.n_iter_ <= 2
