"""Training data: image folders, and noisy/clean patches of scikit-learn's images.

The sample images are read by :func:`sklearn.datasets.load_sample_image` and
image folders by Pillow (``pip install "sklearn-ergo[image]"``); nothing is
downloaded.
"""

import pathlib

import numpy as np
from sklearn.feature_extraction.image import extract_patches_2d
from sklearn.utils import check_random_state

from ._image_io import ImageFileError, pillow, read_image

#: File name endings read by :func:`load_image_folder` (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# ITU-R BT.601 luma, as in skimage.color.rgb2gray and Pillow's "L" mode.
_LUMA = np.array([0.299, 0.587, 0.114])


def load_image_folder(path):
    """The images of a folder as gray float64 arrays in ``[0, 1]``, sorted by name.

    Every file whose name ends in one of :data:`IMAGE_SUFFIXES` is read at its
    own bit depth (as the ``denoise`` command reads it) and divided by its
    dtype's maximum: 255 for 8-bit files, 65535 for 16-bit ones; float TIFFs
    must already lie in ``[0, 1]``.  Colour images become gray by the ITU-R
    601-2 luma ``0.299 R + 0.587 G + 0.114 B``; an alpha channel is dropped.
    Other files (a ``README``, hidden files) are ignored.  This is how the
    standard gray denoising sets (Train400, Set12, BSD68) are read.

    Parameters
    ----------
    path : str or path-like
        A folder.

    Returns
    -------
    images : list of ndarray of shape (H, W)
        One array per image file, in the order of the sorted file names.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not an existing folder.
    ValueError
        If the folder holds no image file, or a file cannot be read or has
        no ``[0, 1]`` scale (wider integers, floats outside it); the message
        names the file.
    ImportError
        If Pillow is not installed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> from sklearn_ergo.datasets import load_image_folder
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name, value in [("b.png", 255), ("a.png", 51)]:
    ...     Image.fromarray(np.full((4, 6), value, np.uint8)).save(folder / name)
    >>> images = load_image_folder(folder)
    >>> [(im.shape, float(im[0, 0])) for im in images]
    [((4, 6), 0.2), ((4, 6), 1.0)]
    """
    try:
        pillow()
    except ImageFileError as exc:
        raise ImportError(
            'load_image_folder needs Pillow: pip install "sklearn-ergo[image]"'
        ) from exc
    folder = pathlib.Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a folder.")
    files = sorted(
        f
        for f in folder.iterdir()
        if f.suffix.lower() in IMAGE_SUFFIXES
        and not f.name.startswith(".")
        and f.is_file()
    )
    if not files:
        raise ValueError(
            f"{str(folder)!r} holds no image file (names ending in "
            f"{', '.join(IMAGE_SUFFIXES)})."
        )
    return [_gray_unit(read_image(f), f) for f in files]


def _gray_unit(image, name):
    """An image of :func:`read_image` as gray float64 in ``[0, 1]``."""
    if image.dtype in (np.uint8, np.uint16):
        scaled = image / float(np.iinfo(image.dtype).max)
    elif image.dtype == np.float32 and image.min() >= 0 and image.max() <= 1:
        scaled = image.astype(np.float64)
    else:
        raise ValueError(
            f"cannot read image {str(name)!r}: {image.dtype} values in "
            f"[{image.min()}, {image.max()}] have no [0, 1] scale"
        )
    if scaled.ndim == 2:
        return scaled
    if scaled.shape[2] == 2:  # gray + alpha
        return scaled[..., 0]
    return scaled[..., :3] @ _LUMA


def load_gray_image(name="china.jpg"):
    """A bundled scikit-learn sample image as grayscale float64 in ``[0, 1]``."""
    from sklearn.datasets import load_sample_image

    rgb = load_sample_image(name).astype(np.float64) / 255.0
    return rgb @ _LUMA


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
