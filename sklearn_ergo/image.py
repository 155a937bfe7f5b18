"""Whole-image denoising with learned convolutional analysis operators.

The lower level is ``min_x sum_j ||K P_j x||_1 + ||x - x~||^2 / 2`` over the
whole image (``../shared/MATH.md``, section 6), unrolled for ``n_layers``
Chambolle-Pock iterations with the operator of :mod:`._convolution`; loss,
exact gradient and chunked joblib parallelism are those of
:mod:`._unrolled`, which receive the operator through a factory.

Images are padded symmetrically by ``p - 1`` pixels before the (valid)
convolutional model runs and cropped afterwards, so border pixels lie in as
many patches as interior ones; training crops go through the same padding.

Step rule
---------
``G = ||.||^2 / 2`` is 1-strongly convex, so the accelerated variant of
Chambolle and Pock (2011, Algorithm 2) applies: ``theta_l = 1 / sqrt(1 +
2 tau_l)``, ``tau_{l+1} = theta_l tau_l``, ``sigma_{l+1} = sigma_l /
theta_l`` with ``sigma_l tau_l ||𝒦||^2 = 0.99^2`` at every layer.  The
primal step ``tau_0`` is fixed (the primal variable lives in image units), so
only the dual steps depend on ``K`` (``sigma_l ∝ ||𝒦||^-2``) and are
differentiated through.

Measured (``python benchmarks/bench_steps.py``: a 192x192 crop of
``camera``, noise 25/255, the anisotropic-TV operator with its weight tuned
per rule and per L; every rule costs the same per layer), PSNR in dB:

===  ==============  ===================  =====================
L    sigma = tau     best constant tau    accelerated, tau_0=0.1
===  ==============  ===================  =====================
10   26.18           27.86 (tau = 0.2)    27.89
20   27.05           27.92 (tau = 0.02)   27.94
30   27.43           27.94 (tau = 0.02)   27.94
100  27.88           27.93 (tau = 0.02)   27.93
===  ==============  ===================  =====================

The ratio ``sigma / tau`` is what matters at small L; acceleration adds
0.00-0.03 dB over the best constant ratio and needs no search over it.
(To reach the exact minimiser to many digits, thousands of layers, the plain
rule is faster: ``tests/test_image.py`` compares both.)
"""

import functools

import numpy as np

from ._chambolle_pock import StepSchedule
from ._convolution import ConvolutionalOperator
from ._prox import make_penalty
from ._reweighted import reweighted_denoise, reweighted_loss_grad
from ._unrolled import STEP_FACTOR, _denoise, _loss_grad, output_weights

#: Default initial primal step ``tau_0`` of the accelerated schedule.
TAU0 = 0.1


def accelerated_steps(norm, n_layers, tau0=TAU0):
    """Chambolle-Pock Algorithm 2 steps for a 1-strongly convex ``G``.

    Parameters
    ----------
    norm : float
        (An upper bound of) ``||𝒦||_2``.
    n_layers : int
    tau0 : float
        Initial primal step, independent of ``K``.

    Returns
    -------
    StepSchedule
        ``sigma_l tau_l norm^2 = 0.99^2``; ``sigma_l ∝ norm^-2`` and ``tau_l``,
        ``theta_l`` do not depend on ``norm`` (``sigma_power=2``,
        ``tau_power=0``).
    """
    tau = np.empty(n_layers)
    theta = np.empty(n_layers)
    t = float(tau0)
    for l in range(n_layers):
        tau[l] = t
        theta[l] = 1.0 / np.sqrt(1.0 + 2.0 * t)
        t *= theta[l]
    sigma = STEP_FACTOR**2 / (tau * norm**2)
    return StepSchedule(sigma, tau, theta, sigma_power=2.0, tau_power=0.0)


def tv_filters(patch_size):
    """The 2 forward differences (horizontal, vertical) on a ``p x p`` support.

    Applied at every position, ``||𝒦 x||_1`` is the anisotropic total
    variation of ``x``.
    """
    p = patch_size
    if p < 2:
        raise ValueError(f"patch_size must be at least 2, got {p}.")
    D = np.zeros((2, p, p))
    D[0, 0, :2] = [-1.0, 1.0]
    D[1, :2, 0] = [-1.0, 1.0]
    return D.reshape(2, p * p)


def initial_filters(n_filters, patch_size, rng, scale=0.2):
    """TV differences plus ``n_filters - 2`` zero-mean random filters.

    A filter's norm is its regularisation weight under ``F = ||.||_1`` and a
    filter with non-zero mean penalises brightness, so extra filters are
    zero-mean with norm ``scale`` times that of a difference (``sqrt(2)``).
    They cannot start at zero: ``F`` is even, so ``k = 0`` is a stationary
    point of the loss in each extra filter ``k``, and tiny filters escape it
    only slowly.
    """
    D = tv_filters(patch_size)
    if n_filters < 2:
        raise ValueError(f"n_filters must be at least 2, got {n_filters}.")
    extra = rng.standard_normal((n_filters - 2, patch_size**2))
    extra -= extra.mean(axis=1, keepdims=True)
    norms = np.maximum(np.linalg.norm(extra, axis=1, keepdims=True), 1e-12)
    extra *= scale * np.sqrt(2.0) / norms
    return np.vstack([D, extra])


def pad_images(images, patch_size):
    """Symmetric padding by ``p - 1`` on each side of ``(N, H, W)`` images."""
    w = patch_size - 1
    return np.pad(images, ((0, 0), (w, w), (w, w)), mode="symmetric")


def _factory(shape, patch_size):
    return functools.partial(
        ConvolutionalOperator, image_shape=shape, patch_size=patch_size
    )


def convolutional_loss_grad(
    K,
    noisy,
    clean,
    *,
    n_layers,
    unroll="last",
    penalty="l1",
    huber_eps=0.01,
    tau0=TAU0,
    n_jobs=None,
):
    """Loss and exact gradient of the convolutional unrolled denoiser in ``K``.

    Parameters
    ----------
    K : ndarray of shape (n_filters, p * p)
    noisy, clean : ndarray of shape (n_images, H, W)
        Images of one shape (already padded if padding is wanted); the loss
        is ``(1 / n_images) sum_i ||x^_i - x_i||^2 / 2`` over all pixels.
    n_layers, unroll, penalty, huber_eps
        As in :func:`sklearn_ergo.unrolled_loss_grad`.
    tau0 : float
        Initial primal step of :func:`accelerated_steps`.
    n_jobs : int, default=None
        joblib workers over chunks of images.

    Returns
    -------
    loss : float
    grad : ndarray of shape K.shape
    """
    p = int(round(np.sqrt(K.shape[1])))
    N, H, W = noisy.shape
    make_op = _factory((H, W), p)
    alpha = output_weights(n_layers, unroll)
    pen = make_penalty(penalty, huber_eps)
    norm, norm_grad = make_op(K).norm_and_grad()
    steps = accelerated_steps(norm, n_layers, tau0)
    return _loss_grad(
        K,
        noisy.reshape(N, H * W),
        clean.reshape(N, H * W),
        steps,
        norm,
        norm_grad,
        pen,
        alpha,
        n_jobs,
        make_op=make_op,
    )


def convolutional_log_loss_grad(
    K,
    eps,
    noisy,
    clean,
    *,
    n_layers,
    n_stages=2,
    unroll="last",
    tau0=TAU0,
    n_jobs=None,
):
    """Loss and exact gradients of the reweighted (log-penalty) convolutional model.

    The lower level is ``min_x sum_j eps_k log(1 + |(𝒦 x)_j| / eps_k) +
    ||x - x~||^2 / 2``, approximated by ``n_stages`` reweighted l1 stages of
    ``n_layers`` accelerated iterations each (:mod:`._reweighted`).

    Parameters
    ----------
    K : ndarray of shape (n_filters, p * p)
    eps : ndarray of shape (n_filters,)
        Positive scale of the log penalty of each filter.
    noisy, clean : ndarray of shape (n_images, H, W)
        As in :func:`convolutional_loss_grad`.
    n_layers : int
        Iterations per stage.
    n_stages : int, default=2
        Reweighted stages (1: the l1 model).
    unroll : {"last", "ergodic"}, default="last"
        Output of each stage.
    tau0 : float
    n_jobs : int, default=None

    Returns
    -------
    loss : float
    grad_K : ndarray of shape K.shape
    grad_eps : ndarray of shape eps.shape
    """
    p = int(round(np.sqrt(K.shape[1])))
    N, H, W = noisy.shape
    make_op = _factory((H, W), p)
    norm, norm_grad = make_op(K).norm_and_grad()
    return reweighted_loss_grad(
        K,
        _check_eps(eps, K),
        noisy.reshape(N, H * W),
        clean.reshape(N, H * W),
        accelerated_steps(norm, n_layers, tau0),
        norm,
        norm_grad,
        output_weights(n_layers, unroll),
        n_stages,
        n_jobs,
        make_op,
    )


def _check_eps(eps, K):
    eps = np.asarray(eps, dtype=np.float64)
    if eps.shape != (K.shape[0],) or not np.all((eps > 0) & np.isfinite(eps)):
        raise ValueError(
            f"eps must hold {K.shape[0]} positive finite numbers (one per filter), "
            f"got {eps!r}."
        )
    return eps


def convolutional_denoise(
    K,
    noisy,
    *,
    n_layers,
    unroll="last",
    penalty="l1",
    huber_eps=0.01,
    eps=None,
    n_stages=2,
    tau0=TAU0,
    pad=True,
    n_jobs=None,
):
    """Denoise ``(n_images, H, W)`` images with the convolutional model ``K``.

    With ``pad=True`` the images are padded symmetrically by ``p - 1`` pixels
    first and cropped back afterwards.  ``penalty="log"`` runs the reweighted
    model of :func:`convolutional_log_loss_grad` with scales ``eps`` and
    ``n_stages`` stages.
    """
    p = int(round(np.sqrt(K.shape[1])))
    w = p - 1 if pad else 0
    images = pad_images(noisy, p) if pad else noisy
    N, H, W = images.shape
    make_op = _factory((H, W), p)
    steps = accelerated_steps(make_op(K).norm_and_grad()[0], n_layers, tau0)
    flat = images.reshape(N, H * W)
    alpha = output_weights(n_layers, unroll)
    if penalty == "log":
        out = reweighted_denoise(
            K, _check_eps(eps, K), flat, steps, alpha, n_stages, n_jobs, make_op
        )
    else:
        pen = make_penalty(penalty, huber_eps)
        out = _denoise(K, flat, steps, pen, alpha, n_jobs, make_op=make_op)
    out = out.reshape(N, H, W)
    return out[:, w : H - w, w : W - w]
