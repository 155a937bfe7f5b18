"""The log penalty's reweighted-l1 stages and their exact gradient."""

import numpy as np
import pytest
from conftest import fd_relative_error
from joblib import parallel_config

from sklearn_ergo._chambolle_pock import backward, forward
from sklearn_ergo._convolutional import denoise_images, images_loss_grad, on_images
from sklearn_ergo._init import initial_filters
from sklearn_ergo._operators import DenseOperator
from sklearn_ergo._penalties import (
    L1,
    BlendedShapedLog,
    Log,
    ShapedLog,
    ShiftedShapedLog,
    ShiftedWeightedL1,
    WeightedL1,
)
from sklearn_ergo._steps import AcceleratedSteps, constant_steps
from sklearn_ergo._unrolled_map import UnrolledMap, output_weights


def _problem(seed=0, shape=(3, 9, 8), m=4, p=3):
    rng = np.random.default_rng(seed)
    clean = rng.uniform(size=shape)
    noisy = clean + 0.2 * rng.standard_normal(shape)
    K = 0.3 * initial_filters(m, p, rng)
    eps = rng.uniform(0.02, 0.2, size=m)
    return K, eps, noisy, clean, rng


def _map(n_layers, n_stages=2, unroll="last", penalty=None, per_stage=False):
    return UnrolledMap(
        n_layers,
        unroll,
        penalty=Log() if penalty is None else penalty,
        steps=AcceleratedSteps(),
        n_stages=n_stages,
        per_stage=per_stage,
    )


def test_weighted_l1_prox_and_mask():
    b = np.array([0.5, 1.0, 2.0, 0.1])
    F = WeightedL1(b)
    z = np.array([-1.0, 0.3, 3.0, 0.05])
    y = F.prox_conjugate(z.copy(), 0.7)
    np.testing.assert_array_equal(y, [-0.5, 0.3, 2.0, 0.05])
    # Moreau: prox_{F*}(z) = z - prox_F(z), with prox_F weighted soft thresholding.
    np.testing.assert_allclose(y, z - F.prox(z, 1.0))
    np.testing.assert_array_equal(F.active(y, np.empty(4)), [0, 1, 0, 1])
    assert F.value(z) == pytest.approx(np.sum(b * np.abs(z)))
    np.testing.assert_array_equal(L1().active(y, np.empty(4)), np.abs(y) < 1.0)


@pytest.mark.parametrize("unroll", ["last", "ergodic"])
def test_backward_bound_gradient_matches_finite_differences(unroll):
    rng = np.random.default_rng(0)
    K = rng.standard_normal((6, 5))
    X = rng.standard_normal((4, 5))
    target = rng.standard_normal((4, 5))
    steps = constant_steps(0.3, 0.3, 9)
    alpha = output_weights(9, unroll)
    bounds = rng.uniform(0.05, 0.6, size=(4, 6))
    op = DenseOperator(K)

    def loss(b):
        out = forward(op, X, steps, WeightedL1(b), alpha)[0]
        return 0.5 * np.sum((out - target) ** 2)

    out, tape = forward(op, X, steps, WeightedL1(bounds), alpha, record=True)
    grad = np.zeros_like(bounds)
    backward(
        op, X, tape, steps, WeightedL1(bounds), alpha, out - target, bound_grad=grad
    )
    assert np.abs(grad).max() > 0
    for _ in range(3):
        assert fd_relative_error(loss, bounds, grad, rng, h=1e-7) <= 1e-6


@pytest.mark.parametrize("per_stage", [False, True], ids=["shared", "per_stage"])
@pytest.mark.parametrize("unroll", ["last", "ergodic"])
@pytest.mark.parametrize("n_stages", [1, 2, 3])
def test_gradient_matches_finite_differences(unroll, n_stages, per_stage):
    K, eps, noisy, clean, rng = _problem()
    umap = _map(6, n_stages, unroll, per_stage=per_stage)
    if per_stage:
        # Distinct operators and scales per stage.  (Growing operators put
        # this problem's ergodic outputs within 1e-7 of a kink, where the
        # central difference, not the gradient, is off: the error fell with h.)
        K = np.stack([K * (1 - 0.2 * s) for s in range(n_stages)])
        eps = np.stack([eps * (1 + 0.5 * s) for s in range(n_stages)])
    params = {"K": K, "eps": eps}
    loss, grads = images_loss_grad(umap, params, noisy, clean)

    def f(name):
        return lambda v: images_loss_grad(umap, params | {name: v}, noisy, clean)[0]

    # The map is piecewise smooth (a dual coordinate entering or leaving its
    # box is a kink); with h = 1e-6 one direction here crosses a kink.
    for _ in range(2):
        assert fd_relative_error(f("K"), K, grads["K"], rng, h=1e-7) <= 1e-6
        if n_stages == 1:
            assert np.all(grads["eps"] == 0.0)
        else:
            assert fd_relative_error(f("eps"), eps, grads["eps"], rng, h=1e-7) <= 1e-6
    if per_stage:
        # Stage 1 is the l1 model: its eps is unused, every stage's K is used.
        assert np.all(grads["eps"][0] == 0.0)
        assert all(np.abs(g).max() > 0 for g in grads["K"])


def test_per_stage_with_equal_stages_is_the_shared_model():
    K, eps, noisy, clean, _ = _problem(seed=3)
    shared = images_loss_grad(_map(5, 3), {"K": K, "eps": eps}, noisy, clean)
    stacked = {"K": np.stack([K] * 3), "eps": np.stack([eps] * 3)}
    per = images_loss_grad(_map(5, 3, per_stage=True), stacked, noisy, clean)
    assert per[0] == pytest.approx(shared[0], rel=1e-13)
    for name in ("K", "eps"):
        np.testing.assert_allclose(
            per[1][name].sum(axis=0), shared[1][name], rtol=1e-10
        )


def test_one_stage_is_the_l1_model_and_large_eps_tends_to_it():
    K, eps, noisy, clean, _ = _problem(seed=1)
    log1 = images_loss_grad(_map(8, 1), {"K": K, "eps": eps}, noisy, clean)
    l1 = images_loss_grad(_map(8, 1, penalty=L1()), {"K": K}, noisy, clean)
    assert log1[0] == l1[0]
    np.testing.assert_array_equal(log1[1]["K"], l1[1]["K"])
    far = images_loss_grad(_map(8, 3), {"K": K, "eps": 1e9 * eps}, noisy, clean)
    assert far[0] == pytest.approx(l1[0], rel=1e-6)
    # Small eps: later stages regularise edges less, and the output differs.
    near = images_loss_grad(_map(8, 3), {"K": K, "eps": eps}, noisy, clean)
    assert abs(near[0] - l1[0]) > 1e-3 * l1[0]


def test_stages_decrease_the_log_energy():
    """Converged stages are majorize-minimize steps of the non-convex energy."""
    rng = np.random.default_rng(2)
    clean = np.kron(rng.uniform(size=(3, 3)), np.ones((5, 5)))
    noisy = (clean + 0.1 * rng.standard_normal(clean.shape)).reshape(1, -1)
    K = 0.08 * initial_filters(2, 2, rng)
    eps = np.array([0.02, 0.02])
    op = on_images(_map(400, 1), clean.shape, 2).operator(K)

    def energy(x):
        z = op.apply(x)
        return Log().value(z, {"eps": eps}) + 0.5 * np.sum((x - noisy) ** 2)

    energies = [
        energy(
            on_images(_map(400, s), clean.shape, 2).apply({"K": K, "eps": eps}, noisy)
        )
        for s in (1, 2, 3, 4)
    ]
    assert all(np.diff(energies) < 0), energies


def test_parallel_chunks_and_denoise():
    K, eps, noisy, clean, _ = _problem(shape=(5, 8, 8))
    params = {"K": K, "eps": eps}
    umap = _map(5)
    serial = images_loss_grad(umap, params, noisy, clean)
    with parallel_config(backend="threading"):
        par = images_loss_grad(umap, params, noisy, clean, n_jobs=2)
    assert par[0] == pytest.approx(serial[0], rel=1e-12)
    for name in params:
        np.testing.assert_allclose(
            par[1][name], serial[1][name], rtol=1e-10, atol=1e-14
        )
    out = denoise_images(umap, params, noisy, pad=False)
    loss = 0.5 * np.sum((out - clean) ** 2) / len(noisy)
    assert loss == pytest.approx(serial[0], rel=1e-12)
    with pytest.raises(ValueError, match=r"eps must hold \(4,\) positive"):
        denoise_images(umap, {"K": K, "eps": np.r_[eps, 1.0]}, noisy)
    with pytest.raises(ValueError, match="eps must hold"):
        denoise_images(umap, {"K": K, "eps": -eps}, noisy)
    with pytest.raises(ValueError, match="params must hold"):
        denoise_images(umap, {"K": K}, noisy)


def test_stages_need_a_reweighted_penalty():
    with pytest.raises(ValueError, match="n_stages=2 needs a penalty"):
        _map(5, 2, penalty=L1())


class SqrtPenalty(Log):
    """``sum_j 2 eps (sqrt(1 + |z_j| / eps) - 1)``: another penalty concave in
    ``|z|``, written here as a user would, to show that a reweighted penalty is
    one class (its weights and their derivative) and nothing else."""

    def weights(self, z, params):
        # One column per row of K (the dual is position-major).
        t = np.abs(z).reshape(-1, len(params["eps"]))
        return (1.0 / np.sqrt(1.0 + t / params["eps"])).reshape(z.shape)

    def weights_vjp(self, z, w, params, d_w):
        eps = params["eps"]
        t = np.abs(z).reshape(-1, len(eps))
        # w = (1 + |z| / eps)^(-1/2), so dw/d|z| = -w^3 / (2 eps)
        # and dw/deps = w^3 |z| / (2 eps^2).
        common = (d_w * w**3).reshape(-1, len(eps)) / (2.0 * eps)
        d_z = -np.sign(z) * common.reshape(z.shape)
        return d_z, {"eps": np.sum(common * t, axis=0) / eps}


@pytest.mark.parametrize("per_stage", [False, True], ids=["shared", "per_stage"])
def test_a_new_reweighted_penalty_is_one_class(per_stage):
    # Dense operator: UnrolledMap's defaults, nothing else to write.
    rng = np.random.default_rng(5)
    X_clean = np.repeat(rng.uniform(size=(12, 3)), 3, axis=1)
    X_noisy = X_clean + 0.1 * rng.standard_normal(X_clean.shape)
    umap = UnrolledMap(8, penalty=SqrtPenalty(), n_stages=3, per_stage=per_stage)
    K = 0.3 * np.diff(np.eye(9), axis=0)
    eps = np.full(8, 0.05)
    if per_stage:
        K = np.stack([K * (1 - 0.1 * s) for s in range(3)])
        eps = np.stack([eps * (1 + 0.5 * s) for s in range(3)])
    params = {"K": K, "eps": eps}
    loss, grads = umap.loss_grad(params, X_noisy, X_clean)
    # The stages use the weights: the output differs from the l1 model's.
    l1 = UnrolledMap(8).loss_grad({"K": K[0] if per_stage else K}, X_noisy, X_clean)
    assert abs(loss - l1[0]) > 1e-4 * l1[0]
    for name in params:

        def f(v, name=name):
            return umap.loss_grad(params | {name: v}, X_noisy, X_clean)[0]

        assert fd_relative_error(f, params[name], grads[name], rng) <= 1e-6


# -- the log penalty with a learned shape -------------------------------------------
def _shape(rng, rows, scale=0.7):
    return scale * rng.standard_normal((*rows, ShapedLog.n_segments))


def _gain(rng, rows, scale=0.8):
    return scale * rng.standard_normal((*rows, ShiftedShapedLog.n_segments + 1))


def test_shaped_log_at_zero_shape_is_the_log_penalty():
    K, eps, noisy, clean, rng = _problem(seed=6)
    z = rng.standard_normal((5, 4)) * rng.uniform(0, 8, size=(5, 4))
    flat = {"eps": eps, "shape": np.zeros((4, ShapedLog.n_segments))}
    np.testing.assert_allclose(
        ShapedLog().weights(z, flat), Log().weights(z, {"eps": eps}), rtol=1e-14
    )
    assert ShapedLog().value(z, flat) == pytest.approx(
        Log().value(z, {"eps": eps}), rel=1e-13
    )
    log = images_loss_grad(_map(5, 3), {"K": K, "eps": eps}, noisy, clean)
    shaped = images_loss_grad(
        _map(5, 3, penalty=ShapedLog()), {"K": K, **flat}, noisy, clean
    )
    assert shaped[0] == pytest.approx(log[0], rel=1e-13)
    for name in ("K", "eps"):
        np.testing.assert_allclose(shaped[1][name], log[1][name], rtol=1e-10)
    assert np.abs(shaped[1]["shape"]).max() > 0


def test_shaped_log_is_concave_and_its_value_integrates_its_weights():
    rng = np.random.default_rng(7)
    eps = np.array([0.05, 0.3, 1.0])
    params = {"eps": eps, "shape": _shape(rng, (3,), scale=1.5)}
    t = np.linspace(0.0, 60.0, 4001)[:, None] * np.ones(3)
    w = ShapedLog().weights(t, params)
    assert np.all((w > 0) & (w <= 1)) and np.all(np.diff(w, axis=0) <= 0)
    # phi' = w: the value's central differences, one coordinate at a time.
    h = 1e-6
    for z in (0.013, 0.4, 2.5, 47.0):
        zz = np.full((1, 3), z)
        fd = np.array(
            [
                ShapedLog().value(zz + h * e, params)
                - ShapedLog().value(zz - h * e, params)
                for e in np.eye(3)
            ]
        ) / (2 * h)
        # (atol: where w is ~1e-12 the difference of two values is rounding.)
        np.testing.assert_allclose(
            fd, ShapedLog().weights(zz, params)[0], rtol=1e-6, atol=1e-9
        )


@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("method", ["weights", "targets", "stage_terms"])
def test_shaped_log_weights_by_blocks(monkeypatch, method, n_threads):
    """Blocks of rows (the last one partial), on one thread or several, give
    the weights (and the targets, and both at once) of one block."""
    import sklearn_ergo._penalties as penalties

    rng = np.random.default_rng(12)
    z = rng.standard_normal((3, 5 * 4)) * rng.uniform(0, 5, size=(3, 5 * 4))
    params = {"eps": rng.uniform(0.1, 1, 4), "shape": _shape(rng, (4,))}
    params["gain"] = _gain(rng, (4,))
    compute = getattr(ShiftedShapedLog(), method)
    whole = compute(z, params)
    monkeypatch.setattr(penalties, "_BLOCK", 7)  # one row of 4 per block
    np.testing.assert_array_equal(compute(z, params, n_threads=n_threads), whole)
    monkeypatch.setattr(penalties, "_BLOCK", 4 * 4)  # 4 rows, 15 in all
    np.testing.assert_array_equal(compute(z, params), whole)


@pytest.mark.parametrize(
    "penalty", [ShapedLog(), ShiftedShapedLog(), BlendedShapedLog()]
)
@pytest.mark.parametrize("per_stage", [False, True], ids=["shared", "per_stage"])
@pytest.mark.parametrize("unroll", ["last", "ergodic"])
@pytest.mark.parametrize("n_stages", [2, 3])
def test_shaped_log_gradient_matches_finite_differences(
    unroll, n_stages, per_stage, penalty
):
    K, eps, noisy, clean, rng = _problem(seed=8)
    umap = _map(6, n_stages, unroll, penalty=penalty, per_stage=per_stage)
    if per_stage:
        K = np.stack([K * (1 - 0.2 * s) for s in range(n_stages)])
        eps = np.stack([eps * (1 + 0.5 * s) for s in range(n_stages)])
    params = {"K": K, "eps": eps, "shape": _shape(rng, eps.shape)}
    if "gain" in penalty.param_names:
        params["gain"] = _gain(rng, eps.shape)
    if "blend" in penalty.param_names:
        params["blend"] = rng.uniform(0.2, 0.6, size=eps.shape[:-1])
    loss, grads = images_loss_grad(umap, params, noisy, clean)
    for name in params:

        def f(v, name=name):
            return images_loss_grad(umap, params | {name: v}, noisy, clean)[0]

        # K's directions cross kinks (a dual coordinate at its box's face)
        # beyond h = 1e-7; the penalty's small derivatives lose digits to
        # rounding at small h and cross kinks at large h.  Worst error over
        # these 24 cases: 1.4e-6 at h = 1e-6 (on one machine: a direction
        # nearly orthogonal to the gradient, <g, d> = 5e-4 |g| |d|), 1.3e-7
        # at 3e-6, 1.5e-2 at 1e-5 (a kink).
        h = 1e-7 if name == "K" else 3e-6
        for _ in range(2):
            err = fd_relative_error(f, params[name], grads[name], rng, h=h)
            assert err <= 1e-6, name
        assert np.abs(grads[name]).max() > 0, name
    if per_stage:  # stage 1 is the l1 model: no penalty parameter is used
        for name in params.keys() - {"K"}:
            assert np.all(grads[name][0] == 0.0), name


def test_shaped_log_stages_decrease_its_energy():
    """Any shape keeps the stages majorize-minimize steps of the energy."""
    rng = np.random.default_rng(9)
    clean = np.kron(rng.uniform(size=(3, 3)), np.ones((5, 5)))
    noisy = (clean + 0.1 * rng.standard_normal(clean.shape)).reshape(1, -1)
    K = 0.08 * initial_filters(2, 2, rng)
    params = {"K": K, "eps": np.array([0.02, 0.05]), "shape": _shape(rng, (2,), 1.0)}
    umap = _map(400, 1, penalty=ShapedLog())
    op = on_images(umap, clean.shape, 2).operator(K)

    def energy(x):
        penalty = {k: params[k] for k in ("eps", "shape")}
        return ShapedLog().value(op.apply(x), penalty) + 0.5 * np.sum((x - noisy) ** 2)

    energies = [
        energy(
            on_images(_map(400, s, penalty=ShapedLog()), clean.shape, 2).apply(
                params, noisy
            )
        )
        for s in (1, 2, 3, 4)
    ]
    assert all(np.diff(energies) < 0), energies


def test_shaped_log_parameters_are_checked():
    K, eps, noisy, _, _ = _problem()
    umap = _map(3, penalty=ShapedLog())
    with pytest.raises(ValueError, match=r"shape must hold \(4, 8\) finite"):
        denoise_images(umap, {"K": K, "eps": eps, "shape": np.zeros((4, 3))}, noisy)
    with pytest.raises(ValueError, match="shape must hold"):
        bad = np.full((4, 8), np.nan)
        denoise_images(umap, {"K": K, "eps": eps, "shape": bad}, noisy)


# -- stages centred on a learned gain of the previous responses ----------------------
def test_shifted_weighted_l1_prox_is_the_centred_one():
    rng = np.random.default_rng(13)
    b, t, z = rng.uniform(0.1, 2, 6), rng.standard_normal(6), 3 * rng.standard_normal(6)
    F = ShiftedWeightedL1(b, t)
    for sigma in (0.3, 1.0, 2.5):
        y = F.prox_conjugate(z.copy(), sigma)
        # Moreau: prox_{sigma F*}(z) = z - sigma prox_{F / sigma}(z / sigma).
        np.testing.assert_allclose(y, z - sigma * F.prox(z / sigma, 1 / sigma))
        assert np.all(np.abs(y) <= b)
    np.testing.assert_array_equal(F.active(y, np.empty(6)), np.abs(y) < b)
    # In place (the solver's call, one BLAS pass), in both dtypes.
    for dtype in (np.float64, np.float32):
        G = ShiftedWeightedL1(b.astype(dtype), t.astype(dtype))
        zz = z.astype(dtype)
        y_in_place = G.prox_conjugate(zz, sigma, out=zz)
        assert y_in_place is zz
        np.testing.assert_allclose(zz, G.prox_conjugate(z.astype(dtype), sigma))
        np.testing.assert_allclose(zz, y, rtol=1e-6 if dtype == np.float32 else 0)
    assert F.value(z) == pytest.approx(np.sum(b * np.abs(z - t)))
    # The solver applies the prox per tile of the dual: a part is the same map.
    np.testing.assert_array_equal(
        F.part(2, 5).prox_conjugate(z[2:5].copy(), sigma), y[2:5]
    )


@pytest.mark.parametrize("wrt", ["shift", "data"])
@pytest.mark.parametrize("unroll", ["last", "ergodic"])
def test_backward_shift_and_data_gradients_match_finite_differences(unroll, wrt):
    """``shift_grad`` is the gradient with respect to the targets ``t``, and
    ``g + data_grad`` the one with respect to the data ``X``."""
    rng = np.random.default_rng(14)
    K = rng.standard_normal((6, 5))
    X, target = rng.standard_normal((2, 4, 5))
    steps = constant_steps(0.3, 0.3, 9)
    alpha = output_weights(9, unroll)
    bounds = rng.uniform(0.05, 0.6, size=(4, 6))
    shift = 0.5 * rng.standard_normal((4, 6))
    op = DenseOperator(K)

    def loss(v):
        x, t = (X, v) if wrt == "shift" else (v, shift)
        out = forward(op, x, steps, ShiftedWeightedL1(bounds, t), alpha)[0]
        return 0.5 * np.sum((out - target) ** 2)

    F = ShiftedWeightedL1(bounds, shift)
    out, tape = forward(op, X, steps, F, alpha, record=True)
    g = out - target
    if wrt == "shift":
        at, grad = shift, np.zeros_like(shift)
        backward(op, X, tape, steps, F, alpha, g, shift_grad=grad)
        assert np.abs(grad).max() > 0
    else:
        at, grad = X, g.copy()
        backward(op, X, tape, steps, F, alpha, g, data_grad=grad)
        assert np.abs(grad - g).max() > 0
    for _ in range(3):
        assert fd_relative_error(loss, at, grad, rng, h=1e-7) <= 1e-6


def test_blended_log_at_zero_blend_is_the_shifted_log_penalty():
    K, eps, noisy, clean, rng = _problem(seed=19)
    shifted = {"K": K, "eps": eps, "shape": _shape(rng, eps.shape)}
    shifted["gain"] = _gain(rng, eps.shape)
    one = images_loss_grad(
        _map(5, 3, penalty=ShiftedShapedLog()), shifted, noisy, clean
    )
    blended = images_loss_grad(
        _map(5, 3, penalty=BlendedShapedLog()),
        shifted | {"blend": np.zeros(())},
        noisy,
        clean,
    )
    assert blended[0] == pytest.approx(one[0], rel=1e-13)
    for name in shifted:
        np.testing.assert_allclose(blended[1][name], one[1][name], rtol=1e-10)
    assert blended[1]["blend"].shape == () and blended[1]["blend"] != 0
    with pytest.raises(ValueError, match="blend must hold"):
        _map(5, 3, penalty=BlendedShapedLog()).check_params(
            shifted | {"blend": np.zeros(4)}
        )


def test_blended_log_stage_is_centred_on_the_blend():
    """Stage 2 is the shifted stage run on ``x~ + blend (x^(1) - x~)``."""
    K, eps, noisy, clean, rng = _problem(seed=20)
    pen = BlendedShapedLog()
    params = {"K": K, "eps": eps, "shape": _shape(rng, eps.shape)}
    params |= {"gain": _gain(rng, eps.shape), "blend": np.asarray(0.7)}
    N, H, W = noisy.shape
    umap = on_images(_map(5, 2, penalty=pen), (H, W), 3)
    X = noisy.reshape(N, -1)
    stages = umap.stages(params)
    x1 = umap.forward(stages[:1], X)[0]
    op = umap.operator(K)
    w, t = pen.stage_terms(op.apply(x1), params)
    expected = forward(
        op, X + 0.7 * (x1 - X), stages[1].steps, pen.stage_penalty(w, t), umap.alpha
    )[0]
    np.testing.assert_allclose(umap.forward(stages, X)[0], expected, rtol=1e-12)


def test_shifted_log_at_zero_gain_is_the_shaped_log_penalty():
    K, eps, noisy, clean, rng = _problem(seed=15)
    shaped = {"K": K, "eps": eps, "shape": _shape(rng, eps.shape)}
    gain = np.zeros((4, ShiftedShapedLog.n_segments + 1))
    one = images_loss_grad(_map(5, 3, penalty=ShapedLog()), shaped, noisy, clean)
    shifted = images_loss_grad(
        _map(5, 3, penalty=ShiftedShapedLog()), shaped | {"gain": gain}, noisy, clean
    )
    assert shifted[0] == pytest.approx(one[0], rel=1e-13)
    for name in shaped:
        np.testing.assert_allclose(shifted[1][name], one[1][name], rtol=1e-10)
    assert np.abs(shifted[1]["gain"]).max() > 0


def test_shifted_log_stage_terms_are_its_weights_and_targets():
    rng = np.random.default_rng(17)
    z = rng.standard_normal((5, 12)) * rng.uniform(0, 5, size=(5, 12))
    params = {"eps": rng.uniform(0.1, 1, 4), "shape": _shape(rng, (4,))}
    params["gain"] = _gain(rng, (4,))
    pen = ShiftedShapedLog()
    w, t = pen.stage_terms(z, params)
    np.testing.assert_array_equal(w, pen.weights(z, params))
    np.testing.assert_array_equal(t, pen.targets(z, params))
    with pytest.raises(ValueError, match="needs its targets"):
        pen.stage_penalty(w)
    w, t = ShapedLog().stage_terms(z, params)
    assert t is None
    np.testing.assert_array_equal(w, ShapedLog().weights(z, params))


def test_shifted_log_targets_interpolate_the_gain():
    rng = np.random.default_rng(16)
    eps = np.array([0.05, 0.3, 1.0])
    params = {"eps": eps, "shape": _shape(rng, (3,)), "gain": _gain(rng, (3,))}
    pen, h = ShiftedShapedLog(), ShiftedShapedLog.knot_spacing
    # At the knots u = i h, |z| = eps (e^{ih} - 1), the gain is the knot's value;
    # beyond the last knot it stays the last value.
    u = h * np.arange(pen.n_segments + 1)
    for sign in (1.0, -1.0):
        z = sign * eps * np.expm1(u)[:, None]
        z[0] = sign * 1e-300  # rho(0) = gain[:, 0]
        np.testing.assert_allclose(
            pen.targets(z, params), z * params["gain"].T, rtol=1e-12
        )
        far = sign * eps * np.expm1(u[-1] + np.array([[0.5], [7.0]]))
        np.testing.assert_allclose(
            pen.targets(far, params), far * params["gain"][:, -1], rtol=1e-12
        )
    # Halfway between two knots in u, the mean of their values.
    z = eps * np.expm1(h * 2.5) * np.ones((1, 3))
    np.testing.assert_allclose(
        pen.targets(z, params), z * params["gain"][:, 2:4].mean(axis=1), rtol=1e-12
    )


class Float64Log(Log):
    """The log penalty computing its weights in float64 whatever the input."""

    def weights(self, z, params):
        return super().weights(z.astype(np.float64), params)


@pytest.mark.parametrize(
    "penalty",
    [Log(), ShapedLog(), ShiftedShapedLog(), BlendedShapedLog(), Float64Log()],
)
def test_float32_gradient_agrees_with_float64(penalty):
    """In float32 the reweighted stages give the float64 gradient, to its precision.

    (A float64 weight inside the float32 solver once gave wrong ``eps`` and
    ``shape`` gradients while the loss stayed right.)
    """
    K, eps, noisy, clean, rng = _problem(seed=11, shape=(4, 12, 12))
    params = {"K": K, "eps": eps}
    if "shape" in penalty.param_names:
        params["shape"] = _shape(rng, eps.shape)
    if "gain" in penalty.param_names:
        params["gain"] = _gain(rng, eps.shape)
    if "blend" in penalty.param_names:
        params["blend"] = np.asarray(0.4)
    umap = _map(8, 2, penalty=penalty)
    loss64, g64 = images_loss_grad(umap, params, noisy, clean)
    loss32, g32 = images_loss_grad(
        umap,
        {k: v.astype(np.float32) for k, v in params.items()},
        noisy.astype(np.float32),
        clean.astype(np.float32),
    )
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    for name in params:
        assert g32[name].dtype == np.float32
        err = np.abs(g32[name] - g64[name]).max() / np.abs(g64[name]).max()
        assert err < 1e-3, name
