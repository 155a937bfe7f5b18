"""benchmarks/train_steps_cached.py: a stopped and resumed run is the run itself."""

import runpy
from pathlib import Path

import numpy as np
import pytest

from sklearn_ergo import load_denoiser
from sklearn_ergo._refinement import PARAM_NAMES

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "train_steps_cached.py"
MODEL = Path(__file__).parents[1] / "sklearn_ergo" / "pretrained" / "sigma25_fast.npz"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``run(out, *extra)``: a tiny run (4 Adam steps) on a tiny data folder."""
    pytest.importorskip("PIL")
    from PIL import Image

    data = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for folder, n in (("train400", 3), ("set12", 1)):
        (data / folder).mkdir()
        for i in range(n):
            # room for the windows' halo of every step of the model plus one
            image = rng.integers(0, 256, (56, 56), dtype=np.uint8)
            Image.fromarray(image).save(data / folder / f"{i}.png")
    main = runpy.run_path(str(SCRIPT))["main"]

    def run(out, *extra):
        main(
            [
                "--data", str(data), "--sigma", "25", "--model", str(MODEL),
                "--add", "1", "--train", "all", "--out", str(out), "--steps", "4",
                "--batch", "2", "--crop", "8", "--validate-every", "2", *extra,
            ]
        )  # fmt: skip

    return run


def test_resume_continues_the_run(run, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run(a, "--stop-at", "3")
    run(b, "--stop-at", "1")  # between validations
    assert not (b / "model.npz").exists()
    with pytest.raises(SystemExit, match="--resume"):
        run(b)  # a checkpoint is never overwritten silently
    with pytest.raises(SystemExit, match="other settings.*steps"):
        run(b, "--resume", "--steps", "5")
    run(b, "--resume", "--stop-at", "3")
    # Everything a step changes is where the run stopped in one piece.
    with np.load(a / "checkpoint.npz") as fa, np.load(b / "checkpoint.npz") as fb:
        assert fa.files == fb.files
        for key in set(fa.files) - {"elapsed"}:
            np.testing.assert_array_equal(fb[key], fa[key], err_msg=key)
    run(a, "--resume")
    run(b, "--resume")
    assert not (b / "checkpoint.npz").exists()
    models = [load_denoiser(d / "model.npz") for d in (a, b)]
    n_refine = load_denoiser(MODEL).n_refine + 1  # --add 1
    assert models[0].n_refine == models[1].n_refine == n_refine
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(
            getattr(models[1], name + "_"), getattr(models[0], name + "_")
        )

    def validations(folder):
        lines = (folder / "train.log").read_text().splitlines()
        return [line.split(", elapsed")[0] for line in lines if line.startswith("step")]

    assert validations(b) == validations(a)


def test_resume_needs_a_checkpoint(run, tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        run(tmp_path / "new", "--resume")


def test_threads_share_the_batch():
    """``--threads``: the groups' weighted means are the whole batch's."""
    from concurrent.futures import ThreadPoolExecutor

    from sklearn_ergo._refinement import Refinement

    script = runpy.run_path(str(SCRIPT))
    rng = np.random.default_rng(0)
    steps = Refinement(2, n_knots=9)
    params = steps.initial_params(8, 9)
    params["refine_phi"] = 0.1 * rng.standard_normal(params["refine_phi"].shape)
    params["refine_weight"] = np.array([0.1, 0.2])
    X = rng.uniform(size=(5, 14, 14))
    x = X + 0.1 * rng.standard_normal(X.shape)
    Y = X + 0.05 * rng.standard_normal(X.shape)
    whole = script["loss_grad"](steps, params, X, x, Y, 4, 3, 0.5)
    with ThreadPoolExecutor(2) as pool:  # groups of 3 and 2 windows
        shared = script["batch_loss_grad"](pool, 2, steps, params, X, x, Y, 4, 3, 0.5)
    np.testing.assert_allclose(shared[0], whole[0], rtol=1e-6)
    for name in PARAM_NAMES:
        np.testing.assert_allclose(
            shared[1][name], whole[1][name], rtol=1e-5, atol=1e-7
        )
