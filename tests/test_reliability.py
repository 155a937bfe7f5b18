"""Reliability: scale, faults during fit, interruption, persistence, determinism.

Each test names the behaviour it guards; the fault tests inject the fault
(a non-finite loss, a KeyboardInterrupt) by wrapping the private loss function
the estimator calls, so that they exercise the recovery paths directly.
"""

import contextlib
import pickle
import signal
import warnings

import joblib
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from threadpoolctl import threadpool_info, threadpool_limits

import sklearn_ergo._analysis_operator as estimator_module
import sklearn_ergo._unrolled_map as unrolled_module
from sklearn_ergo import AnalysisOperatorLearner, unrolled_loss_grad
from sklearn_ergo._unrolled_map import UnrolledMap


def make_pairs(n_samples=80, seed=0):
    """Piecewise-constant 3x3 patches (flat runs) with noise."""
    rng = np.random.default_rng(seed)
    X_clean = np.repeat(rng.uniform(size=(n_samples, 3)), 3, axis=1)
    return X_clean + 0.1 * rng.standard_normal(X_clean.shape), X_clean


def learner(**params):
    return AnalysisOperatorLearner(
        **{"n_layers": 5, "max_iter": 4, "random_state": 0, **params}
    )


def quiet_fit(est, X, Y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, Y)


def normalised_loss(est, X, Y):
    """The training loss of ``components_`` (on data divided by ``scale_``)."""
    return est._loss(est._map(), est.components_, X / est.scale_, Y / est.scale_)


# -- 2. scale ------------------------------------------------------------------


def test_fit_is_scale_equivariant():
    X, Y = make_pairs()
    ref = quiet_fit(learner(), X, Y)
    for s in (1e-300, 1e-6, 1e6, 1e300):
        est = quiet_fit(learner(), s * X, s * Y)
        np.testing.assert_allclose(est.scale_, s * ref.scale_, rtol=1e-14)
        np.testing.assert_allclose(est.components_, ref.components_, rtol=1e-8)
        np.testing.assert_allclose(est.predict(s * X) / s, ref.predict(X), rtol=1e-8)


@pytest.mark.parametrize("s", [1e-6, 1e6])
def test_float32_fit_at_extreme_scales(s):
    X, Y = make_pairs()
    ref = quiet_fit(learner(), X, Y)
    X32, Y32 = (s * X).astype(np.float32), (s * Y).astype(np.float32)
    est = quiet_fit(learner(), X32, Y32)
    prediction = est.predict(X32)
    assert prediction.dtype == np.float32 and np.all(np.isfinite(prediction))
    np.testing.assert_allclose(est.components_, ref.components_, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("value", [0.0, 1e-6, 1.0, -1e6])
def test_constant_signals(value):
    # A constant signal has no variation for TV to remove: it is returned as is.
    X = np.full((20, 9), value)
    est = quiet_fit(learner(), X, X)
    assert np.all(np.isfinite(est.components_))
    np.testing.assert_allclose(est.predict(X), X, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subnormal_data_is_fitted_as_zero(dtype):
    # Its RMS is not representable in the dtype: dividing by it gave inf.
    X = np.zeros((4, 4), dtype=dtype)
    X[0, 0] = np.finfo(dtype).smallest_subnormal
    est = quiet_fit(learner(), X, np.zeros_like(X))
    assert est.scale_ == 1.0 and np.all(np.isfinite(est.components_))
    assert np.all(np.isfinite(est.predict(X)))


def test_raw_loss_is_homogeneous_with_explicit_steps():
    # Documented in unrolled_loss_grad: explicit steps (sigma / s^2, tau); the
    # Huber parameter is in the units of K x, hence s^2.
    X, Y = make_pairs(30)
    K = 0.3 * np.random.default_rng(1).standard_normal((7, 9))
    params = {"n_layers": 6, "unroll": "ergodic", "penalty": "huber"}
    loss, grad = unrolled_loss_grad(K, X, Y, sigma=0.4, tau=0.4, **params)
    for s in (1e-5, 1e5):
        loss_s, grad_s = unrolled_loss_grad(
            s * K,
            s * X,
            s * Y,
            sigma=0.4 / s**2,
            tau=0.4,
            huber_eps=0.01 * s**2,
            **params,
        )
        np.testing.assert_allclose(loss_s, s**2 * loss, rtol=1e-10)
        np.testing.assert_allclose(grad_s, s * grad, rtol=1e-8, atol=1e-12 * s)


# -- 3. faults during fit ------------------------------------------------------


def inject(monkeypatch, after, fault):
    """Make the unrolled map's loss/gradient misbehave after ``after`` calls."""
    original = UnrolledMap.loss_grad
    calls = []

    def faulty(*args, **kwargs):
        calls.append(None)
        if len(calls) > after:
            if fault == "nan":
                loss, grads = original(*args, **kwargs)
                return np.nan, {"K": np.full_like(grads["K"], np.nan)}
            raise fault
        return original(*args, **kwargs)

    monkeypatch.setattr(UnrolledMap, "loss_grad", faulty)
    return calls


ADAM = {"solver": "adam", "batch_size": 16, "learning_rate_init": 3e-3}


@pytest.mark.parametrize("params", [{}, ADAM], ids=["lbfgs", "adam"])
def test_keyboard_interrupt_keeps_best_operator(monkeypatch, params):
    X, Y = make_pairs()
    inject(monkeypatch, 6, KeyboardInterrupt)
    est = learner(max_iter=50, **params)
    with pytest.warns(UserWarning, match="interrupted; keeping the best operator"):
        est.fit(X, Y)
    assert 0 < est.n_iter_ < 50
    assert np.all(np.isfinite(est.components_))
    assert est.best_loss_ == min(est.loss_curve_) < est.loss_curve_[0]
    if not params:  # L-BFGS records the loss at the iterate itself
        assert normalised_loss(est, X, Y) == pytest.approx(est.best_loss_, rel=1e-12)
    assert np.all(np.isfinite(est.predict(X)))


def test_keyboard_interrupt_before_any_iteration_keeps_start(monkeypatch):
    X, Y = make_pairs()
    K0 = quiet_fit(learner(), X, Y).components_

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(UnrolledMap, "apply", interrupted)
    est = learner(init=K0)
    with pytest.warns(UserWarning, match="interrupted"):
        est.fit(X, Y)
    np.testing.assert_array_equal(est.components_, K0)


@pytest.mark.parametrize("params", [{}, ADAM], ids=["lbfgs", "adam"])
def test_non_finite_loss_stops_with_best_operator(monkeypatch, params):
    X, Y = make_pairs()
    inject(monkeypatch, 6, "nan")
    est = learner(max_iter=50, **params)
    with pytest.warns(ConvergenceWarning, match="fit stopped after .*non-finite"):
        est.fit(X, Y)
    assert est.n_iter_ < 50
    assert np.all(np.isfinite(est.components_))
    assert est.best_loss_ == min(est.loss_curve_)
    assert np.all(np.isfinite(est.predict(X)))


def test_lbfgs_trial_operator_out_of_range_stops_the_fit(monkeypatch):
    # As if the line search tried an overflowing K: scipy would take the
    # infinite loss for convergence, so the fit stops and says why.
    X, Y = make_pairs()
    calls = []

    def usable_three_times(K):
        calls.append(None)
        return len(calls) <= 3

    monkeypatch.setattr(estimator_module, "_is_usable", usable_three_times)
    est = learner(max_iter=50)
    with pytest.warns(ConvergenceWarning, match="line search tried an operator"):
        est.fit(X, Y)
    assert np.all(np.isfinite(est.components_))
    assert est.best_loss_ == min(est.loss_curve_)


@pytest.mark.parametrize("params", [{}, ADAM], ids=["lbfgs", "adam"])
def test_fault_in_warm_start_keeps_previous_operator(monkeypatch, params):
    X, Y = make_pairs()
    est = quiet_fit(learner(warm_start=True, **params), X, Y)
    K1, prediction = est.components_.copy(), est.predict(X)
    inject(monkeypatch, 0, "nan")
    with pytest.warns(ConvergenceWarning, match="non-finite"):
        est.fit(X, Y)
    np.testing.assert_array_equal(est.components_, K1)
    np.testing.assert_array_equal(est.predict(X), prediction)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("warm", [False, True])
def test_huge_adam_learning_rate_is_halved_not_fatal(dtype, warm):
    X, Y = (a.astype(dtype) for a in make_pairs())
    est = learner(solver="adam", batch_size=16, max_iter=2, warm_start=warm)
    if warm:
        est = quiet_fit(est, X, Y)
    before = normalised_loss(est, X, Y) if warm else np.inf
    est.set_params(learning_rate_init=1e300)
    with pytest.warns(ConvergenceWarning, match="redone with half the learning rate"):
        est.fit(X, Y)
    assert np.all(np.isfinite(est.components_))
    # The divergent steps are not kept: the result is the best operator seen.
    assert normalised_loss(est, X, Y) <= min(before, est.loss_curve_[0]) * (1 + 1e-6)
    assert np.all(np.isfinite(est.predict(X)))


@contextlib.contextmanager
def deadline(seconds):
    """Fail instead of hanging (where SIGALRM exists)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("params", [{}, ADAM], ids=["lbfgs", "adam"])
@pytest.mark.parametrize("clean", [1e-21, 8e17, 1e30])
def test_extreme_clean_to_noisy_ratios_fit_in_range(params, clean):
    # float32 noisy signals of RMS 1 (or 0), clean ones of 1e-21 to 1e30: the
    # tuned initial weight, which follows their difference, would leave the
    # range of float32 computations (Adam's step halving then looped
    # forever); it is kept inside instead.
    X = np.random.default_rng(0).standard_normal((20, 9)).astype(np.float32)
    if clean < 1:
        X[:] = 0.0  # scale_ = 1, error ~ 1e-21
    Y = np.full_like(X, clean)
    if clean == 1e30:  # float32 cannot hold this error: refused up front
        with pytest.raises(ValueError, match="y is too large for X"):
            learner(**params).fit(X, Y)
        return
    with deadline(60), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = learner(**params).fit(X, Y)
    assert estimator_module._is_usable(est.components_)
    assert np.all(np.isfinite(est.predict(X)))


@pytest.mark.parametrize("params", [{}, ADAM], ids=["lbfgs", "adam"])
def test_warm_start_out_of_float32_range_is_refused(params):
    # An operator fitted in float64 on clean signals 1e25 times the noisy
    # ones cannot run in float32.
    X = np.random.default_rng(0).standard_normal((20, 9))
    Y = np.full_like(X, 1e25)
    est = quiet_fit(learner(warm_start=True, **params), X, Y)
    assert np.linalg.norm(est.components_, 2) > 1e20
    X32, Y32 = (a.astype(np.float32) for a in make_pairs())
    with deadline(60), pytest.raises(ValueError, match="initial operator"):
        est.fit(X32, Y32)


def test_failed_refit_leaves_the_model_intact():
    X, Y = make_pairs()
    est = quiet_fit(learner(warm_start=True), X, Y)
    state = (est.components_.copy(), est.scale_, est.predict(X))

    def assert_intact():
        np.testing.assert_array_equal(est.components_, state[0])
        assert est.scale_ == state[1]
        np.testing.assert_array_equal(est.predict(X), state[2])

    with pytest.raises(ValueError, match="features"):
        est.fit(5 * X[:, :4], 5 * Y[:, :4])  # another width and scale
    assert_intact()
    est.set_params(warm_start=False, init=np.eye(3))
    with pytest.raises(ValueError, match="init has shape"):
        est.fit(5 * X, 5 * Y)
    assert_intact()


def test_failed_first_fit_is_not_fitted():
    X, Y = make_pairs()
    est = learner(init=np.eye(3))
    with pytest.raises(ValueError, match="init has shape"):
        est.fit(X, Y)
    with pytest.raises(NotFittedError):
        est.predict(X)


# -- 4. persistence ------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, ADAM], ids=["lbfgs", "adam"])
def test_pickle_and_joblib_round_trips_are_bit_identical(tmp_path, params):
    X, Y = make_pairs()
    est = quiet_fit(learner(**params), X, Y)
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    for copy in (pickle.loads(pickle.dumps(est)), joblib.load(path)):
        for data in (X, X.astype(np.float32)):
            np.testing.assert_array_equal(copy.predict(data), est.predict(data))
        np.testing.assert_array_equal(copy.components_, est.components_)
        assert copy.get_params() == est.get_params()


class _Exploit:
    """A pickle that creates a file when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# -- 5. determinism and parallel backends ---------------------------------------


@pytest.mark.parametrize("params", [{}, ADAM], ids=["lbfgs", "adam"])
def test_same_random_state_gives_identical_components(params):
    X, Y = make_pairs()
    first = quiet_fit(learner(init="random", **params), X, Y).components_
    second = quiet_fit(learner(init="random", **params), X, Y).components_
    np.testing.assert_array_equal(first, second)


def test_n_jobs_2_agrees_with_n_jobs_1():
    X, Y = make_pairs()
    one = quiet_fit(learner(n_jobs=1), X, Y)
    two = quiet_fit(learner(n_jobs=2), X, Y)
    np.testing.assert_allclose(two.components_, one.components_, rtol=1e-9)
    np.testing.assert_allclose(two.predict(X), one.predict(X), rtol=1e-9)


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_dask_backend_agrees_with_n_jobs_1(processes):
    distributed = pytest.importorskip("distributed")
    X, Y = make_pairs()
    one = quiet_fit(learner(n_jobs=1), X, Y)
    # Loopback only; in-process clusters need no network at all.
    host = {"host": "127.0.0.1"} if processes else {}
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            **host,
        ) as cluster,
        distributed.Client(cluster),
        joblib.parallel_config(backend="dask"),
    ):
        dask = quiet_fit(learner(), X, Y)
        prediction = dask.predict(X)
    np.testing.assert_allclose(dask.components_, one.components_, rtol=1e-9)
    np.testing.assert_allclose(prediction, one.predict(X), rtol=1e-9)


def _blas_threads():
    # BLAS pools only: the kernels are matrix products, and BLAS pools are
    # process-wide (OpenMP limits are per thread, and no kernel uses OpenMP).
    return {
        p["prefix"]: p["num_threads"]
        for p in threadpool_info()
        if p["user_api"] == "blas"
    }


# Module-level, so that backends which pickle tasks (dask) pickle it by
# reference and in-process workers append to this very list.
_SEEN_POOLS = []
_chunk_loss_grad = unrolled_module._chunk_loss_grad


def _recording_chunk_loss_grad(*args):
    _SEEN_POOLS.append(_blas_threads())
    return _chunk_loss_grad(*args)


@pytest.mark.parametrize("backend", ["threading", "dask"])
def test_in_process_workers_share_the_cores(monkeypatch, backend):
    # Worker threads of this process share its BLAS pools: they must be
    # capped so that n_workers * threads <= cpu_count.
    monkeypatch.setattr(unrolled_module, "_chunk_loss_grad", _recording_chunk_loss_grad)
    if joblib.cpu_count() < 2:
        pytest.skip("one core: nothing to oversubscribe")
    _SEEN_POOLS.clear()
    X, Y = make_pairs()
    K = np.random.default_rng(0).standard_normal((7, 9))
    with contextlib.ExitStack() as stack:
        # Pools at full width whatever OMP_NUM_THREADS says, as by default.
        stack.enter_context(threadpool_limits(joblib.cpu_count(), user_api="blas"))
        before = _blas_threads()
        if backend == "dask":
            distributed = pytest.importorskip("distributed")
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=2,
                    threads_per_worker=1,
                    processes=False,
                    dashboard_address=None,
                )
            )
            stack.enter_context(distributed.Client(cluster))
        with joblib.parallel_config(backend=backend, n_jobs=2):
            unrolled_loss_grad(K, X, Y, n_layers=3)
        assert _blas_threads() == before  # the caps are lifted afterwards
    cap = joblib.cpu_count() // 2
    assert len(_SEEN_POOLS) == 2
    assert all(n <= cap for pools in _SEEN_POOLS for n in pools.values())


# -- 4b. the image denoiser's model files (CLI, pretrained) ---------------------


@pytest.fixture(scope="module", params=["l1", "log"])
def image_denoiser(request):
    from sklearn_ergo import ImageDenoiser

    image = np.kron(np.random.default_rng(0).uniform(size=(4, 4)), np.ones((8, 8)))
    return ImageDenoiser(
        n_layers=4,
        crop_size=16,
        n_crops=2,
        max_iter=2,
        noise_std=0.1,
        penalty=request.param,
        random_state=0,
    ).fit([image])


def test_image_denoiser_round_trips_are_bit_identical(image_denoiser, tmp_path):
    from sklearn_ergo import load_denoiser, save_denoiser

    rng = np.random.default_rng(1)
    noisy = rng.uniform(size=(20, 20))
    expected = image_denoiser.denoise(noisy)
    save_denoiser(image_denoiser, tmp_path / "model.npz")
    joblib.dump(image_denoiser, tmp_path / "model.joblib")
    copies = [
        load_denoiser(tmp_path / "model.npz"),
        joblib.load(tmp_path / "model.joblib"),
        pickle.loads(pickle.dumps(image_denoiser)),
    ]
    for copy in copies:
        np.testing.assert_array_equal(copy.denoise(noisy), expected)


def test_interrupted_save_keeps_the_old_model_file(
    image_denoiser, tmp_path, monkeypatch
):
    from sklearn_ergo import _model_io

    target = tmp_path / "model.npz"
    _model_io.save_denoiser(image_denoiser, target)
    good = target.read_bytes()

    def interrupted(file, **arrays):
        file.write(b"half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(_model_io.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _model_io.save_denoiser(image_denoiser, target)
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    monkeypatch.undo()
    # Like numpy.savez, a path without the suffix gets ".npz".
    _model_io.save_denoiser(image_denoiser, tmp_path / "other")
    copy = _model_io.load_denoiser(tmp_path / "other.npz")
    np.testing.assert_array_equal(copy.components_, image_denoiser.components_)


def test_image_model_file_refuses_foreign_files(image_denoiser, tmp_path):
    from sklearn_ergo._model_io import FORMAT, load_denoiser, save_denoiser

    marker = tmp_path / "pwned"
    (tmp_path / "exploit.npz").write_bytes(pickle.dumps(_Exploit(str(marker))))
    (tmp_path / "text.npz").write_text("not a model")
    np.save(tmp_path / "array.npy", np.eye(2))
    np.savez(tmp_path / "other.npz", components=np.eye(4))
    np.savez(tmp_path / "keys.npz", format=np.array(FORMAT))
    objects = np.array([np.eye(4)], dtype=object)
    np.savez(tmp_path / "objects.npz", format=np.array(FORMAT), components=objects)
    save_denoiser(image_denoiser, tmp_path / "good.npz")
    good = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(good[: len(good) // 2])
    if image_denoiser.penalty == "log":
        fields = dict(np.load(tmp_path / "good.npz"))
        np.savez(
            tmp_path / "no_eps.npz", **{k: fields[k] for k in fields if k != "eps"}
        )
        np.savez(tmp_path / "bad_eps.npz", **dict(fields, eps=-fields["eps"]))
        np.savez(tmp_path / "bad_stages.npz", **dict(fields, n_stages=0))
    for name in (
        *(
            ("no_eps.npz", "bad_eps.npz", "bad_stages.npz")
            if image_denoiser.penalty == "log"
            else ()
        ),
        "exploit.npz",
        "text.npz",
        "array.npy",
        "other.npz",
        "keys.npz",
        "objects.npz",
        "truncated.npz",
    ):
        with pytest.raises(ValueError, match=name):
            load_denoiser(tmp_path / name)
    assert not marker.exists()
