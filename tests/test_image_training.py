"""Training on image folders: loader, augmentation, Adam loop, checkpoints, CLI."""

import itertools

import numpy as np
import pytest

from sklearn_ergo import _image_training as it
from sklearn_ergo import load_denoiser
from sklearn_ergo._cli import main
from sklearn_ergo._optim import ParameterVector
from sklearn_ergo._pretrained import pretrained_denoiser
from sklearn_ergo.datasets import load_image_folder

Image = pytest.importorskip("PIL.Image")


def blocks(seed, n=4, size=6):
    rng = np.random.default_rng(seed)
    return np.kron(rng.uniform(0.2, 0.8, size=(n, n)), np.ones((size, size)))


def save_png(path, image):
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)


# -- load_image_folder ---------------------------------------------------------
def test_folder_sorted_gray_in_unit_range(tmp_path):
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "b.jpg", quality=100)
    Image.fromarray(np.full((4, 6), 255, np.uint8)).save(tmp_path / "a.tif")
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4)).save(
        tmp_path / "C.PNG"
    )
    (tmp_path / "README").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    images = load_image_folder(str(tmp_path))
    assert [im.shape for im in images] == [(3, 4), (4, 6), (5, 7)]  # C < a < b
    assert all(im.dtype == np.float64 for im in images)
    np.testing.assert_array_equal(images[0], np.arange(12).reshape(3, 4) / 255)
    np.testing.assert_array_equal(images[1], 1.0)
    # The luma of pure red 200: 0.299 * 200 = 59.8 (JPEG +-1).
    assert np.all(np.abs(images[2] * 255 - 59.8) <= 1)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no image file"):
        load_image_folder(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        load_image_folder(tmp_path)
    (tmp_path / "bad.png").unlink()
    Image.fromarray(np.full((3, 3), 2.5, np.float32)).save(tmp_path / "hdr.tif")
    with pytest.raises(ValueError, match="hdr.tif.*no \\[0, 1\\] scale"):
        load_image_folder(tmp_path)


def test_folder_of_16_bit_and_float_images(tmp_path):
    """Read at their own depth, as the denoise command reads them."""
    deep = np.arange(40000, 40012, dtype=np.uint16).reshape(3, 4)
    Image.fromarray(deep).save(tmp_path / "a.png")
    unit = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(unit).save(tmp_path / "b.tif")
    gray_alpha = np.stack([np.full((3, 4), 51, np.uint8), np.zeros((3, 4), np.uint8)])
    Image.fromarray(np.moveaxis(gray_alpha, 0, -1), mode="LA").save(tmp_path / "c.png")
    images = load_image_folder(tmp_path)
    np.testing.assert_array_equal(images[0], deep / 65535)
    np.testing.assert_array_equal(images[1], unit.astype(np.float64))
    np.testing.assert_array_equal(images[2], 0.2)


# -- augmentation --------------------------------------------------------------
def test_dihedral_transforms_form_the_group_of_the_square():
    x = np.arange(12.0).reshape(3, 4)
    images = [it.dihedral(x, t) for t in range(it.N_DIHEDRAL)]
    keys = [(im.shape, im.tobytes()) for im in images]
    assert len(set(keys)) == 8  # distinct on an asymmetric image
    np.testing.assert_array_equal(images[0], x)
    for a, b in itertools.product(range(8), repeat=2):
        composed = it.dihedral(images[a], b)
        assert (composed.shape, composed.tobytes()) in keys  # closed
    for a in range(8):  # every element has an inverse
        assert any(np.array_equal(it.dihedral(images[a], b), x) for b in range(8))


def test_random_crops_lie_inside_and_use_every_transform():
    images = [np.arange(30.0).reshape(5, 6), 100 + np.arange(16.0).reshape(4, 4)]
    rng = np.random.default_rng(0)
    crops = it.random_crops(images, 300, 3, rng)
    assert crops.shape == (300, 3, 3)
    windows = {
        (i, a, b, t): it.dihedral(im[a : a + 3, b : b + 3], t)
        for i, im in enumerate(images)
        for a in range(im.shape[0] - 2)
        for b in range(im.shape[1] - 2)
        for t in range(8)
    }
    seen = set()
    for crop in crops:
        matches = [k for k, w in windows.items() if np.array_equal(w, crop)]
        assert len(matches) == 1  # values are unique: one place, one transform
        seen.add(matches[0])
    assert {k[3] for k in seen} == set(range(8))
    assert {k[0] for k in seen} == {0, 1}
    # Border positions are drawn too (the crop may touch every edge).
    assert {(k[1], k[2]) for k in seen if k[0] == 0} >= {(0, 0), (2, 3)}


def test_benchmark_noise_depends_on_seed_and_place_only():
    images = [np.zeros((40, 50)), np.zeros((30, 30))]
    a = it.benchmark_noise(images, 0.1, seed=3)
    b = it.benchmark_noise(images[:1], 0.1, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(it.benchmark_noise(images, 0.1, seed=4)[0], a[0])
    assert abs(np.std(a[0]) - 0.1) < 0.01
    assert it.psnr(np.full((2, 2), 1.5), np.full((2, 2), 0.9)) == pytest.approx(20.0)


# -- the loop --------------------------------------------------------------------
def quiet(line):
    pass


def tiny_model():
    return it.ImageModel(n_filters=3, patch_size=3, n_layers=3, n_stages=2)


TRAIN = [blocks(seed) for seed in range(3)]
VAL = [blocks(10)[:16, :20]]
KW = dict(noise_std=25 / 255, n_steps=6, batch=2, crop=8, validate_every=2, seed=1)


def assert_same_run(a, b):
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
        np.testing.assert_array_equal(a.best_params[key], b.best_params[key])
    assert (a.step, a.best_step, a.best_psnr) == (b.step, b.best_step, b.best_psnr)
    # Columns 0-3 (step, loss, PSNR, learning rate); column 4 is wall time.
    np.testing.assert_array_equal(a.history[:, :4], b.history[:, :4])


def assert_same_checkpoint(path_a, path_b):
    (sa, fa, ca), (sb, fb, cb) = it.load_checkpoint(path_a), it.load_checkpoint(path_b)
    assert ca == cb and fa.to_json() == fb.to_json()
    for name in ("u", "adam_m", "adam_v", "best_u"):
        np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name))
    for name in ("step", "adam_t", "rng_state", "loss_sum", "loss_count"):
        assert getattr(sa, name) == getattr(sb, name)


def test_resume_continues_bit_for_bit(tmp_path):
    straight = it.train(
        tiny_model(), TRAIN, VAL, checkpoint=tmp_path / "a.npz", log=quiet, **KW
    )
    # Stop between two validations, so the running loss must carry over too.
    half = it.train(
        tiny_model(), TRAIN, VAL, checkpoint=tmp_path / "b.npz", until_step=3, **KW
    )
    assert half.step == 3 and not half.interrupted
    resumed = it.train(
        tiny_model(), TRAIN, VAL, checkpoint=tmp_path / "b.npz", resume=True, **KW
    )
    assert straight.step == resumed.step == 6
    assert_same_run(straight, resumed)
    assert_same_checkpoint(tmp_path / "a.npz", tmp_path / "b.npz")
    assert straight.history.shape == (4, 5)  # steps 0, 2, 4, 6
    assert not np.array_equal(straight.params["K"], half.params["K"])


class Interrupting:
    """The tiny model, interrupted (Ctrl-C) during its ``n``-th gradient."""

    def __init__(self, n):
        self.model, self.calls, self.n = tiny_model(), 0, n

    def __getattr__(self, name):
        return getattr(self.model, name)

    def loss_grad(self, params, noisy, clean):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.model.loss_grad(params, noisy, clean)


def test_interrupt_saves_the_last_finished_step(tmp_path):
    lines = []
    stopped = it.train(
        Interrupting(4),
        TRAIN,
        VAL,
        checkpoint=tmp_path / "c.npz",
        log=lines.append,
        **KW,
    )
    assert stopped.interrupted and stopped.step == 3
    assert "interrupted at step 3" in lines
    resumed = it.train(
        tiny_model(), TRAIN, VAL, checkpoint=tmp_path / "c.npz", resume=True, **KW
    )
    straight = it.train(tiny_model(), TRAIN, VAL, log=lines.append, **KW)
    assert_same_run(straight, resumed)


def test_resume_refuses_other_settings(tmp_path):
    it.train(
        tiny_model(), TRAIN, VAL, checkpoint=tmp_path / "d.npz", until_step=1, **KW
    )
    with pytest.raises(ValueError, match="other settings.*batch"):
        it.train(
            tiny_model(),
            TRAIN,
            VAL,
            checkpoint=tmp_path / "d.npz",
            resume=True,
            **{**KW, "batch": 3},
        )


def test_failed_checkpoint_write_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "e.npz"
    it.train(tiny_model(), TRAIN, VAL, checkpoint=path, until_step=2, **KW)
    before = path.read_bytes()
    state, flat, config = it.load_checkpoint(path)

    def failing_savez(f, **arrays):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(it.np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        it.save_checkpoint(path, state, flat, config)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["e.npz"]  # no temp file left


def test_flat_parameters_chain_rule():
    rng = np.random.default_rng(0)
    params = {"K": rng.normal(size=(2, 3, 4)), "eps": rng.uniform(0.1, 1, size=(2, 3))}
    flat = ParameterVector.from_params(params, positive=("eps",))
    u = flat.pack(params)
    for key in params:
        np.testing.assert_allclose(flat.unpack(u)[key], params[key], rtol=1e-15)
    weights = {k: rng.normal(size=v.shape) for k, v in params.items()}

    def loss(v):  # linear in params: its gradient is `weights`
        return sum(np.sum(weights[k] * p) for k, p in flat.unpack(v).items())

    du = flat.chain(weights, params)
    h = 1e-6
    fd = [(loss(u + h * e) - loss(u - h * e)) / (2 * h) for e in np.eye(len(u))]
    np.testing.assert_allclose(du, fd, rtol=1e-6)
    # Every group is of order 1 in u: K divided by its RMS, eps through log.
    assert flat.scales["eps"] is None
    assert flat.scales["K"] == pytest.approx(np.sqrt(np.mean(params["K"] ** 2)))


def test_cosine_schedule():
    assert it.cosine_learning_rate(0, 10, 0.5, 0.1) == 0.5
    assert it.cosine_learning_rate(5, 10, 0.5, 0.1) == pytest.approx(0.275)
    assert it.cosine_learning_rate(10, 10, 0.5, 0.1) == pytest.approx(0.05)


def test_saved_model_denoises_like_the_trained_parameters(tmp_path):
    model = tiny_model()
    result = it.train(model, TRAIN, VAL, log=quiet, **KW)
    it.save_model(model, result.best_params, 25 / 255, tmp_path / "m.npz")
    den = load_denoiser(tmp_path / "m.npz")
    noisy = it.benchmark_noise(VAL, 25 / 255)[0]
    # denoise runs the model in float32 (noisy is unclipped: no clipping).
    np.testing.assert_allclose(
        den.denoise(noisy), model.denoise(result.best_params, noisy[None])[0], atol=1e-5
    )


def test_fine_tuning_starts_as_denoise_applies_the_model_elsewhere(tmp_path):
    """``start`` + ``scale``: step 0 is the trained model as used at another level."""
    model = tiny_model()
    trained = it.train(model, TRAIN, VAL, log=quiet, **KW).best_params
    it.save_model(model, trained, 25 / 255, tmp_path / "m25.npz")
    den = load_denoiser(tmp_path / "m25.npz")
    # Some images darker than 0 after scaling: the median shift is exercised.
    images = [VAL[0], VAL[0] - 0.6]
    start = {"K": den.components_, "eps": den.eps_}
    tuned = it.ImageModel(
        n_filters=3, patch_size=3, n_layers=3, n_stages=2, start=start, scale=25 / 15
    )
    for x in images:
        noisy = it.benchmark_noise([x], 15 / 255)[0]
        np.testing.assert_allclose(
            tuned.denoise(start, noisy[None])[0],
            den.denoise(noisy, sigma=15 / 255),
            atol=1e-5,
        )
    result = it.train(tuned, TRAIN, VAL, log=quiet, **{**KW, "noise_std": 15 / 255})
    noisy = it.benchmark_noise(VAL, 15 / 255)[0]
    expected = it.psnr(den.denoise(noisy, sigma=15 / 255), VAL[0])
    assert result.history[0, 2] == pytest.approx(expected, abs=1e-4)
    it.save_model(tuned, result.params, 15 / 255, tmp_path / "m15.npz")
    assert load_denoiser(tmp_path / "m15.npz").noise_std_ == pytest.approx(25 / 255)


def test_from_denoiser_adds_neutral_parameters_and_larger_supports(tmp_path):
    model = tiny_model()
    trained = it.train(model, TRAIN, VAL, log=quiet, **KW).best_params
    it.save_model(model, trained, 25 / 255, tmp_path / "m.npz")
    den = load_denoiser(tmp_path / "m.npz")
    shaped = it.ImageModel.from_denoiser(den, 25 / 255, penalty="shaped_log")
    assert np.all(shaped.start["shape"] == 0) and shaped.scale == 1.0
    noisy = it.benchmark_noise(VAL, 25 / 255)[0][None]
    np.testing.assert_allclose(
        shaped.denoise(shaped.start, noisy), model.denoise(trained, noisy), atol=1e-12
    )
    # Zero gains too: the shaped model as it is.
    shifted = it.ImageModel.from_denoiser(den, 25 / 255, penalty="shifted_log")
    assert np.all(shifted.start["gain"] == 0)
    np.testing.assert_allclose(
        shifted.denoise(shifted.start, noisy), model.denoise(trained, noisy), atol=1e-12
    )
    # And a zero blend: the data terms stay on the noisy image.
    blended = it.ImageModel.from_denoiser(den, 25 / 255, penalty="blended_log")
    assert blended.start["blend"].shape == () and blended.start["blend"] == 0
    np.testing.assert_allclose(
        blended.denoise(blended.start, noisy), model.denoise(trained, noisy), atol=1e-12
    )
    wide = it.ImageModel.from_denoiser(den, 25 / 255, patch_size=5)
    K = wide.start["K"].reshape(-1, 5, 5)
    np.testing.assert_array_equal(K[:, 1:4, 1:4].reshape(-1, 9), trained["K"])
    assert np.all(K[:, 0] == 0) and np.all(K[:, :, 4] == 0)
    with pytest.raises(ValueError, match="do not fit"):
        it.ImageModel.from_denoiser(den, 25 / 255, patch_size=2)


def test_from_denoiser_appends_copies_of_the_last_stage(tmp_path):
    model = it.ImageModel(n_filters=3, patch_size=3, n_layers=3, per_stage=True)
    trained = it.train(model, TRAIN, VAL, log=quiet, **KW).best_params
    it.save_model(model, trained, 25 / 255, tmp_path / "m.npz")
    den = load_denoiser(tmp_path / "m.npz")
    deeper = it.ImageModel.from_denoiser(den, 25 / 255, n_stages=3)
    assert deeper.denoiser.n_stages == 3
    for key, value in trained.items():
        np.testing.assert_array_equal(deeper.start[key][:2], value)
        np.testing.assert_array_equal(deeper.start[key][2], value[1])
    # The third stage is one more majorize-minimize step: it changes the output.
    noisy = it.benchmark_noise(VAL, 25 / 255)[0][None]
    three = deeper.denoise(deeper.start, noisy)
    assert three.shape == noisy.shape
    assert not np.allclose(three, model.denoise(trained, noisy))
    result = it.train(deeper, TRAIN, VAL, log=quiet, **{**KW, "n_steps": 2})
    assert result.params["K"].shape == (3, 3, 9)
    with pytest.raises(ValueError, match="drop stages"):
        it.ImageModel.from_denoiser(den, 25 / 255, n_stages=1)
    # Shallower stages: the same parameters, unrolled to another depth.
    shallow = it.ImageModel.from_denoiser(den, 25 / 255, n_layers=2)
    assert shallow.denoiser.n_layers == 2 and shallow.settings()["n_layers"] == 2
    for key, value in trained.items():
        np.testing.assert_array_equal(shallow.start[key], value)
    assert not np.allclose(
        shallow.denoise(shallow.start, noisy), model.denoise(trained, noisy)
    )


def test_scaled_loss_is_the_loss_of_the_output_in_image_units():
    start = {"K": 0.3 * np.eye(3, 9, 1) - 0.1 * np.eye(3, 9), "eps": np.full(3, 0.05)}
    model = it.ImageModel(
        n_filters=3, patch_size=3, n_layers=3, n_stages=2, start=start, scale=2.5
    )
    rng = np.random.default_rng(0)
    clean = np.stack(TRAIN)[:, :8, :8] - 0.5  # medians below 0: shifted
    noisy = clean + 0.1 * rng.standard_normal(clean.shape)
    loss, grads = model.loss_grad(start, noisy, clean)
    out = model.denoise(start, noisy, pad=False)[:, 2:-2, 2:-2]
    expected = 0.5 * np.sum((out - clean[:, 2:-2, 2:-2]) ** 2) / len(noisy)
    assert loss == pytest.approx(expected, rel=1e-10)
    d = rng.standard_normal(start["K"].shape)
    h = 1e-6
    fd = (
        model.loss_grad({**start, "K": start["K"] + h * d}, noisy, clean)[0]
        - model.loss_grad({**start, "K": start["K"] - h * d}, noisy, clean)[0]
    ) / (2 * h)
    assert np.sum(grads["K"] * d) == pytest.approx(fd, rel=1e-6)


def test_image_model_errors():
    with pytest.raises(ValueError, match="not both"):
        it.ImageModel(init=np.zeros((48, 49)), start={"K": np.zeros((48, 49))})
    for bad in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="scale"):
            it.ImageModel(scale=bad)


# -- command line ------------------------------------------------------------------
def test_cli_train_data_folder_and_resume(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for seed in range(3):
        save_png(data / f"{seed}.png", blocks(seed))
    model = tmp_path / "model.npz"
    argv = ["train", "--data", str(data), "--sigma", "25", "-o", str(model)]
    argv += ["--n-filters", "3", "--patch-size", "3", "--n-layers", "3"]
    argv += ["--crop-size", "8", "--n-crops", "2", "--steps", "4"]
    argv += ["--validate-every", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "step 4/4: loss" in printed and "validation PSNR" in printed
    assert "done; saved the model of step" in printed
    assert load_denoiser(model).components_.shape == (3, 9)
    # The shaped log penalty: its own model (another checkpoint, to resume).
    shaped = tmp_path / "shaped.npz"
    argv_shaped = [*argv[:6], str(shaped), *argv[7:], "--penalty", "shaped_log"]
    assert main(argv_shaped) == 0
    assert load_denoiser(shaped).shape_.shape == (3, 8)
    # A non-local blend fitted after the model.
    blend = tmp_path / "blend.npz"
    assert main([*argv[:6], str(blend), *argv[7:], "--nonlocal-blend"]) == 0
    assert "fitting the non-local blend" in capsys.readouterr().out
    den = load_denoiser(blend)
    assert den.nonlocal_blend and den.nonlocal_.coef.shape == (16, 8, 2)
    # A refinement step after the stages, learned with them.
    refined = tmp_path / "refined.npz"
    argv_refined = [*argv[:6], str(refined), *argv[7:], "--n-refine", "1"]
    assert main(argv_refined) == 0
    assert load_denoiser(refined).refine_phi_.shape == (1, 8, 63)
    # The steps alone, after the stages of the model just trained.
    steps_only = tmp_path / "steps_only.npz"
    argv_steps = [*argv[:6], str(steps_only), *argv[7:], "--stages-fixed"]
    assert main([*argv_steps, "--start", str(refined)]) == 0
    trained = load_denoiser(refined)
    # (Equal up to the rounding of the optimiser's scaled parameter vector.)
    np.testing.assert_allclose(
        load_denoiser(steps_only).components_, trained.components_, rtol=1e-12
    )
    # The file holds the best validated step, maybe step 0: the run's last
    # parameters show what moved.
    last = _last_params(tmp_path / "steps_only.checkpoint.npz")
    np.testing.assert_allclose(last["K"], trained.components_, rtol=1e-12)
    assert not np.array_equal(last["refine_phi"], trained.refine_phi_)
    # Fine-tuning the shipped model at another level: its settings, its level.
    tuned = tmp_path / "tuned.npz"
    argv_tuned = ["train", "--data", str(data), "--sigma", "15", "-o", str(tuned)]
    argv_tuned += ["--crop-size", "8", "--n-crops", "2", "--steps", "2", "--start"]
    assert main([*argv_tuned, "shipped"]) == 0
    shipped, den = pretrained_denoiser(25), load_denoiser(tuned)
    assert den.components_.shape == shipped.components_.shape
    assert den.penalty == shipped.penalty and den.noise_std_ == shipped.noise_std_
    assert not np.array_equal(
        _last_params(tmp_path / "tuned.checkpoint.npz")["K"], shipped.components_
    )
    checkpoint = tmp_path / "model.checkpoint.npz"
    assert it.load_checkpoint(checkpoint)[0].step == 4
    # Resuming a finished run only rewrites the model file.
    assert main([*argv, "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    noisy = tmp_path / "noisy.png"
    save_png(noisy, blocks(5) + 0.1 * np.random.default_rng(0).normal(size=(24, 24)))
    out = tmp_path / "out.png"
    assert main(["denoise", str(noisy), "-o", str(out), "--model", str(model),
                 "--sigma", "25"]) == 0  # fmt: skip


def _last_params(checkpoint):
    state, flat, _ = it.load_checkpoint(checkpoint)
    return flat.unpack(state.u)


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "give clean image files or --data DIR"),
        (["--data", "missing-dir"], "is not a folder"),
        (["--data", ".", "x.png"], "not both"),
        (["x.png", "--start", "shipped"], "--start and --n-refine go with --data"),
        (["x.png", "--n-refine", "1"], "--start and --n-refine go with --data"),
        (["--data", ".", "--penalty", "l1"], "--data trains a reweighted model"),
    ],
)
def test_cli_train_data_errors(tmp_path, capsys, extra, message):
    assert main(["train", "--sigma", "25", "-o", str(tmp_path / "m"), *extra]) == 1
    assert message in capsys.readouterr().err
