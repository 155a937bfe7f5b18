import warnings

import numpy as np
import pytest
import scipy.sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sklearn_ergo import AnalysisOperatorLearner, unrolled_denoise
from sklearn_ergo._init import finite_difference_operator


def small(**params):
    return AnalysisOperatorLearner(
        **{"n_layers": 5, "max_iter": 10, "random_state": 0, **params}
    )


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
@pytest.mark.parametrize("unroll", ["last", "ergodic"])
def test_fit_learns(pairs, solver, unroll):
    X, Y = pairs
    params = {"batch_size": 32, "learning_rate_init": 3e-3} if solver == "adam" else {}
    est = small(solver=solver, unroll=unroll, **params).fit(X, Y)
    assert est.loss_curve_[-1] < 0.95 * est.loss_curve_[0]
    assert len(est.loss_curve_) == est.n_iter_ + 1
    assert est.components_.shape == (11, 12)


def test_tv_initialisation_is_tuned_finite_differences(pairs):
    X, Y = pairs
    est = small(max_iter=1)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, Y)
    D = finite_difference_operator(12)

    def loss(weight):
        out = unrolled_denoise(weight * D, X / est.scale_, n_layers=5)
        return np.mean((out - Y / est.scale_) ** 2)

    best = loss(est.init_weight_)
    assert best < loss(0.7 * est.init_weight_) and best < loss(1.4 * est.init_weight_)
    assert est.loss_curve_[0] == pytest.approx(0.5 * 12 * best, rel=1e-6)


def test_generalises_on_natural_image_patches():
    """Default fit on 2e4 8x8 patches beats tuned patch TV on another image."""
    pytest.importorskip("PIL")
    from sklearn_ergo._demo import tuned_tv_denoise
    from sklearn_ergo.datasets import make_noisy_patches, psnr

    X, Y = make_noisy_patches("china.jpg", 20_000, random_state=0)
    X_test, Y_test = make_noisy_patches("flower.jpg", 5_000, random_state=1)
    est = AnalysisOperatorLearner(random_state=0).fit(X, Y)
    tv_out = tuned_tv_denoise(est, X_test)
    gain = psnr(est.predict(X_test), Y_test) - psnr(tv_out, Y_test)
    assert gain >= 0.3, f"gain over tuned patch TV on unseen image: {gain:.2f} dB"


def test_convergence_warning_and_tolerance(pairs):
    X, Y = pairs
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        small(max_iter=2).fit(X, Y)
    est = small(max_iter=50, tol=0.5, n_iter_no_change=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(X, Y)
    assert est.n_iter_ == 2


def test_verbose_prints_progress(pairs, capsys):
    small(max_iter=2, verbose=1).fit(*pairs)
    out = capsys.readouterr().out
    assert "Iteration 0, loss =" in out and "Iteration 2, loss =" in out


def test_warm_start_continues(pairs):
    X, Y = pairs
    est = small(max_iter=3, warm_start=True).fit(X, Y)
    K1, last = est.components_.copy(), est.loss_curve_[-1]
    est.fit(X, Y)
    assert est.init_weight_ is None  # no new initialisation
    assert est.loss_curve_[0] == pytest.approx(last, rel=1e-9)  # starts where it ended
    assert not np.array_equal(est.components_, K1)


def test_early_stopping_keeps_the_best_validated_operator(pairs):
    X, Y = pairs
    est = small(early_stopping=True, validation_fraction=0.2, max_iter=8).fit(X, Y)
    scores = est.validation_scores_
    assert len(scores) == est.n_iter_ + 1
    assert est.best_loss_ == min(scores)
    assert len(est.loss_curve_) == len(scores)


def test_n_jobs_does_not_change_the_fit(pairs):
    X, Y = pairs
    K1 = small(max_iter=4, n_jobs=1).fit(X, Y).components_
    K2 = small(max_iter=4, n_jobs=2).fit(X, Y).components_
    np.testing.assert_allclose(K1, K2, rtol=1e-7, atol=1e-10)


def test_monitored_loss_in_blocks_matches_the_whole_batch(pairs, monkeypatch):
    import sklearn_ergo._analysis_operator as estimator_module

    X, Y = pairs
    est = small(max_iter=2).fit(X, Y)
    umap = est._map()
    Xs, Ys = X / est.scale_, Y / est.scale_
    whole = est._loss(umap, est.components_, Xs, Ys)
    monkeypatch.setattr(estimator_module, "_LOSS_BLOCK", 7)  # uneven blocks
    blocked = est._loss(umap, est.components_, Xs, Ys)
    assert blocked == pytest.approx(whole, rel=1e-12)
    residual = est.predict(X) / est.scale_ - Ys
    assert whole == pytest.approx(0.5 * np.sum(residual**2) / len(X), rel=1e-12)


def test_float32_end_to_end(pairs):
    X, Y = (a.astype(np.float32) for a in pairs)
    est = small(max_iter=3).fit(X, Y)
    assert est.components_.dtype == np.float32
    assert est.predict(X).dtype == np.float32
    ref = small(max_iter=3).fit(*pairs)
    np.testing.assert_allclose(est.predict(X), ref.predict(pairs[0]), atol=2e-3)


@pytest.mark.parametrize(
    "init, n_components, shape",
    [
        ("tv", None, (11, 12)),
        ("tv", 15, (15, 12)),
        ("tv", 6, (6, 12)),
        ("random", None, (12, 12)),
        ("random", 20, (20, 12)),
    ],
)
def test_initialisations(pairs, init, n_components, shape):
    est = small(init=init, n_components=n_components, max_iter=2).fit(*pairs)
    assert est.components_.shape == shape
    assert est.init_weight_ > 0


def test_square_patches_use_2d_differences():
    D = finite_difference_operator(9)
    assert D.shape == (12, 9)
    image = np.arange(9.0).reshape(3, 3)
    tv = np.abs(np.diff(image, axis=0)).sum() + np.abs(np.diff(image, axis=1)).sum()
    assert np.abs(D @ image.ravel()).sum() == tv


def test_explicit_init(pairs):
    X, Y = pairs
    K0 = 0.05 * finite_difference_operator(12)
    est = small(init=K0, max_iter=1)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, Y)
    assert est.init_weight_ is None
    with pytest.raises(
        ValueError, match=r"init has shape \(11, 12\); expected \(5, 12\)"
    ):
        small(init=K0, n_components=5).fit(X, Y)
    with pytest.raises(ValueError, match="not all zero"):
        small(init=np.zeros((3, 12))).fit(X, Y)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_layers": 0}, "n_layers"),
        ({"unroll": "first"}, "unroll"),
        ({"penalty": "l2"}, "penalty"),
        ({"solver": "sgd"}, "solver"),
        ({"huber_eps": -1.0}, "huber_eps"),
        ({"ergodic_weights": "quadratic"}, "ergodic_weights"),
    ],
)
def test_invalid_parameters(pairs, params, match):
    with pytest.raises(ValueError, match=match):
        small(**params).fit(*pairs)


def test_bad_input(pairs):
    X, Y = pairs
    est = small()
    with pytest.raises(ValueError, match="same shape as X"):
        est.fit(X, Y[:, :5])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(X, Y[:50])
    with pytest.raises(ValueError, match="requires y"):
        est.fit(X, None)
    with pytest.raises(ValueError, match="Expected 2D array"):
        est.fit(X[0], Y[0])
    with pytest.raises(ValueError, match="Complex data not supported"):
        est.fit(X + 1j, Y)
    with pytest.raises(TypeError, match="[Ss]parse"):
        est.fit(scipy.sparse.csr_matrix(X), Y)
    with pytest.raises(ValueError, match="n_samples=1"):
        est.fit(X[:1], Y[:1])


def test_grid_search_over_layers_and_unroll(pairs):
    X, Y = pairs
    grid = GridSearchCV(
        small(max_iter=3),
        {
            "n_layers": [2, 6],
            "unroll": ["last", "ergodic"],
            "ergodic_weights": ["uniform", "linear"],
        },
        scoring="neg_mean_squared_error",
        cv=2,
    )
    grid.fit(X, Y)
    assert set(grid.best_params_) == {"n_layers", "unroll", "ergodic_weights"}
    assert grid.predict(X).shape == X.shape


def test_pipeline_ending_in_the_learner(pairs):
    X, Y = pairs
    pipe = make_pipeline(FunctionTransformer(lambda Z: Z - 0.0), small(max_iter=3))
    pipe.fit(X, Y)
    assert pipe.score(X, Y) > 0.5
