"""``ImageDenoiser``: learn a denoiser from clean images, apply it to whole images."""

import dataclasses
import functools
import math
import time
import warnings
from numbers import Integral, Real

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import check_array, check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._analysis_operator import AnalysisOperatorLearner
from ._convolutional import (
    ConvolutionalOperator,
    denoise_images,
    images_loss_grad,
    pad_images,
    patch_size_of,
)
from ._ensemble import TRANSFORMS, self_ensemble
from ._image_data import as_planes, median_shift
from ._init import initial_filters
from ._nonlocal import fit_nonlocal_blend
from ._optim import (
    BestTracker,
    ParameterVector,
    StopKeepingBest,
    lbfgs,
    search_log_scale,
)
from ._parallel import workers
from ._penalties import PENALTIES, make_penalty
from ._refinement import Refinement
from ._steps import AcceleratedSteps
from ._unrolled_map import UnrolledMap

# BT.601 luma, as in skimage.color.rgb2gray, for training on colour images.
_LUMA = np.array([0.299, 0.587, 0.114])
# Fitted attributes of learned parameters (``eps_`` of "log", ``refine_*_``).
_PARAM_NAMES = [n for cls in PENALTIES.values() for n in cls.param_names]
_PARAM_ATTRIBUTES = {f"{n}_" for n in (*_PARAM_NAMES, *Refinement.param_names)}
# Overlapping patches are taken every _PATCH_STRIDE pixels by the
# structure="patch" denoiser: 16x fewer patches than stride 1.
_PATCH_STRIDE = 4


def as_float_image(image, name="image"):
    """Validate an image; return it as float64 in ``[0, 1]`` and its input dtype.

    uint8 images are divided by 255; float images must already be in
    ``[0, 1]`` (up to noise).  2-D (gray) and ``(H, W, 3)`` (RGB) images are
    accepted.
    """
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        out = arr.astype(np.float64) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float64)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{name} contains NaN or infinite values.")
        # Noisy data strays outside [0, 1]; 0-255 data is far outside.
        if out.size and (out.min() < -2.0 or out.max() > 3.0):
            raise ValueError(
                f"{name} has float values in [{out.min():.3g}, {out.max():.3g}]; "
                "float images must be in [0, 1] (divide 8-bit data by 255, or pass "
                "it as uint8)."
            )
    else:
        raise TypeError(
            f"{name} must be uint8 or floating point, got dtype {arr.dtype}."
        )
    if not (out.ndim == 2 or (out.ndim == 3 and out.shape[2] == 3)):
        raise ValueError(
            f"{name} must be a 2-D gray image or an (H, W, 3) RGB image, got shape "
            f"{arr.shape}."
        )
    return out, arr.dtype


def _gray(image):
    return image @ _LUMA if image.ndim == 3 else image


class ImageDenoiser(TransformerMixin, BaseEstimator):
    r"""Gaussian image denoiser with a learned (convolutional) analysis operator.

    With ``structure="convolutional"`` the denoised image is ``n_layers``
    unrolled Chambolle-Pock iterations on

    .. math::

        \min_x \ \sum_j \|K P_j x\|_1 + \tfrac12 \|x - \tilde x\|^2

    where ``P_j`` extracts the ``p x p`` patch at position ``j``: the same
    ``n_filters`` filters at every position, one problem per image.  ``fit``
    starts from anisotropic total variation (the two forward differences)
    plus small zero-mean filters, with their common weight tuned, and
    minimises the mean squared error over random crops with the exact
    gradient of the unrolled map.
    With ``structure="patch"`` an :class:`AnalysisOperatorLearner` denoises
    ``p x p`` patches independently and the overlaps are averaged.

    Parameters
    ----------
    structure : {"convolutional", "patch"}, default="convolutional"
    n_filters : int, default=None
        Number of filters (rows of ``K``).  ``None``: the rows of ``init``
        if it is an array, else 8 (convolutional), or the finite differences
        of the patch (patch).
    patch_size : int, default=None
        Filter size (convolutional; ``None``: that of ``init`` if it is an
        array, else 5) or patch size (patch; ``None``: 8).
    n_layers : int, default=30
        Unrolled iterations.
    unroll : {"last", "ergodic"}, default="last"
    penalty : str, default="l1"
        ``F``, one of ``"l1"``, ``"huber"``, ``"log"``, ``"shaped_log"``,
        ``"shifted_log"`` or ``"blended_log"``: the l1 norm, its Huber
        smoothing, or (convolutional only) the non-convex
        ``sum_j eps_k log(1 + |(𝒦 x)_j| / eps_k)`` with a learned scale
        ``eps_k`` per filter, minimised by ``n_stages`` reweighted l1 stages of
        ``n_layers`` iterations each (``docs/math.md``, section 6): it
        penalises large filter responses (edges) less than small ones (noise).
        ``"shaped_log"`` also learns the shape of each filter's concave penalty
        (``shape_``), starting from the log penalty; ``"shifted_log"`` also
        centres each later stage's l1 term on a learned gain of the previous
        stage's responses (``gain_``), starting from zero gains
        (``"shaped_log"``); ``"blended_log"`` also centres each later stage's
        data term on a learned blend of the noisy image and the previous
        stage's output (``blend_``), starting from the noisy image
        (``"shifted_log"``).  A log model is best started from the filters of
        a trained l1 model (``init``); the shipped model, ``"blended_log"``
        with per-stage filters and refinement steps (``n_refine=1``; 4 at
        sigma = 25, 2 at 50), was trained on Train400 by ``benchmarks/train_bsd.py``
        and ``benchmarks/train_steps_cached.py``.
    huber_eps : float, default=0.01
    init : "tv" or array-like of shape (n_filters, patch_size ** 2), default="tv"
        Initial filters (convolutional): anisotropic TV plus small zero-mean
        filters, or given filters, e.g. the ``components_`` of a model with
        another penalty; their common weight (and, for ``penalty="log"``,
        the scale of ``eps``) is tuned before learning.
    n_stages : int, default=2
        Reweighted stages of ``penalty="log"``, ``"shaped_log"``,
        ``"shifted_log"`` or ``"blended_log"`` (``n_stages`` times the cost
        of the l1 model); ignored otherwise.
    per_stage : bool, default=False
        Give every reweighted stage its own filters and scales ``eps`` (like
        the time-dependent filters of TNRD), all starting from the same
        initial model; ``components_`` and ``eps_`` then have a leading axis
        of ``n_stages``.  Only with a reweighted penalty (``"log"``,
        ``"shaped_log"``, ``"shifted_log"``, ``"blended_log"``).
    n_refine : int, default=0
        Reaction-diffusion steps after the unrolled stages (convolutional):
        each maps ``x`` to ``x - R^T phi(R x) - lam (x - x~)`` with its own
        ``patch_size ** 2 - 1`` zero-mean filters ``R``, a learned piecewise
        linear influence function ``phi`` per filter and a learned weight
        ``lam`` (TNRD's step; ``docs/math.md``, section 12).  They start as
        the identity and cost two convolutions each.
    noise_std : float, default=25/255
        Standard deviation of the Gaussian noise added to clean training
        images (float units, images in ``[0, 1]``).  Ignored when ``fit``
        receives noisy/clean pairs.
    crop_size : int, default=64
        Side of the square training crops (convolutional).
    n_crops : int, default=16
        Crops per draw (convolutional).
    max_patches : int, default=10000
        Patches per draw (patch).
    max_iter : int, default=40
        Total L-BFGS iterations.
    redraw_every : int, default=10
        Fresh crops and noise are drawn every ``redraw_every`` iterations
        (L-BFGS restarts from the current operator): a fixed noise draw
        over-fits.
    color : {"opponent", "per_channel"}, default="opponent"
        RGB images are denoised channel by channel in an orthonormal opponent
        colour space (luminance and two chrominance axes, where i.i.d. RGB
        noise stays i.i.d. with the same deviation), or in RGB directly.
        Training uses the luminance of colour images.
    self_ensemble : {1, 2, 4, 8}, default=1
        Copies of every image denoised (``denoise``, ``transform``): the
        image, then its transpose, its rotation by 180 degrees and its
        anti-transpose, then the other four flips and rotations; the outputs,
        mapped back, are averaged.  The time grows in proportion; on Set12
        the shipped models gained about 0.04 / 0.06 / 0.07 dB with 2 / 4 / 8
        copies at 15, 25 and 50 without their non-local blend, which comes
        after the average (``benchmarks/bench_self_ensemble.py``).  Not used
        in training.
    nonlocal_blend : bool, default=False
        After the model, blend in a non-local means of the image weighted by
        the model's output (pixels within 20 of each other whose 5x5
        patches agree), by coefficients per class of pixel (how many similar
        patches it has, how much the means differ from the output) fitted by
        least squares: ``fit`` fits them on the training images (one noise
        draw, after the model), ``denoise`` applies them.  It recovers some
        of what repeats elsewhere in an image, which the model's filters
        cannot see: on Set12 the shipped models gained 0.05-0.16 dB at every
        level from 5 to 75 (``benchmarks/DENOISE_RESULTS.md``; the math:
        ``docs/math.md``, section 13).  ``python -m sklearn_ergo train
        --nonlocal-blend`` fits one after a command-line training.
    n_jobs : int, default=None
        joblib workers over crops (fit) and images (transform); ``None``:
        every core, in threads, unless a ``joblib.parallel_config`` says
        otherwise.
    random_state : int, RandomState instance or None, default=None
        Seeds crops, noise and the initial filters.
    verbose : int, default=0
        Print the training loss and validation PSNR after every draw.

    Attributes
    ----------
    components_ : ndarray of shape ([n_stages,] n_filters, patch_size ** 2)
        The learned filters (convolutional), acting on images in ``[0, 1]``;
        one set per stage with ``per_stage=True``.
    patch_estimator_ : AnalysisOperatorLearner
        The fitted patch model (patch).
    noise_std_ : float
        Noise level the model was trained for (``noise_std``, or the RMS of
        ``noisy - clean`` for pairs).
    loss_curve_ : list of float
        Training loss after every draw (entry 0: the initial operator).
    validation_psnr_ : list of float
        PSNR (dB) on a fixed held-out draw (other noise, other crops) after
        every draw; the best operator on it is kept (convolutional).
    eps_ : ndarray of shape ([n_stages,] n_filters)
        Learned scales of the log penalty (every reweighted ``penalty``).
    shape_ : ndarray of shape ([n_stages,] n_filters, 8)
        Learned shape of each filter's penalty (``penalty="shaped_log"``,
        ``"shifted_log"`` or ``"blended_log"``): the log-slopes of its weight
        curve, 0 for the log penalty.
    gain_ : ndarray of shape ([n_stages,] n_filters, 9)
        Learned gain of each filter (``penalty="shifted_log"`` or
        ``"blended_log"``): its values at the knots of the shape, by which a
        stage's target multiplies the previous stage's response; 0 for
        ``"shaped_log"``.
    blend_ : ndarray of shape ([n_stages,])
        Learned blend of each stage (``penalty="blended_log"``): stage ``s >
        1`` stays close to ``x~ + blend_[s] (x^(s-1) - x~)``; 0 for
        ``"shifted_log"``.
    refine_filters_ : ndarray of shape (n_refine, patch_size ** 2 - 1, patch_size ** 2)
        Filters of the refinement steps (``n_refine > 0``), used less their
        mean.
    refine_phi_ : ndarray of shape (n_refine, patch_size ** 2 - 1, 63)
        Values of each step's influence functions at 63 knots spanning
        ``[-0.6, 0.6]``.
    refine_weight_ : ndarray of shape (n_refine,)
        Reaction weight ``lam`` of each step.
    nonlocal_ : NonLocalBlend
        The fitted blend (``nonlocal_blend=True``).
    init_weight_ : float
        Tuned weight of the initial operator (convolutional).
    n_iter_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ergo import ImageDenoiser
    >>> rng = np.random.default_rng(0)
    >>> clean = np.kron(rng.uniform(size=(8, 8)), np.ones((8, 8)))  # 64x64 blocks
    >>> den = ImageDenoiser(n_layers=10, crop_size=32, n_crops=4, max_iter=4,
    ...                     noise_std=0.1, random_state=0).fit([clean])
    >>> noisy = clean + 0.1 * rng.standard_normal(clean.shape)
    >>> out = den.denoise(noisy)
    >>> bool(np.mean((out - clean) ** 2) < np.mean((noisy - clean) ** 2) / 4)
    True
    """

    _parameter_constraints: dict = {
        "structure": [StrOptions({"convolutional", "patch"})],
        "n_filters": [Interval(Integral, 2, None, closed="left"), None],
        "patch_size": [Interval(Integral, 2, None, closed="left"), None],
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "unroll": [StrOptions({"last", "ergodic"})],
        "penalty": [StrOptions(set(PENALTIES))],
        "huber_eps": [Interval(Real, 0, None, closed="neither")],
        "init": [StrOptions({"tv"}), "array-like"],
        "n_stages": [Interval(Integral, 1, None, closed="left")],
        "per_stage": ["boolean"],
        "n_refine": [Interval(Integral, 0, None, closed="left")],
        "noise_std": [Interval(Real, 0, None, closed="neither")],
        "crop_size": [Interval(Integral, 4, None, closed="left")],
        "n_crops": [Interval(Integral, 1, None, closed="left")],
        "max_patches": [Interval(Integral, 2, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "redraw_every": [Interval(Integral, 1, None, closed="left")],
        "color": [StrOptions({"opponent", "per_channel"})],
        "self_ensemble": [Options(Integral, set(TRANSFORMS))],
        "nonlocal_blend": ["boolean"],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        structure="convolutional",
        *,
        n_filters=None,
        patch_size=None,
        n_layers=30,
        unroll="last",
        penalty="l1",
        huber_eps=0.01,
        init="tv",
        n_stages=2,
        per_stage=False,
        n_refine=0,
        noise_std=25 / 255,
        crop_size=64,
        n_crops=16,
        max_patches=10000,
        max_iter=40,
        redraw_every=10,
        color="opponent",
        self_ensemble=1,
        nonlocal_blend=False,
        n_jobs=None,
        random_state=None,
        verbose=0,
    ):
        self.structure = structure
        self.n_filters = n_filters
        self.patch_size = patch_size
        self.n_layers = n_layers
        self.unroll = unroll
        self.penalty = penalty
        self.huber_eps = huber_eps
        self.init = init
        self.n_stages = n_stages
        self.per_stage = per_stage
        self.n_refine = n_refine
        self.noise_std = noise_std
        self.crop_size = crop_size
        self.n_crops = n_crops
        self.max_patches = max_patches
        self.max_iter = max_iter
        self.redraw_every = redraw_every
        self.color = color
        self.self_ensemble = self_ensemble
        self.nonlocal_blend = nonlocal_blend
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # -- data --------------------------------------------------------------
    def _patch_size(self):
        if self.patch_size is not None:
            return self.patch_size
        init = self._given_init()
        if init is not None:
            return max(math.isqrt(init.shape[1]), 1)
        return 5 if self.structure == "convolutional" else 8

    def _given_init(self):
        if isinstance(self.init, str):
            return None
        return check_array(self.init, input_name="init")

    def _initial_filters(self, p, rng):
        """The filters learning starts from, and the centre of their weight's search."""
        D = self._given_init()
        if D is None:
            # The weight of TV is of the order of the noise level.
            return initial_filters(self.n_filters or 8, p, rng), np.log(self.noise_std_)
        n = self.n_filters or D.shape[0]
        if D.shape != (n, p * p) or not np.all(np.isfinite(D)) or not D.any():
            raise ValueError(
                f"init must be finite, non-zero filters of shape ({n}, {p * p}) "
                f"(n_filters, patch_size ** 2), got shape {D.shape}."
            )
        return D.astype(np.float64), 0.0

    def _validate_images(self, images, name, min_size):
        if isinstance(images, np.ndarray) and (
            images.ndim == 2 or (images.ndim == 3 and images.shape[2] == 3)
        ):
            images = [images]  # one gray or one RGB image
        if len(images) == 0:
            raise ValueError(f"{name} is empty; give at least one image.")
        out = []
        for i, image in enumerate(images):
            arr = _gray(as_float_image(image, f"{name}[{i}]")[0])
            if min(arr.shape) < min_size:
                raise ValueError(
                    f"{name}[{i}] has shape {arr.shape}; images must be at least "
                    f"{min_size}x{min_size} pixels."
                )
            out.append(arr)
        return out

    def _draw(self, clean, noisy, size, n, rng):
        """``n`` crops of ``size x size`` at random places; fresh noise for clean."""
        areas = np.array([img.size for img in clean], dtype=float)
        which = rng.choice(len(clean), n, p=areas / areas.sum())
        X = np.empty((n, size, size))
        Y = np.empty((n, size, size))
        for k, i in enumerate(which):
            H, W = clean[i].shape
            a, b = rng.randint(H - size + 1), rng.randint(W - size + 1)
            Y[k] = clean[i][a : a + size, b : b + size]
            if noisy is None:
                X[k] = Y[k] + self.noise_std * rng.standard_normal((size, size))
            else:
                X[k] = noisy[i][a : a + size, b : b + size]
        return X, Y

    def _training_images(self, X, y, size):
        """Validated clean images and, for pairs, the noisy ones (else None)."""
        if y is None:
            return self._validate_images(X, "X", size), None
        clean = self._validate_images(y, "y", size)
        noisy = self._validate_images(X, "X", size)
        if [a.shape for a in noisy] != [a.shape for a in clean]:
            raise ValueError("X (noisy) and y (clean) images must have equal shapes.")
        return clean, noisy

    # -- fit ---------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the denoiser.

        Parameters
        ----------
        X : list of ndarray of shape (H, W) or (H, W, 3), or ndarray
            One image, or a stack ``(n, H, W)`` of gray images: clean images
            (``y=None``: Gaussian noise of ``noise_std`` is added,
            drawn afresh every ``redraw_every`` iterations), or noisy images
            paired with the clean images ``y``.  uint8 or float in [0, 1];
            colour images are trained on through their luminance.
        y : same as X, default=None
            Clean images matching ``X`` (same shapes).

        Returns
        -------
        self : ImageDenoiser
        """
        reweighted = self._map().penalty.reweighted
        if self.per_stage and not (reweighted and self.structure == "convolutional"):
            raise ValueError(
                'per_stage=True needs a reweighted penalty ("log", "shaped_log", '
                '"shifted_log" or "blended_log") and structure="convolutional": only '
                "reweighted stages differ."
            )
        if self.structure == "patch" and self.n_refine:
            raise ValueError('n_refine > 0 needs structure="convolutional".')
        if self.structure == "patch" and (self._given_init() is not None or reweighted):
            raise ValueError(
                'init filters and reweighted penalties ("log", "shaped_log", '
                '"shifted_log", "blended_log") need structure="convolutional"; '
                'the patch model takes penalty "l1" or "huber".'
            )
        p = self._patch_size()
        size = self.crop_size if self.structure == "convolutional" else p
        clean, noisy = self._training_images(X, y, size)
        self.noise_std_ = float(self.noise_std)
        if noisy is not None:
            diff = np.concatenate(
                [(a - b).ravel() for a, b in zip(noisy, clean, strict=True)]
            )
            self.noise_std_ = float(np.sqrt(np.mean(diff**2)))
        rng = check_random_state(self.random_state)
        if self.structure == "convolutional":
            self._fit_convolutional(clean, noisy, p, rng)
        else:
            self._fit_patch(clean, noisy, p, rng)
        if self.nonlocal_blend:
            self._fit_nonlocal(clean, noisy, rng)
        elif hasattr(self, "nonlocal_"):  # of an earlier fit
            del self.nonlocal_
        return self

    def _fit_nonlocal(self, clean, noisy, rng, sigma=None):
        """Fit :attr:`nonlocal_` on the model's outputs of the training images.

        ``noisy=None``: noise of std ``sigma`` (default ``noise_std_``) is
        drawn.  The images are seen as :meth:`denoise` sees images of noise
        ``sigma`` (:meth:`_as_seen`): at the trained level, unchanged unless
        an image's median lies outside ``[0, 1]``.
        """
        sigma = self.noise_std_ if sigma is None else sigma
        if noisy is None:
            noisy = [c + sigma * rng.standard_normal(c.shape) for c in clean]
        clean, noisy, _ = zip(*self._as_seen(clean, noisy, sigma), strict=True)
        pilots = [self._denoise_once(z[None])[0] for z in noisy]
        self.nonlocal_ = fit_nonlocal_blend(
            pilots, noisy, clean, self.noise_std_, n_threads=workers(self.n_jobs)[0]
        )

    def _as_seen(self, clean, noisy, sigma):
        """Image pairs of noise ``sigma`` as :meth:`denoise` gives them to the model.

        Per pair ``(a c + b, a x + b, (a, b))``: ``a = noise_std_ / sigma``
        and ``b`` the shift of the median of ``a x`` into ``[0, 1]``.
        """
        a = self.noise_std_ / sigma
        seen = []
        for c, x in zip(clean, noisy, strict=True):
            b = median_shift(a * x)
            seen.append((a * c + b, a * x + b, (a, b)))
        return seen

    def _map(self):
        """The unrolled map of the convolutional model (operator set per shape)."""
        penalty = make_penalty(self.penalty, huber_eps=self.huber_eps)
        return UnrolledMap(
            self.n_layers,
            self.unroll,
            penalty=penalty,
            steps=AcceleratedSteps(),
            n_stages=self.n_stages if penalty.reweighted else 1,
            per_stage=self.per_stage,
            refinement=Refinement(self.n_refine) if self.n_refine else None,
        )

    def _params(self):
        """The fitted model as the parameters of :meth:`_map`."""
        names = self._map().param_names[1:]
        return {"K": self.components_} | {n: getattr(self, f"{n}_") for n in names}

    def _fit_convolutional(self, clean, noisy, p, rng):
        umap = self._map()
        # A fixed held-out draw (other crops, other noise) to monitor.
        X_val, Y_val = self._draw(clean, noisy, self.crop_size, self.n_crops, rng)

        def draw():
            X, Y = self._draw(clean, noisy, self.crop_size, self.n_crops, rng)
            return pad_images(X, p), pad_images(Y, p)

        X, Y = draw()
        start_params, self.init_weight_ = self._start(umap, X, Y, rng)
        # K relative to the tuned weight, the penalty's positive parameters by log.
        vector = ParameterVector.from_params(
            start_params, umap.penalty.positive_params, {"K": self.init_weight_}
        )
        v = vector.pack(start_params)

        def val_psnr(v):
            out = denoise_images(umap, vector.unpack(v), X_val, n_jobs=self.n_jobs)
            return -10.0 * np.log10(np.mean((out - Y_val) ** 2))

        tracker = BestTracker()
        self.loss_curve_ = [_crop_loss(umap, start_params, X, Y, self.n_jobs)]
        self.validation_psnr_ = [val_psnr(v)]
        tracker.update(-self.validation_psnr_[0], v)
        self.n_iter_ = 0
        start = time.perf_counter()
        self._report(0, start)
        with StopKeepingBest(lambda: f"after {self.n_iter_} iterations"):
            for r in range(math.ceil(self.max_iter / self.redraw_every)):
                if r > 0:
                    X, Y = draw()
                loss_grad = functools.partial(
                    images_loss_grad,
                    umap,
                    noisy=X,
                    clean=Y,
                    border=p - 1,
                    n_jobs=self.n_jobs,
                )
                iters = min(self.redraw_every, self.max_iter - self.n_iter_)
                result = lbfgs(_objective(vector, loss_grad), v, iters)
                v = result.x
                self.n_iter_ += int(result.nit)
                self.loss_curve_.append(float(result.fun))
                self.validation_psnr_.append(val_psnr(v))
                tracker.update(-self.validation_psnr_[-1], v)
                self._report(r + 1, start)
        best = vector.unpack(tracker.best_params)
        self.components_ = best.pop("K")
        for name in _PARAM_ATTRIBUTES:  # from an earlier fit's penalty or steps
            if hasattr(self, name):
                delattr(self, name)
        for name, value in best.items():
            setattr(self, f"{name}_", value)

    def _start(self, umap, X, Y, rng):
        """The tuned initial parameters of ``umap`` on padded crops, and the weight.

        The model is tuned shared (:meth:`_tune_initial`); with per-stage
        parameters every stage starts from it, refinement steps as the
        identity.
        """
        D, center = self._initial_filters(self._patch_size(), rng)
        shared = dataclasses.replace(umap, per_stage=False, refinement=None)
        initial, u = self._tune_initial(shared, D, center, X, Y)
        params = initial(u)
        if umap.per_stage:
            params = {k: np.stack([v] * umap.n_stages) for k, v in params.items()}
        if umap.refinement is not None:  # the identity: tuned without
            n = D.shape[1]
            params |= umap.refinement.initial_params(n - 1, n)
        return params, float(np.exp(u[0]))

    def _tune_initial(self, umap, D, center, X, Y):
        """Tune the initial model on the crops ``X``, ``Y``.

        The weight of the whole initial operator is tuned in 1-D; a penalty
        with positive parameters (one per filter, scales of its responses)
        starts them at the root mean square response of their filter on the
        clean crops, so that ``log(param / (weight rms))`` is of order 1 for
        every filter however small, and tunes one common factor per parameter
        with the weight in a simplex search from there; its other parameters
        start where the penalty says (``initial_param``).  Returns
        ``initial(u)``, the parameters at ``u = (log weight, log
        factors...)``, and the tuned ``u``.
        """
        penalty = umap.penalty
        names = penalty.positive_params
        rms = _response_rms(D, Y) if names else None
        fixed = {
            n: penalty.initial_param(n, (len(D),))
            for n in penalty.param_names
            if n not in names
        }

        def initial(u):
            weight = np.exp(u[0])
            factors = dict(zip(names, np.exp(u[1:]), strict=True))
            scaled = {n: weight * f * rms for n, f in factors.items()}
            return {"K": weight * D} | scaled | fixed

        def loss_at(u):
            return _crop_loss(umap, initial(u), X, Y, self.n_jobs)

        zeros = [0.0] * len(names)
        t = search_log_scale(lambda t: loss_at([t, *zeros]), center, 4.0, 2.0)
        u = np.array([t, *zeros])
        if names:
            simplex = [u] + [
                u + step * e
                for step, e in zip(
                    [0.5] + [1.0] * len(names), np.eye(len(u)), strict=True
                )
            ]
            u = minimize(
                loss_at,
                u,
                method="Nelder-Mead",
                options={
                    "initial_simplex": simplex,
                    "xatol": 0.02,
                    "fatol": 0.0,
                    "maxfev": 40,
                },
            ).x
        return initial, u

    def _report(self, r, start):
        if self.verbose:
            print(
                f"draw {r}: loss = {self.loss_curve_[-1]:.6g}, validation PSNR = "
                f"{self.validation_psnr_[-1]:.2f} dB "
                f"({time.perf_counter() - start:.1f} s)",
                flush=True,
            )

    def _fit_patch(self, clean, noisy, p, rng):
        est = AnalysisOperatorLearner(
            self.n_filters,
            n_layers=self.n_layers,
            unroll=self.unroll,
            penalty=self.penalty,
            huber_eps=self.huber_eps,
            warm_start=True,
            n_jobs=self.n_jobs,
            random_state=rng,
        )
        self.loss_curve_, self.n_iter_ = [], 0
        n_rounds = math.ceil(self.max_iter / self.redraw_every)
        for _ in range(n_rounds):
            X, Y = self._draw(clean, noisy, p, self.max_patches, rng)
            est.set_params(
                max_iter=min(self.redraw_every, self.max_iter - self.n_iter_)
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning per round
                est.fit(X.reshape(len(X), -1), Y.reshape(len(Y), -1))
            self.n_iter_ += est.n_iter_
            self.loss_curve_.append(est.best_loss_)
            if self.verbose:
                print(f"patch draw: loss = {est.best_loss_:.6g}", flush=True)
        self.patch_estimator_ = est

    # -- denoise -----------------------------------------------------------
    def _denoise_gray(self, images):
        """Denoise a stack ``(n, H, W)`` of gray images at the trained level."""
        out = self_ensemble(self._denoise_once, images, self.self_ensemble)
        if not self.nonlocal_blend:
            return out
        if not hasattr(self, "nonlocal_"):
            raise ValueError(
                "nonlocal_blend=True, but this denoiser was fitted without it: fit "
                "it again with nonlocal_blend=True."
            )
        n_threads = workers(self.n_jobs)[0]
        blended = [
            self.nonlocal_.apply(u, x, self.noise_std_, n_threads)
            for u, x in zip(out, images, strict=True)
        ]
        return np.stack(blended).astype(out.dtype)

    def _denoise_once(self, images):
        if self.structure == "convolutional":
            # In float32: on Set12 the shipped models (with their refinement
            # steps: four images at sigma 5/15/25/50) give the same PSNR to
            # four decimals, about 2x faster on one thread
            # (benchmarks/bench_float32_denoise.py); the images are scaled to
            # the trained noise level, near [0, 1].
            params = {k: v.astype(np.float32) for k, v in self._params().items()}
            out = denoise_images(
                self._map(), params, images.astype(np.float32), n_jobs=self.n_jobs
            )
            return out.astype(images.dtype)
        return np.stack([_patch_denoise(self.patch_estimator_, im) for im in images])

    def denoise(self, image, sigma=None, *, channel_axis=None):
        """Denoise one image, a colour image or a stack of gray images.

        Parameters
        ----------
        image : ndarray of shape (H, W), (N, H, W) or with a channel axis
            Any real dtype (uint8, uint16, signed integers, floats) and range.
            2-D: a gray image; 3-D with ``channel_axis=None``: a stack of
            gray images, denoised one by one; 3-D with ``channel_axis``: a
            colour image.
        sigma : float, default=None
            Noise standard deviation in the image's units: e.g. 25 for uint8,
            6400 for uint16, 25/255 for a float image in ``[0, 1]``.
            ``None``: the level the model was trained for, relative to the
            image's range (the dtype's range for integers; 1 for floats within
            ``[-1, 2]`` but for at most a thousandth of them, else max - min).
            Every plane ``x`` is denoised as ``(D(a x + b) - b) / a`` with
            ``a = noise_std_ / sigma``, so that its noise has the trained
            level; ``b`` is 0 unless the plane's median ``m`` has ``a m``
            outside ``[0, 1]``, where the training images lie: then ``b``
            moves it to the nearest end.  For the
            converged l1 model, ``a`` is exactly scaling the weight of ``K``
            linearly with ``sigma``; for the log penalty ``eps`` scales too.
        channel_axis : int or None, default=None
            Axis of the channels of a 3-D colour image, as in scikit-image
            (e.g. ``-1`` for ``(H, W, 3)``).  3 channels: RGB, denoised per
            ``color``; 4: RGBA and 2: gray + alpha, the alpha channel is
            returned untouched; any other number: channels denoised
            independently.

        Returns
        -------
        ndarray of the input's shape and dtype
            Integers are rounded and clipped to their dtype's range; float
            output is clipped to ``[0, 1]`` if the input lay in ``[0, 1]``,
            else not clipped.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_ergo._pretrained import pretrained_denoiser
        >>> den = pretrained_denoiser(25)
        >>> rng = np.random.default_rng(0)
        >>> levels = rng.integers(10_000, 50_000, size=(4, 4))
        >>> clean = np.kron(levels, np.ones((16, 16)))
        >>> noisy = np.round(clean + 6400 * rng.standard_normal(clean.shape))
        >>> noisy = np.clip(noisy, 0, 65535).astype(np.uint16)
        >>> out = den.denoise(noisy, sigma=6400)
        >>> out.dtype
        dtype('uint16')
        >>> bool(np.std(out - clean) < np.std(noisy - clean) / 2)
        True
        """
        check_is_fitted(self)
        self._validate_params()  # self_ensemble and n_jobs may be set after fit
        planes = as_planes(image, channel_axis)
        p = self._patch_size()
        shape = planes.data.shape[1:] if planes.kind == "stack" else planes.data.shape
        if min(shape[:2]) < p:
            hint = ""
            if planes.kind == "stack" and shape[1] in (3, 4):
                hint = " (for an RGB image pass channel_axis=-1)"
            raise ValueError(
                f"image has shape {np.shape(image)}; it must be at least {p}x{p} "
                f"pixels{hint}."
            )
        if sigma is None:
            sigma = self.noise_std_ * planes.data_range()
        sigma = float(sigma)
        if not (np.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}.")
        out = planes.denoise(self._denoise_gray, sigma, self.noise_std_, self.color)
        return planes.restore(out, image)

    def transform(self, X):
        """Denoise a list of gray images (or an ``(n, H, W)`` stack) at the trained
        level."""
        if isinstance(X, np.ndarray) and X.ndim == 3:
            return self.denoise(X)
        return [self.denoise(image) for image in X]


def _response_rms(D, images):
    """Root mean square response of every filter of ``D`` on ``(n, H, W)`` images."""
    n, H, W = images.shape
    op = ConvolutionalOperator(D, (H, W), int(round(np.sqrt(D.shape[1]))))
    z = op.apply(images.reshape(n, H * W)).reshape(-1, len(D))
    return np.sqrt(np.mean(z**2, axis=0))


def _objective(vector, loss_grad):
    """``v -> (loss, d loss / dv)`` for L-BFGS from ``loss_grad(params)``."""

    def f(v):
        params = vector.unpack(v)
        loss, grads = loss_grad(params)
        if not np.isfinite(loss):  # lets the line search backtrack
            return np.inf, np.zeros_like(v)
        return loss, vector.chain(grads, params)

    return f


def _crop_loss(umap, params, X, Y, n_jobs):
    """``(1 / N) sum_i ||x^_i - x_i||^2 / 2`` on crops ``X``, ``Y`` padded by ``p - 1``.

    Over the crops' own pixels, as :func:`images_loss_grad` with the padding
    as ``border``.
    """
    w = patch_size_of(params["K"]) - 1
    _, H, W = Y.shape
    out = denoise_images(umap, params, X, pad=False, n_jobs=n_jobs)
    return 0.5 * float(np.sum((out - Y)[:, w : H - w, w : W - w] ** 2)) / len(X)


def _patch_denoise(est, image):
    """Denoise every ``_PATCH_STRIDE``-th overlapping patch and average overlaps."""
    p = int(round(np.sqrt(est.n_features_in_)))
    H, W = image.shape
    rows = np.unique(np.r_[np.arange(0, H - p + 1, _PATCH_STRIDE), H - p])
    cols = np.unique(np.r_[np.arange(0, W - p + 1, _PATCH_STRIDE), W - p])
    windows = np.lib.stride_tricks.sliding_window_view(image, (p, p))
    patches = windows[np.ix_(rows, cols)].reshape(-1, p * p)
    denoised = est.predict(patches).reshape(len(rows), len(cols), p, p)
    out = np.zeros_like(image)
    count = np.zeros_like(image)
    for a, i in enumerate(rows):
        for b, j in enumerate(cols):
            out[i : i + p, j : j + p] += denoised[a, b]
            count[i : i + p, j : j + p] += 1.0
    return out / count
