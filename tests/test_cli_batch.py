"""The ``denoise`` command on several files and folders, at any bit depth."""

import numpy as np
import pytest

from sklearn_ergo import denoise_image
from sklearn_ergo._cli import main
from sklearn_ergo._image_io import read_image, write_image

Image = pytest.importorskip("PIL.Image")

SIGMA = 25


def noisy_image(seed, scale=255, dtype=np.uint8, channels=None):
    rng = np.random.default_rng(seed)
    shape = (4, 4) if channels is None else (4, 4, channels)
    block = np.ones((12, 12) if channels is None else (12, 12, 1))
    clean = np.kron(rng.uniform(0.2, 0.8, size=shape), block)
    noisy = clean + SIGMA / 255 * rng.standard_normal(clean.shape)
    return clean, np.round(np.clip(noisy, 0, 1) * scale).astype(dtype)


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        write_image(src / f"img{k}.png", noisy_image(k)[1])
    (src / "broken.png").write_bytes(b"not a png")
    (src / "notes.txt").write_text("not an image")
    return src


def test_folder_with_a_bad_file(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["denoise", str(folder), "-o", str(out), "--sigma", "25"]) == 1
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png", "img2.png"]
    for k in range(3):
        expected = denoise_image(read_image(folder / f"img{k}.png"), SIGMA)
        np.testing.assert_array_equal(read_image(out / f"img{k}.png"), expected)
    assert "cannot read image" in captured.err and "broken.png" in captured.err
    assert captured.err.count("\n") == 1
    assert "skipped 1 file(s)" in captured.out
    assert "1 of 4 images failed" in captured.out
    assert captured.out.count("sigma 25.00 (given)") == 3


def test_several_files_blind_and_in_parallel(folder, tmp_path, capsys):
    out = tmp_path / "out"
    files = [str(folder / f"img{k}.png") for k in range(3)]
    assert main(["denoise", *files, "-o", str(out), "-j", "2"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "(estimated)" in x]
    assert len(lines) == 3
    for line in lines:
        level = float(line.split("sigma ")[1].split()[0])
        assert abs(level - SIGMA) < 0.15 * SIGMA
    for k in range(3):
        image = read_image(folder / f"img{k}.png")
        np.testing.assert_array_equal(
            read_image(out / f"img{k}.png"), denoise_image(image)
        )


def test_no_overwriting_without_overwrite(folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "img1.png").write_bytes(b"keep me")
    files = [str(folder / f"img{k}.png") for k in range(3)]
    argv = ["denoise", *files, "-o", str(out), "--sigma", "25"]
    assert main(argv) == 1
    assert "exists (use --overwrite)" in capsys.readouterr().err
    assert (out / "img1.png").read_bytes() == b"keep me"
    assert (out / "img0.png").exists() and (out / "img2.png").exists()
    assert main([*argv, "--overwrite"]) == 0
    assert read_image(out / "img1.png").shape == (48, 48)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_stays_16_bit(tmp_path, suffix):
    clean, image = noisy_image(5, scale=65535, dtype=np.uint16)
    src, dst = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    write_image(src, image)
    with Image.open(src) as img:
        assert img.mode == "I;16"
    assert main(["denoise", str(src), "-o", str(dst), "--sigma", "25"]) == 0
    with Image.open(dst) as img:
        assert img.mode == "I;16"
    out = read_image(dst)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, denoise_image(image, 25 * 257))
    assert (
        np.mean((out / 65535 - clean) ** 2) < np.mean((image / 65535 - clean) ** 2) / 4
    )


def test_data_range_for_12_bit_data_in_16_bit_files(tmp_path, capsys):
    clean, image = noisy_image(6, scale=4095, dtype=np.uint16)
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    write_image(src, image)
    argv = ["denoise", str(src), "-o", str(dst), "--sigma", "25"]
    assert main([*argv, "--data-range", "4095"]) == 0
    out = read_image(dst)
    expected = denoise_image(image, 25 * 4095 / 255, data_range=4095)
    np.testing.assert_array_equal(out, expected)
    assert np.mean((out / 4095 - clean) ** 2) < np.mean((image / 4095 - clean) ** 2) / 4
    # Blind: the printed level is in 8-bit units of the given range.
    assert main(["denoise", str(src), "-o", str(dst), "--overwrite"]) == 0
    assert main([*argv[:4], "--overwrite", "--data-range", "4095"]) == 0
    levels = [
        float(line.split("sigma ")[1].split()[0])
        for line in capsys.readouterr().out.splitlines()
    ]
    assert levels[1] < 2 and abs(levels[2] - SIGMA) < 0.2 * SIGMA
    assert main([*argv, "--data-range", "0"]) == 2


def test_rgba_keeps_alpha(tmp_path):
    _, rgb = noisy_image(6, channels=3)
    alpha = np.random.default_rng(7).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    rgba = np.dstack([rgb, alpha])
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    write_image(src, rgba)
    assert main(["denoise", str(src), "-o", str(dst), "--sigma", "25"]) == 0
    with Image.open(dst) as img:
        assert img.mode == "RGBA"
    out = read_image(dst)
    np.testing.assert_array_equal(out[:, :, 3], alpha)
    np.testing.assert_array_equal(out, denoise_image(rgba, 25, channel_axis=-1))


def test_read_image_keeps_the_bit_depth(tmp_path):
    image = np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) * 28
    write_image(tmp_path / "a.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), image)
    # Pillow would read a 16-bit colour PNG as 8 bits: refused.
    header = bytearray((tmp_path / "a.png").read_bytes())
    header[24:26] = bytes([16, 2])
    (tmp_path / "rgb16.png").write_bytes(bytes(header))
    with pytest.raises(ValueError, match="16-bit colour PNG"):
        read_image(tmp_path / "rgb16.png")


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d, t: ["denoise", str(t / "empty"), "-o", str(t / "o")], "no image"),
        (
            lambda d, t: ["denoise", str(d / "img0.png"), str(d), "-o", str(t / "o")],
            "several inputs are named img0.png",
        ),
    ],
)
def test_user_errors(folder, tmp_path, capsys, make_args, message):
    (tmp_path / "empty").mkdir()
    assert main(make_args(folder, tmp_path)) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_float_tiff_to_png_is_a_clear_error(tmp_path, capsys):
    _, image = noisy_image(8)
    src = tmp_path / "in.tif"
    write_image(src, (image / 255).astype(np.float32))
    assert main(["denoise", str(src), "-o", str(tmp_path / "out.png")]) == 1
    err = capsys.readouterr().err
    assert "cannot write image" in err and "float32" in err
    assert not list(tmp_path.glob(".*tmp"))  # no partial file left behind
    assert main(["denoise", str(src), "-o", str(tmp_path / "out.tif")]) == 0
    assert read_image(tmp_path / "out.tif").dtype == np.float32
