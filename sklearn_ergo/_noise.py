"""Blind noise-level estimation: robust median of the finest wavelet details.

Donoho's estimate (Donoho and Johnstone, "Ideal spatial adaptation by wavelet
shrinkage", Biometrika 1994): in the finest diagonal detail band of an
orthonormal wavelet transform a natural image has few large coefficients
(edges, texture) and i.i.d. Gaussian noise of deviation ``sigma`` stays i.i.d.
with the same deviation, so ``median(|d|) / 0.6745`` (0.6745 is the median
of ``|N(0, 1)|``) estimates ``sigma``.  At low noise the image's texture
still inflates it (+25 % on Set12 at sigma = 5/255).  Because the transform
is orthonormal, the noise of one coefficient is independent of that of all
the others: choosing coefficients by the energy of their *neighbours* (all
three finest detail bands around them, the coefficient itself left out)
leaves the noise distribution of the chosen ones unchanged but avoids edges
and texture.  The median is taken over the quarter of the coefficients in
the quietest neighbourhoods (quarter and 5x5 neighbourhood chosen on Set12
by ``benchmarks/bench_blind.py``).  The Daubechies filters are computed here
with NumPy (no PyWavelets at run time).
"""

import math
from numbers import Integral

import numpy as np
from scipy.ndimage import uniform_filter
from sklearn.utils._param_validation import validate_params

from ._image_data import as_planes

# Median of |N(0, 1)|: the MAD of Gaussian noise is 0.6745 sigma.
_MAD_TO_SIGMA = 1 / 0.6744897501960817
# Daubechies wavelet with this many vanishing moments (db2, as
# skimage.restoration.estimate_sigma).
_N_MOMENTS = 2


def daubechies_highpass(n_moments):
    """High-pass (wavelet) filter of the Daubechies wavelet ``db<n_moments>``.

    Spectral factorisation of Daubechies' polynomial: the low-pass filter is
    ``(1 + z^-1)^N Q(z)`` with the roots of ``Q`` chosen inside the unit
    circle (minimum phase); the high-pass filter is its quadrature mirror.
    Unit l2 norm, so white noise keeps its deviation.
    """
    N = int(n_moments)
    # P(y) = sum_k C(N-1+k, k) y^k with y = (2 - z - 1/z) / 4; its roots y_i
    # give the pairs of roots z, 1/z of z^2 - (2 - 4 y_i) z + 1.
    coeffs = [math.comb(N - 1 + k, k) for k in range(N)]
    roots = []
    for y in np.roots(coeffs[::-1]) if N > 1 else []:
        pair = np.roots([1.0, -(2.0 - 4.0 * y), 1.0])
        roots.append(pair[np.argmin(np.abs(pair))])
    low = np.real(np.poly(roots + [-1.0] * N))
    low *= np.sqrt(2.0) / low.sum()
    # As PyWavelets' ``dec_hi``: g[k] = (-1)^(k+1) h[L-1-k], h = low[::-1].
    return low * (-1.0) ** np.arange(1, len(low) + 1)


_HIGHPASS = daubechies_highpass(_N_MOMENTS)
# Quadrature mirror: the low-pass filter from the high-pass one.
_LOWPASS = _HIGHPASS[::-1] * (-1.0) ** np.arange(len(_HIGHPASS))
# Fraction of the coefficients kept, and the side of their neighbourhoods.
_QUIET_FRACTION = 0.25
_NEIGHBOURHOOD = 5


def _analysis(a, filt, axis):
    """Filter along ``axis`` and keep every other sample, 'valid' part only.

    Only coefficients whose filter support lies inside the image are kept,
    so the estimate does not depend on a boundary extension.
    """
    windows = np.lib.stride_tricks.sliding_window_view(a, len(filt), axis=axis)
    windows = windows[::2] if axis == 0 else windows[:, ::2]
    return windows @ filt[::-1]


def _finest_details(plane):
    """The three finest detail bands (LH, HL, HH) of a 2-D plane."""
    low, high = _analysis(plane, _LOWPASS, 0), _analysis(plane, _HIGHPASS, 0)
    return (
        _analysis(low, _HIGHPASS, 1),
        _analysis(high, _LOWPASS, 1),
        _analysis(high, _HIGHPASS, 1),
    )


def _plane_sigma(plane):
    size = len(_HIGHPASS) + 2 * _NEIGHBOURHOOD
    if min(plane.shape) < size:
        raise ValueError(
            f"image of shape {plane.shape} is too small to estimate its noise "
            f"level; it must be at least {size}x{size} pixels."
        )
    LH, HL, HH = _finest_details(plane)
    energy = LH**2 + HL**2 + HH**2
    k = _NEIGHBOURHOOD
    around = uniform_filter(energy, k, mode="nearest") * k * k - HH**2
    # Saturated pixels (clipped at the plane's minimum or maximum, e.g. 0 and
    # 255) carry less noise and look quiet: leave out every coefficient whose
    # support holds one.  A float image with unclipped noise has one pixel
    # at each extreme.
    extreme = ((plane == plane.min()) | (plane == plane.max())).astype(float)
    ones = np.ones(len(_HIGHPASS))
    valid = _analysis(_analysis(extreme, ones, 0), ones, 1) == 0
    if not valid.any():
        valid[:] = True
    quiet = around <= np.quantile(around[valid], _QUIET_FRACTION)
    return float(np.median(np.abs(HH[quiet & valid])) * _MAD_TO_SIGMA)


@validate_params(
    {"image": ["array-like"], "channel_axis": [Integral, None]},
    prefer_skip_nested_validation=True,
)
def estimate_sigma(image, *, channel_axis=None):
    """Estimate the standard deviation of additive Gaussian noise in an image.

    The robust wavelet estimate of Donoho and Johnstone,
    ``median(|d|) / 0.6745`` over the finest diagonal detail coefficients
    ``d`` of the Daubechies wavelet db2 (as in
    :func:`skimage.restoration.estimate_sigma`), restricted to the quarter of
    the coefficients whose neighbours have the least energy: there the image
    adds least to the noise, which is independent of the neighbours'.  It
    still overestimates the noise of textured images at low noise levels
    (see the accuracy table of the README, measured by
    ``python benchmarks/bench_blind.py --data DIR``).  It assumes i.i.d.
    Gaussian noise; pixels at the image's minimum or maximum (clipped) are
    left out.

    Parameters
    ----------
    image : ndarray of shape (H, W), (N, H, W) or with a channel axis
        Gray image, stack of gray images (3-D with ``channel_axis=None``),
        or colour image with its channels along ``channel_axis``; any real
        dtype and range.
    channel_axis : int or None, default=None
        Axis of the colour channels of a 3-D image (e.g. ``-1`` for
        ``(H, W, 3)``); ``None``: no channel axis.  With 4 (RGBA) or 2 (gray
        + alpha) channels the last one is alpha and is ignored.

    Returns
    -------
    sigma : float or ndarray of shape (N,)
        The noise level in the image's units (0-255 units for uint8), the
        mean over the colour channels for a colour image; one per image for a
        stack.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ergo import estimate_sigma
    >>> rng = np.random.default_rng(0)
    >>> clean = np.kron(rng.uniform(size=(8, 8)), np.ones((32, 32)))
    >>> noisy = clean + 0.1 * rng.standard_normal(clean.shape)
    >>> round(estimate_sigma(noisy), 2)
    0.1
    """
    planes = as_planes(image, channel_axis)
    sigmas = np.array(
        [
            np.mean([_plane_sigma(p) for p in colour])
            for colour in planes.colour_planes()
        ]
    )
    return float(sigmas[0]) if planes.kind != "stack" else sigmas
