"""Reaction-diffusion refinement steps after the unrolled stages."""

import dataclasses

import numpy as np
import pytest
import sklearn.base
from conftest import fd_relative_error

from sklearn_ergo import ImageDenoiser, load_denoiser, save_denoiser
from sklearn_ergo._convolutional import images_loss_grad, on_images
from sklearn_ergo._image_training import ImageModel
from sklearn_ergo._init import initial_filters
from sklearn_ergo._model_io import REFINED_FORMAT
from sklearn_ergo._operators import DenseOperator
from sklearn_ergo._penalties import L1, BlendedShapedLog, Huber, Log
from sklearn_ergo._refinement import Refinement, dct_filters
from sklearn_ergo._steps import AcceleratedSteps
from sklearn_ergo._unrolled_map import UnrolledMap


def _problem(refinement, penalty, n_stages, per_stage, seed=0, m=4, p=3):
    rng = np.random.default_rng(seed)
    clean = rng.uniform(size=(3, 9, 8))
    noisy = clean + 0.2 * rng.standard_normal(clean.shape)
    umap = UnrolledMap(
        5,
        "ergodic",
        penalty=penalty,
        steps=AcceleratedSteps(),
        n_stages=n_stages,
        per_stage=per_stage,
        refinement=refinement,
    )
    lead = (n_stages,) if per_stage else ()
    K = 0.3 * initial_filters(m, p, rng)
    if per_stage:
        K = np.stack([K * (1 - 0.2 * s) for s in range(n_stages)])
    params = {"K": K}
    for name in penalty.param_names:
        if name == "eps":
            params[name] = rng.uniform(0.02, 0.2, size=(*lead, m))
        elif name == "blend":
            params[name] = rng.uniform(0.2, 0.6, size=lead)
        else:
            params[name] = penalty.initial_param(name, (*lead, m))
    start = refinement.initial_params(p * p - 2, p * p)
    # Influence functions away from 0 (else the filters get no gradient) and
    # filters away from the DCT basis.
    start["refine_phi"] = 0.05 * rng.standard_normal(start["refine_phi"].shape)
    start["refine_filters"] += 0.1 * rng.standard_normal(start["refine_filters"].shape)
    start["refine_weight"] = rng.uniform(0.1, 0.3, size=refinement.n_steps)
    return umap, params | start, noisy, clean, rng


@pytest.mark.parametrize("n_steps", [1, 2])
@pytest.mark.parametrize(
    "penalty, n_stages, per_stage",
    [(L1(), 1, False), (Log(), 2, True), (BlendedShapedLog(), 2, False)],
    ids=["l1", "log-per-stage", "blended"],
)
def test_gradient_matches_finite_differences(n_steps, penalty, n_stages, per_stage):
    # Few knots: a direction's central difference then rarely straddles a
    # knot, where the influence function has a kink.
    refinement = Refinement(n_steps, n_knots=9, bound=0.5)
    umap, params, noisy, clean, rng = _problem(refinement, penalty, n_stages, per_stage)
    loss, grads = images_loss_grad(umap, params, noisy, clean, border=1)
    assert set(grads) == set(params)
    for name in params:

        def f(v, name=name):
            return images_loss_grad(umap, params | {name: v}, noisy, clean, border=1)[0]

        h = 1e-7 if name == "K" else 1e-6
        for _ in range(2):
            err = fd_relative_error(f, params[name], grads[name], rng, h=h)
            assert err <= 1e-6, name
        assert np.abs(grads[name]).max() > 0, name


def test_gradient_with_the_dense_operator():
    refinement = Refinement(2, n_knots=9, bound=0.5)
    rng = np.random.default_rng(3)
    X_clean = np.repeat(rng.uniform(size=(20, 3)), 3, axis=1)
    X_noisy = X_clean + 0.1 * rng.standard_normal(X_clean.shape)
    umap = UnrolledMap(6, "last", refinement=refinement)
    params = {"K": 0.2 * np.diff(np.eye(9), axis=0)} | refinement.initial_params(5, 9)
    params["refine_phi"] = 0.05 * rng.standard_normal(params["refine_phi"].shape)
    params["refine_weight"] = np.array([0.2, 0.1])
    loss, grads = umap.loss_grad(params, X_noisy, X_clean)
    for name in params:

        def f(v, name=name):
            return umap.loss_grad(params | {name: v}, X_noisy, X_clean)[0]

        err = fd_relative_error(f, params[name], grads[name], rng, h=1e-7)
        assert err <= 1e-6, name


def test_initial_steps_are_the_identity():
    refinement = Refinement(2)
    umap, params, noisy, _, _ = _problem(refinement, Log(), 2, False)
    params |= refinement.initial_params(7, 9)
    plain = dataclasses.replace(umap, refinement=None)
    base = {k: params[k] for k in plain.param_names}
    images = on_images(umap, noisy.shape[1:], 3)
    X = noisy.reshape(len(noisy), -1)
    out = images.apply(params, X)
    np.testing.assert_array_equal(
        out, on_images(plain, noisy.shape[1:], 3).apply(base, X)
    )


def test_step_is_reaction_diffusion():
    """Against a direct evaluation of ``x - R^T phi(R x) - lam (x - x~)``."""
    rng = np.random.default_rng(1)
    refinement = Refinement(1, n_knots=5, bound=1.0)
    R = rng.standard_normal((1, 3, 4))
    phi = rng.standard_normal((1, 3, 5))
    x, X = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    params = {"refine_filters": R, "refine_phi": phi, "refine_weight": np.array([0.3])}
    out, _ = refinement.forward(DenseOperator, params, x, X)
    Rc = R[0] - R[0].mean(axis=1, keepdims=True)
    knots = np.linspace(-1.0, 1.0, 5)
    z = x @ Rc.T
    value = np.stack(
        [[np.interp(z[i, k], knots, phi[0, k]) for k in range(3)] for i in range(2)]
    )
    np.testing.assert_allclose(out, x - value @ Rc - 0.3 * (x - X), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_steps_on_images_run_per_tile_on_threads(dtype):
    """The fused, threaded step equals its unfused evaluation."""
    from sklearn_ergo._convolutional import ConvolutionalOperator

    rng = np.random.default_rng(4)
    refinement = Refinement(2, n_knots=9, bound=1.0)
    params = refinement.initial_params(8, 9)
    params["refine_phi"] = 0.3 * rng.standard_normal(params["refine_phi"].shape)
    params["refine_weight"] = np.array([0.2, 0.0])
    X = rng.uniform(size=(2, 30 * 17)).astype(dtype)
    x = X + dtype(0.1) * rng.standard_normal(X.shape).astype(dtype)

    def operator(R):  # tiles of 2 rows of one image, two threads
        return ConvolutionalOperator(R, (30, 17), 3, n_threads=2, tile_positions=30)

    out, inputs = refinement.forward(operator, params, x, X, record=True)
    atol = 1e-5 if dtype == np.float32 else 1e-13
    expected = x
    for k in range(2):
        np.testing.assert_allclose(inputs[k], expected, rtol=0, atol=atol)
        R, phi, lam = refinement._step_params(params, k, dtype)
        op = ConvolutionalOperator(R, (30, 17), 3)
        z = op.apply(expected)
        value = refinement._influence(z, phi, grad=True)[0]
        expected = expected - op.adjoint(value) - dtype(lam) * (expected - X)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=0, atol=atol)


def test_dct_filters_are_an_orthonormal_zero_mean_basis():
    D = dct_filters(48, 49)
    np.testing.assert_allclose(D @ D.T, np.eye(48), atol=1e-12)
    np.testing.assert_allclose(D.sum(axis=1), 0.0, atol=1e-12)
    assert dct_filters(3, 5).shape == (3, 5)  # 1-D atoms
    with pytest.raises(ValueError, match="at most 48 zero-mean filters"):
        dct_filters(49, 49)


def test_parameters_are_checked():
    umap = UnrolledMap(3, refinement=Refinement(2))
    params = {"K": np.ones((2, 9))} | Refinement(2).initial_params(4, 9)
    umap.check_params(params)
    with pytest.raises(ValueError, match="refine_filters must have shape"):
        umap.check_params(params | {"refine_filters": np.ones((1, 4, 9))})
    with pytest.raises(ValueError, match="refine_phi must have shape"):
        umap.check_params(params | {"refine_phi": np.ones((2, 4, 8))})
    with pytest.raises(ValueError, match="params must hold"):
        umap.check_params({"K": np.ones((2, 9))})
    with pytest.raises(ValueError, match="no refinement"):
        UnrolledMap(3, "implicit", penalty=Huber(0.01), refinement=Refinement())


@pytest.fixture(scope="module")
def refined_denoiser():
    rng = np.random.default_rng(0)
    clean = np.kron(rng.uniform(size=(6, 6)), np.ones((8, 8)))
    den = ImageDenoiser(
        n_filters=4,
        patch_size=3,
        n_layers=5,
        penalty="log",
        n_refine=1,
        crop_size=24,
        n_crops=4,
        max_iter=4,
        redraw_every=2,
        noise_std=0.1,
        random_state=0,
    )
    return den.fit([clean]), clean, rng


def test_denoiser_learns_the_steps_and_saves_them(refined_denoiser, tmp_path):
    den, clean, rng = refined_denoiser
    assert den.refine_filters_.shape == (1, 8, 9)
    assert den.refine_phi_.shape == (1, 8, 63)
    assert np.abs(den.refine_phi_).max() > 0  # learned, not the identity
    noisy = clean + 0.1 * rng.standard_normal(clean.shape)
    save_denoiser(den, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        assert str(f["format"]) == REFINED_FORMAT
    loaded = load_denoiser(tmp_path / "m.npz")
    assert loaded.n_refine == 1
    np.testing.assert_array_equal(loaded.denoise(noisy), den.denoise(noisy))
    # Without the steps the output differs: they are applied.
    plain = sklearn.base.clone(loaded).set_params(n_refine=0)
    for name in ("components_", "eps_", "noise_std_"):
        setattr(plain, name, getattr(loaded, name))
    assert not np.array_equal(plain.denoise(noisy), den.denoise(noisy))
    # Refit without steps: no stale step attributes.
    den2 = sklearn.base.clone(den).set_params(n_refine=0, max_iter=1)
    den2.refine_phi_ = den.refine_phi_
    assert not hasattr(den2.fit([clean]), "refine_phi_")


def test_damaged_refined_file_is_refused(refined_denoiser, tmp_path):
    den = refined_denoiser[0]
    save_denoiser(den, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        fields = dict(f)
    np.savez(
        tmp_path / "no_phi.npz",
        **{k: v for k, v in fields.items() if k != "refine_phi"},
    )
    with pytest.raises(ValueError, match="damaged model: no \\['refine_phi'\\]"):
        load_denoiser(tmp_path / "no_phi.npz")
    for bad in ({"refine_phi": np.ones((1, 8, 5))}, {"refine_weight": np.array(0.1)}):
        np.savez(tmp_path / "bad.npz", **(fields | bad))
        with pytest.raises(ValueError, match="invalid refinement steps"):
            load_denoiser(tmp_path / "bad.npz")


def test_steps_added_to_a_trained_model_start_as_the_identity(refined_denoiser):
    den, clean, rng = refined_denoiser
    images = (clean + 0.1 * rng.standard_normal(clean.shape))[None]
    same = ImageModel.from_denoiser(den, 0.1)
    more = ImageModel.from_denoiser(den, 0.1, n_refine=3)
    p_same = same.initial_params(None, None, None)
    p_more = more.initial_params(None, None, None)
    assert p_more["refine_phi"].shape == (3, 8, 63)
    np.testing.assert_array_equal(p_more["refine_phi"][0], den.refine_phi_[0])
    np.testing.assert_allclose(
        more.denoise(p_more, images), same.denoise(p_same, images), atol=1e-12
    )
    assert more.settings()["n_refine"] == 3
    with pytest.raises(ValueError, match="would drop refinement steps"):
        ImageModel.from_denoiser(den, 0.1, n_refine=0)


def test_patch_model_takes_no_steps():
    with pytest.raises(ValueError, match="n_refine > 0 needs"):
        ImageDenoiser("patch", n_refine=1).fit([np.zeros((16, 16))])


def test_influence_by_blocks_is_the_whole(monkeypatch):
    from sklearn_ergo import _refinement

    rng = np.random.default_rng(2)
    refinement = Refinement(1, n_knots=7, bound=0.5)
    z = rng.uniform(-0.8, 0.8, size=(3, 40)).astype(np.float32)  # 10 filters
    phi = rng.standard_normal((10, 7)).astype(np.float32)
    whole = refinement._influence(z, phi, grad=True)
    monkeypatch.setattr(_refinement, "_BLOCK_BYTES", 100)  # 2 rows of 10 float32
    blocks = refinement._influence(z, phi, grad=True)
    for a, b in zip(whole, blocks, strict=True):
        np.testing.assert_array_equal(a, b)
    assert whole[0].dtype == np.float32 and whole[1].dtype == np.float32
    np.testing.assert_allclose(refinement._influence(z, phi), whole[0], atol=2e-6)
    assert np.all(whole[1][np.abs(z) >= 0.5] == 0)  # constant outside


def test_influence_is_the_piecewise_linear_interpolant():
    """Both paths (values alone, and with the gradient's terms) at the knots,
    between them and past the ends, against ``np.interp``."""
    rng = np.random.default_rng(3)
    refinement = Refinement(1, n_knots=7, bound=0.5)
    phi = rng.standard_normal((4, 7))
    knots = np.linspace(-0.5, 0.5, 7)
    z = np.concatenate([knots, rng.uniform(-0.7, 0.7, 30), [-0.9, 0.9]])
    z = np.repeat(z[:, None], 4, axis=1)
    expected = np.stack([np.interp(z[:, k], knots, phi[k]) for k in range(4)], 1)
    np.testing.assert_allclose(refinement._influence(z, phi), expected, atol=1e-15)
    np.testing.assert_allclose(
        refinement._influence(z, phi, grad=True)[0], expected, atol=1e-15
    )


def test_fixed_stages_give_the_steps_their_gradients_only():
    refinement = Refinement(2, n_knots=9, bound=0.5)
    umap, params, noisy, clean, _ = _problem(refinement, Log(), 2, True)
    loss, grads = images_loss_grad(umap, params, noisy, clean, border=1)
    loss_f, grads_f = images_loss_grad(
        umap, params, noisy, clean, border=1, stages_fixed=True
    )
    assert loss_f == pytest.approx(loss, rel=1e-12)
    for name in params:
        if name.startswith("refine_"):
            np.testing.assert_allclose(grads_f[name], grads[name], rtol=1e-10)
        else:
            assert grads_f[name].shape == params[name].shape
            assert not grads_f[name].any()
    plain = dataclasses.replace(umap, refinement=None)
    base = {k: params[k] for k in plain.param_names}
    with pytest.raises(ValueError, match="needs refinement steps"):
        images_loss_grad(plain, base, noisy, clean, stages_fixed=True)
    with pytest.raises(ValueError, match="needs n_refine > 0"):
        ImageModel(stages_fixed=True)
