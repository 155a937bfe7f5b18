"""Training data: noisy/clean patch pairs from images that ship with scikit-learn.

The images are read by :func:`sklearn.datasets.load_sample_image`, which needs
Pillow (``pip install "sklearn-ergo[demo]"``); nothing is downloaded.
"""

import numpy as np
from sklearn.feature_extraction.image import extract_patches_2d
from sklearn.utils import check_random_state


def load_gray_image(name="china.jpg"):
    """A bundled scikit-learn sample image as grayscale float64 in ``[0, 1]``."""
    from sklearn.datasets import load_sample_image

    rgb = load_sample_image(name).astype(np.float64) / 255.0
    # ITU-R BT.601 luma, as in skimage.color.rgb2gray.
    return rgb @ np.array([0.299, 0.587, 0.114])


def make_noisy_patches(
    image, n_patches, *, patch_size=8, noise_std=0.1, random_state=None
):
    """Random ``patch_size x patch_size`` patches of an image and noisy copies.

    Parameters
    ----------
    image : ndarray of shape (height, width) or str
        A grayscale image, or the name of a scikit-learn sample image.
    n_patches : int
        Number of patches.
    patch_size : int, default=8
    noise_std : float, default=0.1
        Standard deviation of the additive Gaussian noise (image units).
    random_state : int, RandomState instance or None
        Controls the patch positions and the noise.

    Returns
    -------
    X_noisy, X_clean : ndarray of shape (n_patches, patch_size ** 2)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_ergo.datasets import make_noisy_patches
    >>> image = np.tile(np.linspace(0, 1, 32), (32, 1))
    >>> X_noisy, X_clean = make_noisy_patches(image, 100, random_state=0)
    >>> X_noisy.shape
    (100, 64)
    """
    rng = check_random_state(random_state)
    if isinstance(image, str):
        image = load_gray_image(image)
    X_clean = extract_patches_2d(
        image, (patch_size, patch_size), max_patches=n_patches, random_state=rng
    ).reshape(n_patches, -1)
    X_noisy = X_clean + noise_std * rng.standard_normal(X_clean.shape)
    return X_noisy, X_clean


def psnr(X_hat, X_clean, data_range=1.0):
    """Peak signal-to-noise ratio in dB over all entries."""
    mse = np.mean((np.asarray(X_hat, dtype=np.float64) - X_clean) ** 2)
    return 10.0 * np.log10(data_range**2 / mse)
