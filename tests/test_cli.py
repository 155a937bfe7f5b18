"""End-to-end tests of the command line (``sklearn_ergo._cli.main``)."""

import subprocess
import sys

import numpy as np
import pytest

from sklearn_ergo import load_denoiser
from sklearn_ergo._cli import main

Image = pytest.importorskip("PIL.Image")


def blocks(seed, n=4, size=12):
    rng = np.random.default_rng(seed)
    return np.kron(rng.uniform(0.2, 0.8, size=(n, n)), np.ones((size, size)))


@pytest.fixture
def noisy_png(tmp_path):
    clean = blocks(0)
    noisy = clean + 25 / 255 * np.random.default_rng(1).standard_normal(clean.shape)
    path = tmp_path / "noisy.png"
    Image.fromarray(np.round(np.clip(noisy, 0, 1) * 255).astype(np.uint8)).save(path)
    return path, clean


def read(path):
    with Image.open(path) as img:
        return np.asarray(img, dtype=np.float64) / 255.0


def test_denoise_gray_and_rgb(noisy_png, tmp_path):
    path, clean = noisy_png
    out = tmp_path / "out.png"
    assert main(["denoise", str(path), "-o", str(out), "--sigma", "25"]) == 0
    before = np.mean((read(path) - clean) ** 2)
    assert np.mean((read(out) - clean) ** 2) < before / 3
    rgb = tmp_path / "rgb.jpg"
    Image.open(path).convert("RGB").save(rgb, quality=98)
    out_rgb = tmp_path / "out_rgb.tiff"
    assert main(["denoise", str(rgb), "-o", str(out_rgb), "--sigma", "25"]) == 0
    assert read(out_rgb).shape == clean.shape + (3,)


def test_denoise_fast(noisy_png, tmp_path):
    """``--fast`` writes what ``denoise_image(..., fast=True)`` gives."""
    from sklearn_ergo import denoise_image

    path, _ = noisy_png
    out = tmp_path / "out.png"
    assert main(["denoise", str(path), "-o", str(out), "--sigma", "25", "--fast"]) == 0
    with Image.open(path) as img:
        noisy = np.asarray(img)
    expected = denoise_image(noisy, 25.0, fast=True)
    with Image.open(out) as img:
        np.testing.assert_array_equal(np.asarray(img), expected)


@pytest.mark.parametrize("model", [False, True])
def test_denoise_self_ensemble(noisy_png, tmp_path, model):
    """``--self-ensemble N`` writes what the library gives with N copies."""
    from sklearn_ergo import denoise_image, save_denoiser
    from sklearn_ergo._pretrained import pretrained_denoiser

    path, _ = noisy_png
    out = tmp_path / "out.png"
    argv = ["denoise", str(path), "-o", str(out), "--sigma", "25"]
    if model:  # the shipped fast model of 25, given as a file
        file = tmp_path / "sigma25_fast.npz"
        save_denoiser(pretrained_denoiser(25, fast=True), file)
        argv += ["--model", str(file)]
    else:
        argv += ["--fast"]
    assert main([*argv, "--self-ensemble", "2"]) == 0
    with Image.open(path) as img:
        noisy = np.asarray(img)
    expected = denoise_image(noisy, 25.0, fast=True, self_ensemble=2)
    with Image.open(out) as img:
        written = np.asarray(img)
    np.testing.assert_array_equal(written, expected)
    assert not np.array_equal(written, denoise_image(noisy, 25.0, fast=True))


@pytest.mark.parametrize("model", [False, True])
def test_denoise_no_nonlocal(noisy_png, tmp_path, model):
    """``--no-nonlocal`` writes what the library gives without the blend."""
    from sklearn_ergo import denoise_image, save_denoiser
    from sklearn_ergo._pretrained import pretrained_denoiser

    path, _ = noisy_png
    out = tmp_path / "out.png"
    argv = ["denoise", str(path), "-o", str(out), "--sigma", "25", "--no-nonlocal"]
    if model:
        file = tmp_path / "sigma25.npz"
        save_denoiser(pretrained_denoiser(25), file)
        argv += ["--model", str(file)]
    assert main(argv) == 0
    with Image.open(path) as img:
        noisy = np.asarray(img)
    with Image.open(out) as img:
        written = np.asarray(img)
    np.testing.assert_array_equal(
        written, denoise_image(noisy, 25.0, nonlocal_blend=False)
    )


def test_bad_self_ensemble(noisy_png, tmp_path, capsys):
    path, _ = noisy_png
    argv = ["denoise", str(path), "-o", str(tmp_path / "o.png"), "--self-ensemble"]
    assert main([*argv, "3"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_fast_and_model_exclude_each_other(noisy_png, tmp_path, capsys):
    path, _ = noisy_png
    argv = ["denoise", str(path), "-o", str(tmp_path / "o.png"), "--fast"]
    assert main([*argv, "--model", "m.npz"]) == 2
    assert "not allowed with" in capsys.readouterr().err


def small_training(tmp_path):
    """The arguments of a quick ``train`` on one clean image file, and the model."""
    clean_path = tmp_path / "clean.png"
    Image.fromarray(np.round(blocks(2) * 255).astype(np.uint8)).save(clean_path)
    model = tmp_path / "model.npz"
    argv = ["train", str(clean_path), "--sigma", "25", "-o", str(model)]
    argv += ["--n-filters", "3", "--patch-size", "3", "--n-layers", "4"]
    argv += ["--crop-size", "16", "--n-crops", "2", "--max-iter", "1"]
    return argv, model


def denoises_with(model, noisy_png, tmp_path):
    out = tmp_path / "out.png"
    path, _ = noisy_png
    argv = ["denoise", str(path), "-o", str(out), "--sigma", "20", "--model"]
    assert main([*argv, str(model)]) == 0
    assert read(out).shape == read(path).shape


@pytest.mark.parametrize(
    "penalty", ["l1", "log", "shaped_log", "shifted_log", "blended_log"]
)
def test_train_then_denoise_with_model(noisy_png, tmp_path, capsys, penalty):
    argv, model = small_training(tmp_path)
    assert main([*argv, "--penalty", penalty, "--n-stages", "2"]) == 0
    printed = capsys.readouterr().out
    assert "validation PSNR" in printed
    # A reweighted penalty trains after the l1 model; the better one is saved.
    assert printed.count("training the") == (1 if penalty == "l1" else 2)
    assert f"training the {penalty} model" in printed
    saved = load_denoiser(model).penalty
    assert f"saved the {saved} model" in printed
    assert saved in ("l1", penalty)
    denoises_with(model, noisy_png, tmp_path)


def test_train_with_nonlocal_blend(noisy_png, tmp_path):
    argv, model = small_training(tmp_path)
    assert main([*argv, "--penalty", "l1", "--nonlocal-blend"]) == 0
    den = load_denoiser(model)
    assert den.nonlocal_blend and den.nonlocal_.coef.shape == (16, 8, 2)
    denoises_with(model, noisy_png, tmp_path)


@pytest.mark.parametrize(
    "make_args, status, message",
    [
        (
            lambda p, t: [
                "denoise",
                str(t / "none.png"),
                "-o",
                "x.png",
                "--sigma",
                "9",
            ],
            1,
            "cannot read image",
        ),
        (
            lambda p, t: [
                "denoise",
                str(p),
                "-o",
                str(t / "no" / "x.png"),
                "--sigma",
                "9",
            ],
            1,
            "cannot write image",
        ),
        (lambda p, t: ["denoise", str(p), "-o", "x.png", "--sigma", "-3"], 2, "sigma"),
        (lambda p, t: ["denoise", str(p), "-o", "x.png", "--sigma", "a"], 2, "number"),
        (
            lambda p, t: [
                "denoise",
                str(p),
                "-o",
                "x.png",
                "--sigma",
                "9",
                "--model",
                str(p),
            ],
            1,
            "Cannot read a model",
        ),
        (
            lambda p, t: [
                "train",
                str(p),
                "--sigma",
                "9",
                "-o",
                "m.npz",
                "--crop-size",
                "999",
            ],
            1,
            "at least 999x999",
        ),
    ],
)
def test_errors_are_one_line(noisy_png, tmp_path, capsys, make_args, status, message):
    path, _ = noisy_png
    assert main(make_args(path, tmp_path)) == status
    err = capsys.readouterr().err
    assert message in err
    if status == 1:
        assert err.count("\n") == 1


def test_subprocess_exit_status(tmp_path):
    code = (
        "import sys; from sklearn_ergo._cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = ["denoise", str(tmp_path / "missing.png"), "-o", "x.png", "--sigma", "25"]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        "python -m sklearn_ergo denoise: error: cannot read"
    )


def test_demo_subcommand_learns_and_reports(capsys):
    args = ["demo", "--n-patches", "2000", "--n-layers", "5", "--max-iter", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    psnrs = {
        name: float(line.split()[-2])
        for line in out.splitlines()
        for name in ("noisy input", "learned operator")
        if line.strip().startswith(name)
    }
    assert psnrs["learned operator"] > psnrs["noisy input"] + 3
    assert "gain of learning over tuned TV" in out


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "sklearn_ergo", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "demo" in result.stdout
