"""A non-local blend after the model: what repeats elsewhere in the image.

The model's filters see 7x7 neighbourhoods; where an image repeats itself
(texture, flat regions), the copies of a patch elsewhere hold what it cannot
use.  The model's output ``u`` is the *pilot* of a pixelwise non-local means
(Buades et al.): for every pixel ``i`` and every ``j`` within ``search``
pixels, the weight ``w_ij = exp(-d_ij / (eta sigma)^2)``, ``d_ij`` the mean
squared difference of the pilot's ``patch x patch`` patches around ``i`` and
``j`` (``w_ii = 1``), averages the noisy image into ``y`` and the pilot into
``v``.  The output is

    u + a (y - u) + b (v - u)

with ``a``, ``b`` constant per bin of two features of each pixel: the log
of its total weight ``W_i = sum_j w_ij`` (how many copies it has) and the
log of the local energy of ``v - u`` (3x3 mean of its square, over
``sigma^2``).  The table is fitted by least squares on training images
(:func:`fit_nonlocal_blend`): a blend of zeros is the model itself.
``docs/math.md``, section 13.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter

from ._parallel import run_threads

#: The energy feature's floor, relative to sigma^2: flat pilots have
#: ``v = u`` up to rounding.
_ENERGY_FLOOR = 1e-6


def nonlocal_means(pilot, noisy, h, *, search=20, patch=5, n_threads=1):
    """Non-local means of ``noisy`` and of ``pilot``, weighted by ``pilot``.

    Parameters
    ----------
    pilot, noisy : ndarray of shape (H, W)
    h : float
        Weights ``exp(-d / h^2)``, ``d`` the mean squared difference of the
        pilot's patches.
    search : int
        Pixels ``j`` within ``search`` rows and columns of ``i``.
    patch : int
        Odd patch width.
    n_threads : int
        Threads, each on a band of rows (NumPy's loops release the GIL).

    Returns
    -------
    y, v, w : ndarray of shape (H, W), float32
        The means of ``noisy`` and ``pilot`` and the total weights.
    """
    if patch % 2 != 1:
        raise ValueError(f"patch must be odd, got {patch}.")
    H, W = pilot.shape
    m = search + patch // 2  # every pair and patch of the image lies inside
    u = np.pad(np.asarray(pilot, np.float32), m, mode="symmetric")
    x = np.pad(np.asarray(noisy, np.float32), m, mode="symmetric")
    out = np.empty((3, H, W), np.float32)
    n_bands = max(1, min(n_threads, H // max(search, 1)))
    edges = np.linspace(0, H, n_bands + 1).astype(int)
    bands = list(zip(edges[:-1], edges[1:], strict=True))

    def band(rows, scratch):
        a, b = rows
        # Rows a..b of the image and m rows of halo each side: every pair
        # (i, i + o) with i or i + o in the band lies within.
        sums = _band_sums(u[a : b + 2 * m], x[a : b + 2 * m], h, search, patch)
        out[:, a:b] = sums[:, m : m + b - a, m : m + W]

    run_threads(band, bands, n_threads)
    y, v, w = out
    y /= w
    v /= w
    return y, v, w


def _band_sums(u, x, h, search, patch):
    """Weighted sums of ``x`` and ``u`` and the weights, over the whole band.

    Each pair ``(i, i + o)`` shares one weight, so half the offsets are
    computed and each is added at both ends.  The band is flat: an offset is
    one shift of the raveled rows, and every pass runs over contiguous memory
    (2-D slices took three times as long per element).  A pair that wraps
    around a row's end has both ends within ``search + patch // 2`` of the
    band's edges, whose values are incomplete and discarded.
    """
    Hp, Wp = u.shape
    r = patch // 2
    m = search + r
    # The flat range from the first to the last complete pixel.
    lo, hi = m * Wp + m, (Hp - m) * Wp - m
    U, X = u.ravel(), x.ravel()
    sums = np.empty((3, U.size), np.float32)
    sx, su, sw = sums
    sx[...], su[...], sw[...] = X, U, 1.0  # the pixel itself, weight 1
    buf = np.empty_like(sums)
    scale = np.float32(-1.0 / (patch**2 * h**2))
    for dy in range(search + 1):
        for dx in range(-search, search + 1):
            if dy == 0 and dx <= 0:
                continue
            o = dy * Wp + dx
            # Pairs (i, i + o) with i in [a, b): all with an end in [lo, hi).
            a, b = lo - o, hi
            # Squared differences over the patches of those pairs.
            c = a - r * Wp - r
            sq = buf[0, : b - c + r * Wp + r]
            np.subtract(U[c : c + sq.size], U[c + o : c + o + sq.size], out=sq)
            np.square(sq, out=sq)
            d = _box_sum(_box_sum(sq, patch, Wp, buf[1]), patch, 1, buf[2])
            d *= scale
            np.exp(d, out=d)
            t = buf[0, : b - a]
            for s, z in ((sx, X), (su, U)):
                np.multiply(d, z[a + o : b + o], out=t)
                s[a:b] += t
                np.multiply(d, z[a:b], out=t)
                s[a + o : b + o] += t
            sw[a:b] += d
            sw[a + o : b + o] += d
    return sums.reshape(3, Hp, Wp)


def _box_sum(a, width, step, out):
    """``sum_k a[i + k step]`` over ``k < width``, for every ``i`` it fits."""
    n = a.size - (width - 1) * step
    out = out[:n]
    if width == 1:
        out[...] = a[:n]
    else:
        np.add(a[:n], a[step : step + n], out=out)
    for k in range(2, width):
        out += a[k * step : k * step + n]
    return out


@dataclass(frozen=True)
class NonLocalBlend:
    """A fitted non-local blend (see the module docstring).

    Parameters
    ----------
    eta : float
        The weights' width ``h = eta sigma``.
    search, patch : int
        Of :func:`nonlocal_means`.
    weight_edges : ndarray of shape (n_weight_bins - 1,)
        Inner edges of the bins of ``log W``.
    energy_edges : ndarray of shape (n_energy_bins - 1,)
        Inner edges of the bins of the log energy of ``v - u``.
    coef : ndarray of shape (n_weight_bins, n_energy_bins, 2)
        ``(a, b)`` per bin.
    """

    eta: float
    search: int
    patch: int
    weight_edges: np.ndarray
    energy_edges: np.ndarray
    coef: np.ndarray

    def features(self, pilot, noisy, sigma, n_threads=1):
        """``(y - u, v - u)`` as columns, and each pixel's flat bin."""
        h = self.eta * sigma
        dy, dv, w = _differences(pilot, noisy, h, self.search, self.patch, n_threads)
        bins = _bins(self.weight_edges, self.energy_edges, *_keys(w, dv, sigma))
        return np.stack([dy.ravel(), dv.ravel()], axis=1), bins

    def apply(self, pilot, noisy, sigma, n_threads=1):
        """The blend of ``pilot`` (the model's output of ``noisy``), float32."""
        F, bins = self.features(pilot, noisy, sigma, n_threads)
        coef = self.coef.reshape(-1, 2).astype(np.float32)[bins]
        step = np.einsum("ij,ij->i", F, coef).reshape(np.shape(pilot))
        return np.asarray(pilot, np.float32) + step


def _differences(pilot, noisy, h, search, patch, n_threads):
    """``y - u``, ``v - u`` and ``W`` of :func:`nonlocal_means`, ``u`` the pilot."""
    y, v, w = nonlocal_means(
        pilot, noisy, h, search=search, patch=patch, n_threads=n_threads
    )
    u = np.asarray(pilot, np.float32)
    return y - u, v - u, w


def _keys(w, dv, sigma):
    """The two binned features, flat: ``log W`` and the log energy of ``v - u``."""
    energy = uniform_filter(dv * dv, 3) / np.float32(sigma**2) + _ENERGY_FLOOR
    return np.log(w).ravel(), np.log(energy).ravel()


def _bins(weight_edges, energy_edges, log_w, log_energy):
    i = np.searchsorted(weight_edges, log_w)
    j = np.searchsorted(energy_edges, log_energy)
    return i * (len(energy_edges) + 1) + j


def fit_nonlocal_blend(
    pilots,
    noisy,
    clean,
    sigma,
    *,
    eta=0.5,
    search=20,
    patch=5,
    n_weight_bins=16,
    n_energy_bins=8,
    n_threads=1,
):
    """Fit a :class:`NonLocalBlend` by least squares on images.

    Parameters
    ----------
    pilots, noisy, clean : sequences of ndarray of shape (H, W)
        The model's outputs, its inputs (noise of std ``sigma``) and the
        clean images.
    sigma : float
    eta, search, patch : of :class:`NonLocalBlend`.
    n_weight_bins, n_energy_bins : int
        Bins at quantiles of the features over the images.
    n_threads : int

    Returns
    -------
    NonLocalBlend
    """
    images = list(zip(pilots, noisy, clean, strict=True))
    if not images:
        raise ValueError("fit_nonlocal_blend needs at least one image.")
    features = []
    for u, x, _ in images:
        dy, dv, w = _differences(u, x, eta * sigma, search, patch, n_threads)
        features.append((dy, dv, *_keys(w, dv, sigma)))
    quantiles = [np.linspace(0, 1, n + 1)[1:-1] for n in (n_weight_bins, n_energy_bins)]
    weight_edges, energy_edges = (
        np.quantile(np.concatenate([f[k] for f in features]), q)
        for k, q in zip((2, 3), quantiles, strict=True)
    )
    n_bins = n_weight_bins * n_energy_bins
    A, B = np.zeros((n_bins, 2, 2)), np.zeros((n_bins, 2))
    for (u, _, c), (dy, dv, *keys) in zip(images, features, strict=True):
        F = np.stack([dy.ravel(), dv.ravel()], axis=1).astype(np.float64)
        r = (np.asarray(c, np.float64) - np.asarray(u, np.float32)).ravel()
        bins = _bins(weight_edges, energy_edges, *keys)
        for k, l in ((0, 0), (0, 1), (1, 1)):
            A[:, k, l] += np.bincount(bins, F[:, k] * F[:, l], minlength=n_bins)
        for k in (0, 1):
            B[:, k] += np.bincount(bins, F[:, k] * r, minlength=n_bins)
    A[:, 1, 0] = A[:, 0, 1]
    # A bin without pixels (or with y = v) gets a = b = 0: the model itself.
    ridge = 1e-9 * np.trace(A, axis1=1, axis2=2)[:, None, None] + math.ulp(1.0)
    coef = np.linalg.solve(A + ridge * np.eye(2), B[..., None])[..., 0]
    return NonLocalBlend(
        eta=float(eta),
        search=int(search),
        patch=int(patch),
        weight_edges=weight_edges,
        energy_edges=energy_edges,
        coef=coef.reshape(n_weight_bins, n_energy_bins, 2),
    )
