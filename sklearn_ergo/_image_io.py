"""Image files as arrays of their own bit depth, with Pillow.

8-bit files give uint8 arrays, 16-bit gray files (Pillow modes ``I;16`` and
``I``) uint16, 32-bit float TIFFs float32; colour files ``(H, W, 3)`` RGB or
``(H, W, 4)`` RGBA, gray with transparency ``(H, W, 2)``.  Writing is the
inverse, so a 16-bit file stays 16-bit.
"""

import os
import pathlib

import numpy as np

# PNG header: the bit depth and the colour type of the image are bytes 24, 25.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageFileError(ValueError):
    """An image file that cannot be read or written (one-line message)."""


def pillow():
    """The ``PIL.Image`` module, or an error saying how to install it."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImageFileError(
            'reading and writing images needs Pillow: pip install "sklearn-ergo[image]"'
        ) from exc
    return Image


def image_extensions():
    """File name extensions (lower case, with the dot) Pillow can open."""
    Image = pillow()
    Image.init()
    return {
        ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
    }


def _check_png_depth(path):
    # Pillow reads 16-bit colour PNGs as 8-bit RGB(A), silently dropping the
    # low bits: refuse them instead.
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return  # Pillow reports the error
    if head[:8] == _PNG_SIGNATURE and len(head) == 26:
        depth, colour_type = head[24], head[25]
        if depth == 16 and colour_type in (2, 4, 6):
            raise ImageFileError(
                f"cannot read image {str(path)!r}: a 16-bit colour PNG, which "
                "Pillow would read as 8 bits (convert it to 16-bit TIFF per "
                "channel, or to 8 bits)"
            )


def read_image(path):
    """Read an image file as an array of its own bit depth.

    Returns
    -------
    ndarray
        ``(H, W)`` gray, ``(H, W, 2)`` gray + alpha, ``(H, W, 3)`` RGB or
        ``(H, W, 4)`` RGBA; uint8 for 8-bit files, uint16 for 16-bit gray
        files (and 32-bit integer ones whose values fit), int32 otherwise,
        float32 for float TIFFs.

    Raises
    ------
    ImageFileError
        If the file cannot be read, or only with a loss of bits.
    """
    Image = pillow()
    _check_png_depth(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode.startswith("I;16"):
                return np.asarray(img).astype(np.uint16)
            if mode == "I":
                arr = np.asarray(img)
                if arr.size and arr.min() >= 0 and arr.max() <= 65535:
                    return arr.astype(np.uint16)
                return arr.astype(np.int32)
            if mode == "F":
                return np.asarray(img, dtype=np.float32)
            if mode in ("1", "L"):
                return np.asarray(img.convert("L"))
            if mode in ("LA", "La", "PA"):
                target = "LA" if mode != "PA" else "RGBA"
                return np.asarray(img.convert(target))
            has_alpha = "A" in mode or "transparency" in img.info
            return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageFileError(f"cannot read image {str(path)!r}: {exc}") from exc


def write_image(path, array):
    """Write an array returned by :func:`read_image` (same dtype and layout).

    The file is written next to ``path`` and renamed into place: a failed
    write leaves no partial file.

    Raises
    ------
    ImageFileError
        If the format cannot hold the array (e.g. float32 as PNG) or the file
        cannot be written.
    """
    Image = pillow()
    path = pathlib.Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ImageFileError(
            f"cannot write image {str(path)!r}: unknown image extension {path.suffix!r}"
        )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format=fmt)
        os.replace(tmp, path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageFileError(
            f"cannot write image {str(path)!r} ({array.dtype}, shape "
            f"{array.shape}) as {fmt}: {exc}"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def channel_axis_of(array):
    """``channel_axis`` of an array from :func:`read_image`: None for gray."""
    return None if array.ndim == 2 else -1


def as_training_image(array):
    """An array from :func:`read_image` as float in ``[0, 1]``, gray or RGB.

    Integers are divided by their dtype's maximum; alpha is dropped.
    """
    if array.ndim == 3:
        array = array[:, :, 0] if array.shape[2] == 2 else array[:, :, :3]
    if np.issubdtype(array.dtype, np.integer):
        return array / float(np.iinfo(array.dtype).max)
    return array.astype(np.float64)
