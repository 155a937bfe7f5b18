"""Record reference outputs of the code before the core was restructured.

Run on commit 74a8ed7 (``python tests/data/make_reference.py``); it writes
``tests/data/reference_74a8ed7.npz``, which ``tests/test_reference.py``
compares the current code against.  The inputs are rebuilt by
:func:`cases` in both places, so only the outputs are stored.
"""

import pathlib
import warnings

import numpy as np

OUT = pathlib.Path(__file__).with_name("reference_74a8ed7.npz")

#: (name, keyword arguments of unrolled_loss_grad / unrolled_denoise)
DENSE_CASES = [
    ("last_l1", dict(n_layers=7)),
    ("ergodic_l1", dict(n_layers=7, unroll="ergodic")),
    (
        "ergodic_linear_huber",
        dict(
            n_layers=7,
            unroll="ergodic",
            ergodic_weights="linear",
            penalty="huber",
            huber_eps=0.05,
        ),
    ),
    (
        "ergodic_custom",
        dict(n_layers=5, unroll="ergodic", ergodic_weights=[0.0, 1.0, 2.0, 0.5, 3.0]),
    ),
    ("last_fixed_steps", dict(n_layers=9, sigma=0.3, tau=0.4)),
    (
        "last_huber_fixed",
        dict(n_layers=9, penalty="huber", huber_eps=0.02, sigma=0.3, tau=0.4),
    ),
    (
        "implicit_huber",
        dict(n_layers=1, unroll="implicit", penalty="huber", huber_eps=0.05),
    ),
]


def dense_inputs(dtype=np.float64):
    rng = np.random.default_rng(42)
    n, m, N = 9, 12, 50
    X_clean = np.repeat(rng.uniform(size=(N, 3)), 3, axis=1)
    X_noisy = X_clean + 0.1 * rng.standard_normal(X_clean.shape)
    K = 0.3 * rng.standard_normal((m, n)) / np.sqrt(n)
    return K.astype(dtype), X_noisy.astype(dtype), X_clean.astype(dtype)


def conv_inputs():
    rng = np.random.default_rng(7)
    clean = np.kron(rng.uniform(size=(2, 4, 4)), np.ones((1, 5, 5)))
    noisy = clean + 0.1 * rng.standard_normal(clean.shape)
    K = 0.05 * rng.standard_normal((6, 9))
    eps = np.exp(rng.uniform(-3, -1, size=6))
    return K, eps, noisy, clean


def reference_image():
    """A 96x96 gray crop of scikit-learn's china.jpg with fixed noise (float)."""
    from sklearn_ergo.datasets import load_gray_image

    clean = load_gray_image("china.jpg")[100:196, 200:296]
    rng = np.random.default_rng(3)
    return clean, rng.standard_normal(clean.shape)


def demo_fit(solver):
    """``AnalysisOperatorLearner`` fitted on patches of the demo image, and X."""
    from sklearn_ergo import AnalysisOperatorLearner
    from sklearn_ergo.datasets import make_noisy_patches

    X, Y = make_noisy_patches("china.jpg", 1500, noise_std=0.1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fixed budget of iterations
        est = AnalysisOperatorLearner(
            n_layers=8, max_iter=4, solver=solver, random_state=0
        ).fit(X, Y)
    return est, X


def record():
    from sklearn_ergo.image import (
        convolutional_denoise,
        convolutional_log_loss_grad,
        convolutional_loss_grad,
    )

    from sklearn_ergo import (
        denoise_image,
        unrolled_denoise,
        unrolled_loss_grad,
    )

    out = {}
    for dtype in (np.float64, np.float32):
        K, X, Y = dense_inputs(dtype)
        tag = np.dtype(dtype).name
        for name, kw in DENSE_CASES:
            loss, grad = unrolled_loss_grad(K, X, Y, **kw)
            out[f"dense/{tag}/{name}/loss"] = np.array(loss)
            out[f"dense/{tag}/{name}/grad"] = grad
            out[f"dense/{tag}/{name}/denoise"] = unrolled_denoise(K, X, **kw)
    K, eps, noisy, clean = conv_inputs()
    for unroll in ("last", "ergodic"):
        loss, grad = convolutional_loss_grad(K, noisy, clean, n_layers=6, unroll=unroll)
        out[f"conv/l1/{unroll}/loss"], out[f"conv/l1/{unroll}/grad"] = (
            np.array(loss),
            grad,
        )
        for n_stages in (1, 3):
            loss, gK, ge = convolutional_log_loss_grad(
                K, eps, noisy, clean, n_layers=6, n_stages=n_stages, unroll=unroll
            )
            key = f"conv/log{n_stages}/{unroll}"
            out[f"{key}/loss"], out[f"{key}/grad_K"], out[f"{key}/grad_eps"] = (
                np.array(loss),
                gK,
                ge,
            )
    loss, grad = convolutional_loss_grad(
        K, noisy, clean, n_layers=6, penalty="huber", huber_eps=0.02
    )
    out["conv/huber/loss"], out["conv/huber/grad"] = np.array(loss), grad
    out["conv/denoise/l1"] = convolutional_denoise(K, noisy, n_layers=6)
    out["conv/denoise/log"] = convolutional_denoise(
        K, noisy, n_layers=6, penalty="log", eps=eps, n_stages=2
    )

    for solver in ("lbfgs", "adam"):
        est, X = demo_fit(solver)
        out[f"fit/{solver}/components"] = est.components_
        out[f"fit/{solver}/loss_curve"] = np.array(est.loss_curve_)
        out[f"fit/{solver}/predict"] = est.predict(X[:200])

    clean, noise = reference_image()
    for sigma in (15, 20, 50):
        out[f"denoise_image/{sigma}"] = denoise_image(
            clean + sigma / 255 * noise, sigma / 255
        )
    return out


if __name__ == "__main__":
    np.savez_compressed(OUT, **record())
    print(f"wrote {OUT}")
